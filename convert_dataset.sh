#!/usr/bin/env bash
# The original's convert_dataset.sh: its settings, then any flag given here (a later flag wins), e.g.
#   bash convert_dataset.sh --dataset_name Office_Products --data_dir data/Amazon18/Office_Products --output_dir data/Amazon
set -euo pipefail
DATASET_NAME=${DATASET_NAME:-Industrial_and_Scientific}
"${PYTHON:-python}" "$(dirname "$0")/convert_dataset.py" \
    --dataset_name "$DATASET_NAME" \
    --data_dir "data/Amazon18/$DATASET_NAME" \
    --output_dir data/Amazon18 \
    --category "$DATASET_NAME" \
    --seed 42 \
    "$@"
