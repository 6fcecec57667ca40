#!/bin/bash
# The original's command line: SIDs from an RQ-KMeans+ checkpoint. Usage: bash rq/generate_indices_plus.sh CKPT_PATH
cd "$(dirname "$0")"
python generate_indices_plus.py \
  --data_path ../data/Amazon18/Industrial_and_Scientific/Industrial_and_Scientific.emb-qwen-td.npy \
  --ckpt_path "${1:?usage: generate_indices_plus.sh CKPT_PATH (e.g. <ckpt_dir>/<date>/best_collision_model.pth)}" \
  --num_emb_list 256 256 256 \
  --device cpu "${@:2}"
