"""Benchmark of the data + SID step on real catalogues, against the targets of the issue (2 CPU cores):
  - MovieLens-100k, raw ratings -> split CSVs with SIDs (prepare, embeddings, RQ-KMeans, convert): < 2 min
  - Amazon Office_Products item.json (about 3.5k items with descriptions) -> SIDs: < 5 min
plus RQ-VAE on the same embeddings. Prints the figures and writes them as JSON.

    python benchmarks/bench_sids.py [--work_dir DIR] [--output_json benchmarks/results/bench_sids.json]
The Office catalogue comes from ../shared/data/Office_Products (skipped when it is absent).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "data"), str(REPO / "rq")]

import build_sids  # noqa: E402
import convert_dataset  # noqa: E402
import data  # noqa: E402
import prepare_ml100k  # noqa: E402

OFFICE_ITEM_JSON = REPO.parent / "shared" / "data" / "Office_Products" / "item.json"
TARGET_S = {"ml100k": 120, "office_products": 300}
REPORT_KEYS = ("items", "codebook_sizes", "codes_used_per_level", "collisions_before", "items_moved_at_last_level",
               "items_with_extra_level", "collisions_after", "mean_cosine_same_first_code", "mean_cosine_all_pairs",
               "embeddings_s", "quantise_s")


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, round(time.perf_counter() - started, 2)


def bench_ml100k(work_dir: Path) -> dict:
    folder = work_dir / "ml100k"
    wheel, fetch_s = timed(prepare_ml100k.fetch_recbole_wheel, prepare_ml100k.default_cache_dir())
    stats, prepare_s = timed(prepare_ml100k.main, ["--output_dir", str(folder), "--wheel_path", str(wheel)])
    report, sids_s = timed(build_sids.build_sids, folder / "item.json", folder)
    counts, convert_s = timed(convert_dataset.convert_dataset, folder)
    rows = data.read_split_csv(folder / "test.csv", index=data.read_index(folder / "index.json"))
    total = prepare_s + sids_s + convert_s
    return {"dataset_stats": stats, "split_rows": counts, "test_rows_read_back": len(rows),
            "fetch_wheel_s": fetch_s, "prepare_s": prepare_s, "build_sids_s": sids_s, "convert_s": convert_s,
            "total_s": round(total, 2), "target_s": TARGET_S["ml100k"], "within_target": total < TARGET_S["ml100k"],
            "rqkmeans": {k: report[k] for k in REPORT_KEYS}}


def bench_office(work_dir: Path) -> dict:
    folder = work_dir / "office"
    report, total = timed(build_sids.build_sids, OFFICE_ITEM_JSON, folder)
    vae_report, vae_s = timed(build_sids.build_sids, OFFICE_ITEM_JSON, folder / "rqvae", method="rqvae",
                              embeddings_path=folder / "item_emb.npy")
    return {"build_sids_s": total, "target_s": TARGET_S["office_products"],
            "within_target": total < TARGET_S["office_products"],
            "rqkmeans": {k: report[k] for k in REPORT_KEYS},
            "rqvae_on_same_embeddings_s": vae_s, "rqvae": {k: vae_report[k] for k in REPORT_KEYS}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default=None, help="where the datasets are built (default: a temporary folder)")
    parser.add_argument("--output_json", default=str(REPO / "benchmarks" / "results" / "bench_sids.json"),
                        help="where the figures are written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as scratch:
        work_dir = Path(args.work_dir or scratch)
        results = {"ml100k": bench_ml100k(work_dir)}
        if OFFICE_ITEM_JSON.is_file():
            results["office_products"] = bench_office(work_dir)
        else:
            results["office_products"] = {"skipped": f"{OFFICE_ITEM_JSON} not found"}
    data.write_json(results, args.output_json, indent=2)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
