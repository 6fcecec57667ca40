#!/usr/bin/env bash
# RL (GRPO, ReReTrainer) for every category under DATA_ROOT, from the SFT checkpoints of sft.sh.
#   GPUs:  NPROC=8 bash rl.sh                   (accelerate + DeepSpeed ZeRO-2, config/zero2_opt.yaml)
#   CPU:   CPU=1 NPROC=2 bash rl.sh             (torchrun, 2 processes over gloo: accelerate's own
#                                               CPU launcher needs MPI, torchrun does not)
# Every variable below can be overridden from the environment; extra arguments go to rl.py.
set -euo pipefail
cd "$(dirname "$0")"

NPROC=${NPROC:-8}
DATA_ROOT=${DATA_ROOT:-data/processed}
CATEGORIES=${CATEGORIES:-$(ls "$DATA_ROOT")}
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
MASTER_PORT=${MASTER_PORT:-29500}
if [ "${CPU:-0}" = 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    LAUNCH=("$PYTHON" -m torch.distributed.run --nproc_per_node "$NPROC" --master_port "$MASTER_PORT")
else
    LAUNCH=("$PYTHON" -m accelerate.commands.launch --config_file "${CONFIG:-config/zero2_opt.yaml}"
            --num_processes "$NPROC" --main_process_port "$MASTER_PORT")
fi

for category in $CATEGORIES; do
    dir="$DATA_ROOT/$category"
    train_file=$(ls "$dir"/*train*.csv | head -1)
    eval_file=$(ls "$dir"/*valid*.csv | head -1)
    test_file=$(ls "$dir"/*test*.csv | head -1)
    echo "== RL $category"
    "${LAUNCH[@]}" rl.py \
        --model_path "$SFT_ROOT/$category/final_checkpoint" \
        --train_file "$train_file" \
        --eval_file "$eval_file" \
        --test_file "$test_file" \
        --info_file "$dir/info.txt" \
        --sid_index_path "$dir/index.json" \
        --item_meta_path "$dir/item.json" \
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
        --beam_search True \
        --temperature 1.0 \
        --eval_step 0.0999 \
        --test_during_training False \
        --wandb_project "$WANDB_PROJECT" \
        --wandb_run_name "rl-$category" \
        "$@"
done
