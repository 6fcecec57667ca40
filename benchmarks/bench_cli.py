"""Benchmark: how long a misspelled flag takes to stop sft.py / rl.py / convert_gguf.py (the strict
command line answers before torch loads), beside the time to import each script (what a command line
parsed after the imports, as fire's was, costs before it can say anything). Median of --repeats
runs of each; writes benchmarks/results/bench_cli.json.

    python benchmarks/bench_cli.py [--repeats 5]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from data import write_json
from runtime import ArgumentParser, positive_int, run_main

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("sft.py", "rl.py", "convert_gguf.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def seconds(command: list[str], expect_status: int) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != expect_status:
        raise RuntimeError(f"{command}: exit {done.returncode}, expected {expect_status}: {done.stderr[-500:]}")
    return elapsed


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=positive_int, default=5, help="runs per measurement (median)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_cli.json"),
                        help="results JSON")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    results = {"commit": commit.stdout.strip(), "python": sys.version.split()[0], "repeats": args.repeats,
               "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count(), "scripts": {}}
    for script in SCRIPTS:
        misspelled = [sys.executable, script, "--learning_rat", "1e-3"]
        imported = [sys.executable, "-c", f"import {Path(script).stem}"]
        results["scripts"][script] = {
            "misspelled_flag_s": statistics.median(seconds(misspelled, 2) for _ in range(args.repeats)),
            "import_s": statistics.median(seconds(imported, 0) for _ in range(args.repeats)),
            "command": " ".join(["python", *misspelled[1:]]),
        }
        print(script, results["scripts"][script])
    write_json(results, args.out, indent=2)


if __name__ == "__main__":
    run_main(main)
