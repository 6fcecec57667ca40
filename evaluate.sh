#!/usr/bin/env bash
# Evaluate one checkpoint on every category: constrained beam search over the valid SIDs
# (evaluate.py, NPROC processes merged into one predictions file), then HR@K / NDCG@K (calc.py:
# table, JSON and PNG next to the predictions).
#
#   MODEL=output/sft/Office_Products/final_checkpoint bash evaluate.sh       # every category in DATA_ROOT
#   MODEL=... NPROC=8 bash evaluate.sh Industrial_and_Scientific Office_Products
#   bash evaluate.sh --exp_name output/rl/Office_Products/final_checkpoint     # the original README's form
#
# Settings (environment):
#   MODEL        HF checkpoint folder with its tokenizer (SFT or RL final_checkpoint)
#   DATA_ROOT    the original's layout (default data/Amazon: test/<category>*11.csv, info/<category>*.txt)
#                or ours (DATA_ROOT/<category>/test.csv + info.txt)
#   NPROC        processes (default: the number of GPUs, else 2 CPU processes with gloo)
#   OUT_DIR      where predictions and metrics go (default ./results/<model folder name>)
#   NUM_BEAMS (50), BATCH_SIZE (8), MAX_NEW_TOKENS (256), LENGTH_PENALTY (0.0), SEED (42),
#   MAX_ROWS (0 = all test rows), PYTHON (python)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/dataset_files.sh

MODEL=${MODEL:-./output/rl/final_checkpoint}
DATA_ROOT=${DATA_ROOT:-data/Amazon}
NUM_BEAMS=${NUM_BEAMS:-50}
BATCH_SIZE=${BATCH_SIZE:-8}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-256}
LENGTH_PENALTY=${LENGTH_PENALTY:-0.0}
SEED=${SEED:-42}
MAX_ROWS=${MAX_ROWS:-0}
PYTHON=${PYTHON:-python}
if [[ -z "${NPROC:-}" ]]; then
    NPROC=$(gpu_count)
    [[ "$NPROC" -ge 1 ]] || NPROC=2
fi
categories=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --exp_name) MODEL=$2; shift 2 ;;        # the original README's `bash evaluate.sh --exp_name MODEL`
        --exp_name=*) MODEL=${1#--exp_name=}; shift ;;
        *) categories+=("$1"); shift ;;
    esac
done
OUT_DIR=${OUT_DIR:-./results/$(basename "$MODEL")}
if [[ ! -d "$MODEL" ]]; then
    echo "Error: MODEL=$MODEL is not a checkpoint folder; set MODEL=<sft or rl final_checkpoint> (or --exp_name)" >&2
    exit 1
fi

if [[ ${#categories[@]} -eq 0 ]]; then
    mapfile -t categories < <(dataset_categories "$DATA_ROOT")
    if [[ ${#categories[@]} -eq 0 ]]; then
        echo "Error: no category under DATA_ROOT=$DATA_ROOT (test/<category>*11.csv + info/, or <category>/test.csv); name the categories" >&2
        exit 1
    fi
fi

mkdir -p "$OUT_DIR"
failed=0
for category in "${categories[@]}"; do
    if ! dataset_files "$DATA_ROOT" "$category" test info; then
        failed=1
        continue
    fi
    result="$OUT_DIR/final_result_${category}.json"
    echo "== $category: $MODEL, $NPROC process(es), $NUM_BEAMS beams -> $result"
    if [[ "$NPROC" -gt 1 ]]; then
        launch=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC")
    else
        launch=("$PYTHON")
    fi
    if ! "${launch[@]}" evaluate.py \
            --base_model "$MODEL" \
            --info_file "$info_file" \
            --category "$category" \
            --test_data_path "$test_file" \
            --result_json_data "$result" \
            --batch_size "$BATCH_SIZE" \
            --num_beams "$NUM_BEAMS" \
            --max_new_tokens "$MAX_NEW_TOKENS" \
            --temperature 1.0 \
            --guidance_scale 1.0 \
            --length_penalty "$LENGTH_PENALTY" \
            --seed "$SEED" \
            --K "$MAX_ROWS"; then
        echo "Error: evaluation failed for $category" >&2
        failed=1
        continue
    fi
    "$PYTHON" calc.py --path "$result" --item_path "$info_file" || failed=1
done
[[ $failed -eq 0 ]] && echo "All categories evaluated; results in $OUT_DIR" || echo "Some categories failed" >&2
exit $failed
