#!/usr/bin/env bash
# The main job: set up the environment, then run the whole pipeline at small scale on the built-in
# MovieLens-100k data, on CPU, and print the results table (runs/<run>/results/results.md).
#   bash quickstart.sh                      # small from-scratch backbone
#   bash quickstart.sh --backbone smollm2   # pretrained SmolLM2-135M-Instruct
#   bash quickstart.sh --force              # redo every stage (finished stages are skipped otherwise)
set -euo pipefail
cd "$(dirname "$0")"
venv="$(bash scripts/setup_env.sh)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export WANDB_MODE=${WANDB_MODE:-disabled}
exec "$venv/bin/python" pipeline.py "$@"
