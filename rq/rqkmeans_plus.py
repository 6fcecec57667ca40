"""The original's rq/rqkmeans_plus.py command line: RQ-KMeans+ (GPR): an RQ-VAE whose encoder is
z = x + MLP(x) (last layer zero-initialised, latent size = embedding size) and whose codebooks
start from balanced RQ-KMeans (`<dataset>.codebooks_constrained.npz` of rq/rqkmeans_constrained.py).
Checkpoints go to CKPT_DIR/<date-time>/best_collision_model.pth (read by generate_indices_plus.py).

    python rq/rqkmeans_plus.py --data_path X.emb-qwen-td.npy \
        --pretrained_codebook_path X.codebooks_constrained.npz --num_emb_list 256 256 256 --e_dim 2560 \
        --lr 1e-4 --epochs 10000 --batch_size 2048
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rq import rqvae
from runtime import ArgumentParser, InputError, run_main


def load_codebooks(path, levels: int) -> list[np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--pretrained_codebook_path {path}: not found (run rq/rqkmeans_constrained.py first)")
    with np.load(path) as saved:
        missing = [f"codebook_{i}" for i in range(levels) if f"codebook_{i}" not in saved]
        if missing:
            raise InputError(f"--pretrained_codebook_path {path}: no {missing[0]} for {levels} levels (--num_emb_list)")
        return [saved[f"codebook_{i}"].astype(np.float32) for i in range(levels)]


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    rqvae.add_model_args(parser, lr=1e-4, kmeans_init=False, e_dim=None)
    parser.add_argument("--pretrained_codebook_path", required=True,
                        help="<dataset>.codebooks_constrained.npz from rq/rqkmeans_constrained.py")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rqvae.train_and_save(args, residual_encoder=True,
                         codebooks=load_codebooks(args.pretrained_codebook_path, len(args.num_emb_list)))


if __name__ == "__main__":
    run_main(main)
