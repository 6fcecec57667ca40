#!/usr/bin/env bash
# SFT for every category under DATA_ROOT, in the original's layout (data/Amazon/train/<category>*11.csv,
# valid/, index/<category>.index.json, index/<category>.item.json, as convert_dataset.py writes it) or
# ours (DATA_ROOT/<category>/train.csv, valid.csv, index.json, item.json).
#   GPUs:  NPROC=8 BASE_MODEL=/models/Qwen2.5-1.5B bash sft.sh          (torchrun + DeepSpeed ZeRO-2)
#   CPU:   NPROC=2 BASE_MODEL=... bash sft.sh       (no GPU found, or CPU=1: torchrun with the gloo backend)
# Every variable below can be overridden from the environment; extra arguments go to sft.py
# (one that the script also sets replaces the script's value, e.g. bash sft.sh --output_dir DIR).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/dataset_files.sh

GPUS=$(gpu_count)
CPU=${CPU:-$([[ "$GPUS" -ge 1 ]] && echo 0 || echo 1)}
NPROC=${NPROC:-$([[ "$CPU" = 1 ]] && echo 2 || echo "$GPUS")}
BASE_MODEL=${BASE_MODEL:-models/SmolLM2-135M-Instruct}
DATA_ROOT=${DATA_ROOT:-data/Amazon}
CATEGORIES=${CATEGORIES:-$(dataset_categories "$DATA_ROOT")}
OUTPUT_ROOT=${OUTPUT_ROOT:-output/sft}
BATCH_SIZE=${BATCH_SIZE:-1024}
MICRO_BATCH_SIZE=${MICRO_BATCH_SIZE:-16}
NUM_EPOCHS=${NUM_EPOCHS:-10}
LEARNING_RATE=${LEARNING_RATE:-3e-4}
CUTOFF_LEN=${CUTOFF_LEN:-512}
FREEZE_LLM=${FREEZE_LLM:-False}
SEED=${SEED:-42}
WANDB_PROJECT=${WANDB_PROJECT:-}
PYTHON=${PYTHON:-python}
MASTER_PORT=${MASTER_PORT:-}  # empty: torchrun --standalone picks a free port
if [[ "$CPU" = 1 ]]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    DEEPSPEED=""
else
    DEEPSPEED=${DEEPSPEED-config/zero2_ds.json}  # ZeRO-2; set DEEPSPEED= to train with plain DDP
fi
RENDEZVOUS=(--standalone)
[[ -z "$MASTER_PORT" ]] || RENDEZVOUS=(--master_port "$MASTER_PORT")
if [[ -z "$CATEGORIES" ]]; then
    echo "Error: no category under DATA_ROOT=$DATA_ROOT (convert_dataset.py writes one); set DATA_ROOT or CATEGORIES" >&2
    exit 1
fi

for category in $CATEGORIES; do
    dataset_files "$DATA_ROOT" "$category" train eval index item
    echo "== SFT $category: $train_file / $eval_file, $NPROC process(es)"
    merge_flags \
        --base_model "$BASE_MODEL" \
        --train_file "$train_file" \
        --eval_file "$eval_file" \
        --output_dir "$OUTPUT_ROOT/$category" \
        --sid_index_path "$index_file" \
        --item_meta_path "$item_file" \
        --category "$category" \
        --batch_size "$BATCH_SIZE" \
        --micro_batch_size "$MICRO_BATCH_SIZE" \
        --num_epochs "$NUM_EPOCHS" \
        --learning_rate "$LEARNING_RATE" \
        --cutoff_len "$CUTOFF_LEN" \
        --freeze_LLM "$FREEZE_LLM" \
        --train_from_scratch False \
        --seed "$SEED" \
        --wandb_project "$WANDB_PROJECT" \
        --wandb_run_name "sft-$category" \
        --deepspeed "$DEEPSPEED" \
        -- "$@"
    "$PYTHON" -m torch.distributed.run "${RENDEZVOUS[@]}" --nproc_per_node "$NPROC" sft.py "${MERGED[@]}"
done
