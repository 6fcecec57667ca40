"""The original's rq/rqkmeans_faiss.py command line: RQ-KMeans with faiss on an embeddings .npy ->
`<output_root>/<dataset>/<dataset>.faiss-rq.index.json` (keys = embedding rows).

The original leaves colliding items as they are; here they move to their nearest free last-level
code, and what still collides gets an extra level (rq/sids.py), so the SIDs are unique. Its
optional `--uniform` Sinkhorn balancing (POT) is not offered: rqkmeans_constrained balances levels.

    python rq/rqkmeans_faiss.py --dataset Industrial_and_Scientific --data_path X.emb-qwen-td.npy
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rq import rqkmeans, sids
from rq.embeddings import load_embeddings
from runtime import ArgumentParser, positive_int, run_main

logger = logging.getLogger("rqkmeans_faiss")


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="Industrial_and_Scientific", help="dataset name (output file names)")
    parser.add_argument("--data_path", default=None,
                        help="embeddings .npy (default: ../data/Amazon/index/<dataset>.emb-qwen-td.npy)")
    parser.add_argument("--num_levels", type=positive_int, default=3, help="code levels")
    parser.add_argument("--codebook_size", type=positive_int, default=256, help="codes per level")
    parser.add_argument("--niter", type=positive_int, default=25, help="k-means iterations per level (faiss default)")
    parser.add_argument("--seed", type=int, default=0, help="k-means seed")
    parser.add_argument("--output_root", default="../data", help="the index goes to OUTPUT_ROOT/<dataset>/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data_path = args.data_path or f"../data/Amazon/index/{args.dataset}.emb-qwen-td.npy"
    embeddings = load_embeddings(data_path)
    codes, _, last_distances = rqkmeans.residual_kmeans(embeddings, [args.codebook_size] * args.num_levels,
                                                        args.niter, args.seed)
    repaired = sids.reassign_last_level(codes, last_distances)
    out = Path(args.output_root) / args.dataset / f"{args.dataset}.faiss-rq.index.json"
    before = sids.count_colliding(codes)
    after = sids.write_row_index(repaired, out)
    logger.info("collisions: %s before, %s after moving to free last-level codes (the rest got an extra level); "
                "saved %s", before, after, os.fspath(out))


if __name__ == "__main__":
    run_main(main)
