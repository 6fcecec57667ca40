#!/usr/bin/env bash
# The original's data/amazon18_data_process.sh: its settings, then any flag given here (a later flag
# wins), e.g.  bash data/amazon18_data_process.sh --dataset Office_Products --output_path ./data/Amazon18
set -euo pipefail
"${PYTHON:-python}" "$(dirname "$0")/amazon18_data_process.py" \
    --dataset Industrial_and_Scientific \
    --user_k 5 \
    --item_k 5 \
    --st_year 1996 \
    --st_month 10 \
    --ed_year 2018 \
    --ed_month 10 \
    --output_path ./Amazon18 \
    "$@"
