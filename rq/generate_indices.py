"""The original's rq/generate_indices.py: SIDs from a trained RQ-VAE checkpoint (rq/rqvae.py's
best_collision_model.pth): nearest codes, then the Sinkhorn re-assignment of colliding items at the
last level (up to 20 rounds), then (ours) an extra level for what still collides. Writes
`<Category>.index.json` (keys = embedding rows) beside the embeddings unless --output_file.
The original hard-codes the checkpoint and dataset in the script; here they are flags.

    python rq/generate_indices.py --ckpt_path output/Industrial_and_Scientific/<date>/best_collision_model.pth
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from rq import rqvae, sids
from rq.embeddings import load_embeddings
from runtime import ArgumentParser, run_main

logger = logging.getLogger("generate_indices")


def default_index_path(data_path) -> Path:
    """`<folder of the embeddings>/<Category>.index.json`, Category = the file name before its first dot."""
    data_path = Path(data_path)
    return data_path.parent / f"{data_path.name.split('.')[0]}.index.json"


def generate(ckpt_path, data_path=None, output_file=None, device="cpu") -> Path:
    model, saved_args = rqvae.load_checkpoint(ckpt_path, device)
    data_path = data_path or saved_args["data_path"]
    x = torch.as_tensor(load_embeddings(data_path)).to(device)
    codes, last_distances = rqvae.last_level_distances(model, x)
    last_layer = model.rq.vq_layers[-1]
    repaired, rounds = rqvae.sinkhorn_repair(codes, last_distances, last_layer.sk_epsilon or rqvae.REPAIR_EPSILON,
                                             last_layer.sk_iters)
    out = Path(output_file) if output_file else default_index_path(data_path)
    before = sids.count_colliding(codes)
    after = sids.write_row_index(repaired, out)
    print(f"collisions {before} -> {after} after {rounds} Sinkhorn rounds (the rest got an extra level); wrote {out}")
    return out


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--ckpt_path", required=True, help="checkpoint saved by rq/rqvae.py")
    parser.add_argument("--data_path", default=None, help="embeddings .npy (default: the one the model was trained on)")
    parser.add_argument("--output_file", default=None, help="index file (default: <Category>.index.json beside the embeddings)")
    parser.add_argument("--device", default="cpu", help="torch device")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    generate(**vars(args))


if __name__ == "__main__":
    run_main(main)
