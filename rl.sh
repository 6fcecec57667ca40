#!/usr/bin/env bash
# RL (GRPO, ReReTrainer) for every category under DATA_ROOT, from the SFT checkpoints of sft.sh; data
# in the original's layout (data/Amazon/...) or ours (DATA_ROOT/<category>/...), as sft.sh.
#   GPUs:  NPROC=8 bash rl.sh              (accelerate + DeepSpeed ZeRO-2, config/zero2_opt.yaml)
#   CPU:   NPROC=2 bash rl.sh              (no GPU found, or CPU=1: torchrun, processes over gloo;
#                                          accelerate's own CPU launcher needs MPI, torchrun does not)
# Every variable below can be overridden from the environment; extra arguments go to rl.py
# (one that the script also sets replaces the script's value, e.g. bash rl.sh --output_dir DIR).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/dataset_files.sh

GPUS=$(gpu_count)
CPU=${CPU:-$([[ "$GPUS" -ge 1 ]] && echo 0 || echo 1)}
NPROC=${NPROC:-$([[ "$CPU" = 1 ]] && echo 2 || echo "$GPUS")}
DATA_ROOT=${DATA_ROOT:-data/Amazon}
CATEGORIES=${CATEGORIES:-$(dataset_categories "$DATA_ROOT")}
SFT_ROOT=${SFT_ROOT:-output/sft}
OUTPUT_ROOT=${OUTPUT_ROOT:-output/rl}
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-64}
EVAL_BATCH_SIZE=${EVAL_BATCH_SIZE:-128}
GRADIENT_ACCUMULATION_STEPS=${GRADIENT_ACCUMULATION_STEPS:-2}
NUM_GENERATIONS=${NUM_GENERATIONS:-16}
NUM_TRAIN_EPOCHS=${NUM_TRAIN_EPOCHS:-2}
LEARNING_RATE=${LEARNING_RATE:-1e-5}
BETA=${BETA:-1e-3}
REWARD_TYPE=${REWARD_TYPE:-ranking}
WANDB_PROJECT=${WANDB_PROJECT:-}
PYTHON=${PYTHON:-python}
MASTER_PORT=${MASTER_PORT:-}  # empty: a free port (torchrun --standalone), 29503 with accelerate
if [[ "$CPU" = 1 ]]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    RENDEZVOUS=(--standalone)
    [[ -z "$MASTER_PORT" ]] || RENDEZVOUS=(--master_port "$MASTER_PORT")
    LAUNCH=("$PYTHON" -m torch.distributed.run "${RENDEZVOUS[@]}" --nproc_per_node "$NPROC")
else
    LAUNCH=("$PYTHON" -m accelerate.commands.launch --config_file "${CONFIG:-config/zero2_opt.yaml}"
            --num_processes "$NPROC" --main_process_port "${MASTER_PORT:-29503}")
fi
if [[ -z "$CATEGORIES" ]]; then
    echo "Error: no category under DATA_ROOT=$DATA_ROOT (convert_dataset.py writes one); set DATA_ROOT or CATEGORIES" >&2
    exit 1
fi

for category in $CATEGORIES; do
    dataset_files "$DATA_ROOT" "$category" train eval test info index item
    echo "== RL $category: $train_file, $NPROC process(es)"
    merge_flags \
        --model_path "$SFT_ROOT/$category/final_checkpoint" \
        --train_file "$train_file" \
        --eval_file "$eval_file" \
        --test_file "$test_file" \
        --info_file "$info_file" \
        --sid_index_path "$index_file" \
        --item_meta_path "$item_file" \
        --category "$category" \
        --output_dir "$OUTPUT_ROOT/$category" \
        --train_batch_size "$TRAIN_BATCH_SIZE" \
        --eval_batch_size "$EVAL_BATCH_SIZE" \
        --gradient_accumulation_steps "$GRADIENT_ACCUMULATION_STEPS" \
        --num_generations "$NUM_GENERATIONS" \
        --num_train_epochs "$NUM_TRAIN_EPOCHS" \
        --learning_rate "$LEARNING_RATE" \
        --beta "$BETA" \
        --reward_type "$REWARD_TYPE" \
        --sample_train False \
        --eval_step 0.0999 \
        --mask_all_zero False \
        --dynamic_sampling False \
        --sync_ref_model True \
        --beam_search True \
        --test_during_training False \
        --temperature 1.0 \
        --add_gt False \
        --dapo False \
        --wandb_project "$WANDB_PROJECT" \
        --wandb_run_name "rl-$category" \
        -- "$@"
    "${LAUNCH[@]}" rl.py "${MERGED[@]}"
done
