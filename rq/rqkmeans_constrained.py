"""The original's rq/rqkmeans_constrained.py command line: balanced RQ-KMeans
(k-means-constrained) on `<root>/<dataset>.emb-<plm_name>-td.npy`, writing beside it
  <dataset>.codebooks_constrained.npz   codebook_0, codebook_1, ... (what rqkmeans_plus.py starts from)
  <dataset>.codes_constrained.npy       the raw codes (items x levels)
  <dataset>.index.json                  SIDs, keys = embedding rows; colliding items get an extra level
Codes are written from 0 (the original shifts them to start at 1).

    python rq/rqkmeans_constrained.py --dataset Industrial_and_Scientific --root DIR --k 256 --l 3
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

import data
from rq import rqkmeans, sids
from rq.embeddings import load_embeddings
from runtime import ArgumentParser, positive_int, run_main

logger = logging.getLogger("rqkmeans_constrained")


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="./data/Amazon", help="folder of the embeddings; outputs go there too")
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. Industrial_and_Scientific")
    parser.add_argument("--plm_name", default="qwen", help="the encoder name in <dataset>.emb-<plm_name>-td.npy")
    parser.add_argument("--k", type=positive_int, default=256, help="codes per level")
    parser.add_argument("--l", type=positive_int, default=4, help="levels")
    parser.add_argument("--max_iter", type=positive_int, default=100, help="k-means iterations per level")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--verbose", action="store_true", help="log every level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    root = Path(args.root)
    embeddings = load_embeddings(root / f"{args.dataset}.emb-{args.plm_name}-td.npy")
    codes, codebooks, _ = rqkmeans.residual_kmeans_constrained(embeddings, [args.k] * args.l, args.max_iter, args.seed)
    with data.atomic_write(root / f"{args.dataset}.codebooks_constrained.npz", "wb") as f:
        np.savez_compressed(f, **{f"codebook_{i}": codebook for i, codebook in enumerate(codebooks)})
    with data.atomic_write(root / f"{args.dataset}.codes_constrained.npy", "wb") as f:
        np.save(f, codes)
    collisions = sids.write_row_index(codes, root / f"{args.dataset}.index.json")
    print(f"{len(codes)} items, codes used per level {[len(np.unique(c)) for c in codes.T]}, "
          f"collisions before the extra level {collisions}; wrote {root / f'{args.dataset}.index.json'}")


if __name__ == "__main__":
    run_main(main)
