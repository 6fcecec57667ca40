"""Benchmark: SASRec, GRU4Rec and Caser (sasrec.py defaults) beside popularity on the real
Office_Products split; prints the test table and wall times, writes
benchmarks/results/bench_sasrec.json. Skips, with a message, when the split is not there.

    python benchmarks/bench_sasrec.py [--data_dir ../shared/data/Office_Products]
"""

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import sasrec
from data import write_json
from metrics import format_table

DEFAULT_DATA = REPO.parent / "shared" / "data" / "Office_Products"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", nargs="+", choices=list(sasrec.MODELS), default=list(sasrec.MODELS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "bench_sasrec.json")
    args = parser.parse_args(argv)
    if not (args.data_dir / "train.csv").is_file():
        print(f"skipped: no split at {args.data_dir} (train/valid/test.csv); pass --data_dir")
        return None

    runs = {}
    with tempfile.TemporaryDirectory() as out_dir:  # checkpoints are not benchmark output
        for model in args.models:
            started = time.perf_counter()
            results = sasrec.main([
                "--model", model, "--seed", str(args.seed),
                "--train_file", str(args.data_dir / "train.csv"),
                "--valid_file", str(args.data_dir / "valid.csv"),
                "--test_file", str(args.data_dir / "test.csv"),
                "--index_file", str(args.data_dir / "index.json"),
                "--result_json_path", str(Path(out_dir) / f"{model}.json"),
            ])
            runs[model] = {**results, "wall_seconds": round(time.perf_counter() - started, 1)}

    first = next(iter(runs.values()))
    table = {"Popularity": first["popularity_test"], **{m: r["test"] for m, r in runs.items()}}
    print(format_table(table, first["ks"]))
    for model, r in runs.items():
        print(f"{model}: best epoch {r['best_epoch']} of {r['epochs_run']}, training "
              f"{r['train_seconds']:.0f} s, wall {r['wall_seconds']:.0f} s")
    write_json({
        "data": str(args.data_dir),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": 1,
                    "note": "cores shared with other jobs: wall times are upper bounds"},
        "ks": first["ks"],
        "item_num": first["item_num"],
        "test": table,
        "runs": {m: {k: r[k] for k in ("best_epoch", "epochs_run", "train_seconds", "wall_seconds",
                                       "valid", "hyper_parameters")}
                 for m, r in runs.items()},
    }, args.output, indent=2)
    print(f"wrote {args.output}")
    return table


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
