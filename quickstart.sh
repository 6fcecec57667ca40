#!/usr/bin/env bash
# The main job: set up the environment, then run the whole pipeline at small scale on CPU and print
# the results table (results/<run>/results.md). Every flag goes to pipeline.py:
#   bash quickstart.sh                                   # built-in MovieLens-100k, small profile
#   bash quickstart.sh --profile smollm2                 # pretrained SmolLM2-135M-Instruct
#   bash quickstart.sh --data_dir DIR --category NAME    # your dataset (train/valid/test.csv, index.json,
#                                                        # item.json, info.txt, or the original's data/Amazon)
#   bash quickstart.sh --force                           # redo every stage (finished stages are reused otherwise)
set -euo pipefail
cd "$(dirname "$0")"
venv="$(bash scripts/setup_env.sh)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export WANDB_MODE=${WANDB_MODE:-disabled}
exec "$venv/bin/python" pipeline.py "$@"
