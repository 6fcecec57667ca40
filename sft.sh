#!/usr/bin/env bash
# SFT for every category under DATA_ROOT (one folder per category holding train/valid CSVs,
# index.json and item.json, as data/ and rq/ write them).
#   GPUs:  NPROC=8 BASE_MODEL=/models/Qwen2.5-1.5B bash sft.sh
#   CPU:   CPU=1 NPROC=2 bash sft.sh        (torchrun with the gloo backend)
# Every variable below can be overridden from the environment; extra arguments go to sft.py.
set -euo pipefail
cd "$(dirname "$0")"

NPROC=${NPROC:-8}
BASE_MODEL=${BASE_MODEL:-models/SmolLM2-135M-Instruct}
DATA_ROOT=${DATA_ROOT:-data/processed}
CATEGORIES=${CATEGORIES:-$(ls "$DATA_ROOT")}
OUTPUT_ROOT=${OUTPUT_ROOT:-output/sft}
BATCH_SIZE=${BATCH_SIZE:-1024}
MICRO_BATCH_SIZE=${MICRO_BATCH_SIZE:-16}
NUM_EPOCHS=${NUM_EPOCHS:-10}
LEARNING_RATE=${LEARNING_RATE:-3e-4}
CUTOFF_LEN=${CUTOFF_LEN:-512}
FREEZE_LLM=${FREEZE_LLM:-False}
WANDB_PROJECT=${WANDB_PROJECT:-}
PYTHON=${PYTHON:-python}
MASTER_PORT=${MASTER_PORT:-29500}
if [ "${CPU:-0}" = 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    DEEPSPEED=""
else
    DEEPSPEED=${DEEPSPEED-config/zero2_ds.json}  # ZeRO-2; set DEEPSPEED= to train with plain DDP
fi

for category in $CATEGORIES; do
    dir="$DATA_ROOT/$category"
    train_file=$(ls "$dir"/*train*.csv | head -1)
    eval_file=$(ls "$dir"/*valid*.csv | head -1)
    echo "== SFT $category: $train_file / $eval_file"
    "$PYTHON" -m torch.distributed.run --nproc_per_node "$NPROC" --master_port "$MASTER_PORT" sft.py \
        --base_model "$BASE_MODEL" \
        --train_file "$train_file" \
        --eval_file "$eval_file" \
        --output_dir "$OUTPUT_ROOT/$category" \
        --sid_index_path "$dir/index.json" \
        --item_meta_path "$dir/item.json" \
        --category "$category" \
        --batch_size "$BATCH_SIZE" \
        --micro_batch_size "$MICRO_BATCH_SIZE" \
        --num_epochs "$NUM_EPOCHS" \
        --learning_rate "$LEARNING_RATE" \
        --cutoff_len "$CUTOFF_LEN" \
        --freeze_LLM "$FREEZE_LLM" \
        --wandb_project "$WANDB_PROJECT" \
        --wandb_run_name "sft-$category" \
        --deepspeed "$DEEPSPEED" \
        "$@"
done
