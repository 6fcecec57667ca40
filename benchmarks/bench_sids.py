"""Benchmark of SID construction on the Amazon Office_Products catalogue (../shared/data), 2 CPU cores:
  - the four methods of rq/build_sids.py on the same precomputed embeddings, each against a 2-minute
    target: wall time, and the SID quality report (collisions before repair, items moved, extra
    levels, codes used and perplexity per level, largest prefix groups, mean cosine within a first
    code vs all pairs); RQ-VAE and RQ-KMeans+ also give epochs/s;
  - the text-embedding step (all-MiniLM-L6-v2, model load included) in items/s on 1 and 2 processes
    (torchrun), interleaved runs, the median reported.
Writes the figures as JSON.

    python benchmarks/bench_sids.py [--embeddings_path EMB.npy] [--output_json benchmarks/results/bench_sids.json]
    python benchmarks/bench_sids.py --parts embedding      # re-measure one part, keep the other's figures
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
from runtime import ArgumentParser, InputError, positive_int, run_main

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


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measured() -> dict:
    """When and at which commit a part was measured (the parts may be measured apart)."""
    return {"commit": commit(), "load_average_at_start": load_average()}


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


def bench_embedding(item_json: Path, n_items: int, work_dir: Path, rounds: int) -> dict:
    """1 and 2 processes, interleaved `rounds` times (the machine's speed drifts); the median run of
    each is reported, every run is kept."""
    runs = {1: [], 2: []}
    for _ in range(rounds):
        for nproc in runs:
            out = work_dir / f"embed_{nproc}.json"
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                            __file__, "--embed_worker", "--item_meta_path", str(item_json), "--embed_items",
                            str(n_items), "--output_json", str(out)],
                           check=True, env={**os.environ, "OMP_NUM_THREADS": str(2 // nproc)})
            runs[nproc].append(json.loads(out.read_text()))
            print("embedding", nproc, runs[nproc][-1], flush=True)
    return {f"{nproc}_process": {**sorted(each, key=lambda r: r["seconds"])[len(each) // 2], "runs": each}
            for nproc, each in runs.items()}


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--item_meta_path", default=str(OFFICE_ITEM_JSON), help="catalogue (default: Office_Products)")
    parser.add_argument("--embeddings_path", default=None,
                        help="precomputed embeddings of the catalogue (default: encoded with all-MiniLM-L6-v2 first)")
    parser.add_argument("--work_dir", default=None, help="where the SIDs are built (default: a temporary folder)")
    parser.add_argument("--rqvae_epochs", type=positive_int, default=build_sids.DEFAULT_EPOCHS,
                        help="training epochs of rqvae and rqkmeans_plus")
    parser.add_argument("--embed_items", type=positive_int, default=512, help="items encoded for the items/s figures")
    parser.add_argument("--embed_rounds", type=positive_int, default=3,
                        help="interleaved runs at 1 and 2 processes (the median is reported)")
    parser.add_argument("--parts", default="methods,embedding",
                        help="what to measure, comma-separated: methods, embedding (a part not measured keeps the "
                             "figures already in --output_json)")
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
    parts = set(args.parts.split(","))
    unknown = parts - {"methods", "embedding"}
    if unknown:
        raise InputError(f"--parts: unknown {', '.join(sorted(unknown))} (choose from methods, embedding)")
    previous = Path(args.output_json)
    results = json.loads(previous.read_text()) if previous.is_file() and parts != {"methods", "embedding"} else {}
    results.update({"catalogue": str(item_json), "cpu_cores": os.cpu_count(),
                    "embeddings": "all-MiniLM-L6-v2, mean pooling, L2-normalised"})
    with tempfile.TemporaryDirectory() as scratch:
        work_dir = Path(args.work_dir or scratch)
        if "methods" in parts:
            embeddings_path = Path(args.embeddings_path) if args.embeddings_path else work_dir / "item_emb.npy"
            if not embeddings_path.is_file():
                embeddings.embed_catalogue(item_json, embeddings_path, normalize=True)
            results["methods_measured"] = measured()
            results["methods"] = bench_methods(item_json, embeddings_path, work_dir, args.rqvae_epochs)
            results["methods_measured"]["load_average_at_end"] = load_average()
        if "embedding" in parts:
            results["embedding_measured"] = measured()
            results["embedding_step"] = bench_embedding(item_json, args.embed_items, work_dir, args.embed_rounds)
            results["embedding_measured"]["load_average_at_end"] = load_average()
    data.write_json(results, args.output_json, indent=2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
