"""Benchmark of SID construction on the Amazon Office_Products catalogue (../shared/data), 2 CPU cores:
  - the four methods of rq/build_sids.py on the same precomputed embeddings, each against a 2-minute
    target: wall time, and the SID quality report (collisions before repair, items moved, extra
    levels, codes used and perplexity per level, largest prefix groups, mean cosine within a first
    code vs all pairs); RQ-VAE and RQ-KMeans+ also give epochs/s;
  - the text-embedding step (all-MiniLM-L6-v2) in items/s on 1 and 2 processes (torchrun).
Writes the figures as JSON.

    python benchmarks/bench_sids.py [--embeddings_path EMB.npy] [--output_json benchmarks/results/bench_sids.json]
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import data
from rq import build_sids, embeddings
from runtime import ArgumentParser, positive_int, run_main

REPO = Path(__file__).resolve().parents[1]
OFFICE_ITEM_JSON = REPO.parent / "shared" / "data" / "Office_Products" / "item.json"
TARGET_S = 120
REPORT_KEYS = ("codebook_sizes", "codes_used_per_level", "perplexity_per_level", "largest_group_per_prefix_depth",
               "collisions_before", "items_moved_by_repair", "items_with_extra_level", "collisions_after",
               "mean_cosine_same_first_code", "mean_cosine_all_pairs", "epochs", "epochs_per_s",
               "best_collision_rate", "repair_rounds", "quantise_s", "repair_s")


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def bench_methods(item_json: Path, embeddings_path: Path, work_dir: Path, rqvae_epochs: int) -> dict:
    results = {}
    for method in build_sids.METHODS:
        started = time.perf_counter()
        report = build_sids.build_sids(item_json, work_dir / method, method=method, embeddings_path=embeddings_path,
                                       epochs=rqvae_epochs)
        wall = round(time.perf_counter() - started, 2)
        results[method] = {"wall_s": wall, "target_s": TARGET_S, "within_target": wall < TARGET_S,
                           **{k: report[k] for k in REPORT_KEYS if k in report}}
        print(method, json.dumps(results[method]), flush=True)
    return results


def embed_worker(item_json: str, n_items: int, output_json: str):
    """One process of the torchrun measurement: encode the first n_items texts, time it."""
    from accelerate import PartialState

    _, texts = embeddings.item_texts(data.read_item_meta(item_json))
    started = time.perf_counter()
    embeddings.encode_texts(texts[:n_items])
    elapsed = time.perf_counter() - started
    if PartialState().is_main_process:
        data.write_json({"items": n_items, "seconds": round(elapsed, 2), "items_per_s": round(n_items / elapsed, 2)},
                        output_json)


def bench_embedding(item_json: Path, n_items: int, work_dir: Path) -> dict:
    results = {}
    for nproc in (1, 2):
        out = work_dir / f"embed_{nproc}.json"
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                        __file__, "--embed_worker", "--item_meta_path", str(item_json), "--embed_items", str(n_items),
                        "--output_json", str(out)],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": str(2 // nproc)})
        results[f"{nproc}_process"] = json.loads(out.read_text())
        print("embedding", nproc, results[f"{nproc}_process"], flush=True)
    return results


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--item_meta_path", default=str(OFFICE_ITEM_JSON), help="catalogue (default: Office_Products)")
    parser.add_argument("--embeddings_path", default=None,
                        help="precomputed embeddings of the catalogue (default: encoded with all-MiniLM-L6-v2 first)")
    parser.add_argument("--work_dir", default=None, help="where the SIDs are built (default: a temporary folder)")
    parser.add_argument("--rqvae_epochs", type=positive_int, default=build_sids.DEFAULT_EPOCHS,
                        help="training epochs of rqvae and rqkmeans_plus")
    parser.add_argument("--embed_items", type=positive_int, default=512, help="items encoded for the items/s figures")
    parser.add_argument("--embed_worker", action="store_true", help="internal: one process of the embedding measurement")
    parser.add_argument("--output_json", default=str(REPO / "benchmarks" / "results" / "bench_sids.json"),
                        help="where the figures are written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.embed_worker:
        return embed_worker(args.item_meta_path, args.embed_items, args.output_json)
    item_json = Path(args.item_meta_path)
    if not item_json.is_file():
        print(f"{item_json} not found: nothing to benchmark", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        work_dir = Path(args.work_dir or scratch)
        embeddings_path = Path(args.embeddings_path) if args.embeddings_path else work_dir / "item_emb.npy"
        if not embeddings_path.is_file():
            embeddings.embed_catalogue(item_json, embeddings_path, normalize=True)
        results = {
            "commit": commit(), "catalogue": str(item_json), "cpu_cores": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "embeddings": "all-MiniLM-L6-v2, mean pooling, L2-normalised",
            "methods": bench_methods(item_json, embeddings_path, work_dir, args.rqvae_epochs),
            "embedding_step": bench_embedding(item_json, args.embed_items, work_dir),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }
    data.write_json(results, args.output_json, indent=2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
