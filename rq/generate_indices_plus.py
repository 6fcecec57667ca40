"""The original's rq/generate_indices_plus.py command line: SIDs from an RQ-KMeans+ checkpoint
(rq/rqkmeans_plus.py): nearest codes, and the ordinal extra level for items that share all codes,
as the original. Writes `<Category>.index.json` beside the embeddings (keys = embedding rows); codes
start at 0 (the original shifts them to 1). The model's shape comes from the checkpoint; the
shape flags are accepted for the original's command lines and must agree with it.

    python rq/generate_indices_plus.py --data_path X.emb-qwen-td.npy --ckpt_path DIR/best_collision_model.pth \
        --num_emb_list 256 256 256 --device cpu
"""

from __future__ import annotations

import logging

import torch

from rq import rqvae, sids
from rq.embeddings import load_embeddings
from rq.generate_indices import default_index_path
from runtime import ArgumentParser, InputError, run_main


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data_path", required=True, help="embeddings .npy")
    parser.add_argument("--ckpt_path", required=True, help="checkpoint saved by rq/rqkmeans_plus.py")
    parser.add_argument("--num_emb_list", type=int, nargs="+", default=None, help="codebook sizes (must match the checkpoint)")
    parser.add_argument("--e_dim", type=int, default=None, help="latent size (must match the checkpoint)")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="encoder widths (must match the checkpoint)")
    parser.add_argument("--batch_size", type=int, default=2048, help="items per forward pass")
    parser.add_argument("--num_workers", type=int, default=4,
                        help="accepted for the original's command lines; the embeddings are held in memory")
    parser.add_argument("--device", default="cpu", help="torch device (the original's default is cuda:0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    model, _ = rqvae.load_checkpoint(args.ckpt_path, args.device)
    for flag in ("num_emb_list", "e_dim", "layers"):
        given, saved = getattr(args, flag), getattr(model.config, flag)
        if given is not None and given != saved:
            raise InputError(f"--{flag} {given}: the checkpoint {args.ckpt_path} was trained with {saved}")
    x = torch.as_tensor(load_embeddings(args.data_path)).to(args.device)
    codes = torch.cat([model.get_indices(batch) for batch in x.split(args.batch_size)]).cpu().numpy()
    out = default_index_path(args.data_path)
    collisions = sids.write_row_index(codes, out)
    print(f"collisions before the extra level {collisions}; wrote {out}")


if __name__ == "__main__":
    run_main(main)
