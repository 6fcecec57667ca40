#!/bin/bash
# The original's command line: item text -> <root>/<dataset>.emb-<plm_name>-td.npy over N processes.
# NUM_PROCESSES=2 DATASET=Office_Products ROOT=../data/Office_Products PLM=/path/to/encoder bash rq/text2emb/amazon_text2emb.sh
cd "$(dirname "$0")"
accelerate launch --num_processes "${NUM_PROCESSES:-8}" amazon_text2emb.py \
    --dataset "${DATASET:-Industrial_and_Scientific}" \
    --root "${ROOT:-../../data/Amazon18/Industrial_and_Scientific}" \
    ${PLM:+--plm_checkpoint "$PLM"} "$@"
