#!/bin/bash
# The original's command line: train an RQ-VAE (then: python generate_indices.py --ckpt_path ...).
cd "$(dirname "$0")"
python rqvae.py \
      --data_path ../data/Amazon/index/Industrial_and_Scientific.emb-qwen-td.npy \
      --ckpt_dir ./output/Industrial_and_Scientific \
      --lr 1e-3 \
      --epochs 10000 \
      --batch_size 20480 "$@"
