"""bf16 against fp32 evaluation of one trained checkpoint: speed, metrics and top-10 agreement.

    python pipeline.py --run ml100k-small-fp32 --set sft.precision=fp32 --set eval.precision=fp32 \
        --set rl.precision=fp32                           # the trained checkpoint (fp32 throughout)
    python benchmarks/bench_bf16.py --run_dir runs/ml100k-small-fp32   # its SFT checkpoint, test rows, beams

Runs evaluate.py twice as whole processes on the same checkpoint, test rows and beams, once with
--precision fp32 and once with --precision bf16 (weights cast to bf16, as `--precision auto` does on a
CPU with native bf16 instructions), then compares the two predictions files user by user: the share of
users whose top-10 list is identical (same items, same order), the mean top-10 overlap, and HR/NDCG of
each. Writes benchmarks/results/bench_bf16.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "bench_bf16.json"

import data  # noqa: E402
import hardware  # noqa: E402
import metrics  # noqa: E402
from benchmarks.bench_decoding import agreement, git  # noqa: E402


def from_run(run_dir: Path) -> dict:
    """The SFT checkpoint, info file, test sample, category and evaluation flags of a pipeline run."""
    run = json.loads((run_dir / "run.json").read_text())
    flags = run["profile"]["eval"]
    return {"checkpoint": str(Path(run["outputs"]["sft_dir"]) / "final_checkpoint"),
            "info_file": run["dataset"]["info.txt"], "test_file": run["outputs"]["test_csv"],
            "category": run["category"], "num_beams": flags["num_beams"], "batch_size": flags["batch_size"],
            "prompt_style": flags.get("prompt_style", "upstream")}


def evaluate(precision: str, args, out: Path) -> float:
    """Seconds of one evaluate.py process, launch to exit."""
    cmd = [sys.executable, str(REPO / "evaluate.py"), "--base_model", args.checkpoint, "--info_file", args.info_file,
           "--category", args.category, "--test_data_path", args.test_file, "--result_json_data", str(out),
           "--num_beams", str(args.num_beams), "--batch_size", str(args.batch_size), "--K", str(args.users),
           "--prompt_style", args.prompt_style, "--precision", precision, "--no_progress"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run_dir", default=None, help="a pipeline run (runs/<name>): its SFT checkpoint, info file, "
                                                    "test sample and evaluation flags are the defaults below")
    p.add_argument("--checkpoint", help="trained HF checkpoint folder (e.g. the pipeline's SFT)")
    p.add_argument("--info_file")
    p.add_argument("--test_file")
    p.add_argument("--category", default="ml-100k")
    p.add_argument("--prompt_style", default="upstream")
    p.add_argument("--num_beams", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--users", type=int, default=0, help="first N test rows (0: all)")
    p.add_argument("--out", default=str(OUT))
    known, _ = p.parse_known_args(argv)
    if known.run_dir:
        p.set_defaults(**from_run(Path(known.run_dir)))
    args = p.parse_args(argv)
    if not (args.checkpoint and args.info_file and args.test_file):
        p.error("give --run_dir, or --checkpoint, --info_file and --test_file")

    report = {"command": ["benchmarks/bench_bf16.py", *(argv if argv is not None else sys.argv[1:])],
              "commit": git("rev-parse", "--short", "HEAD"),
              "dirty_files": [x for x in git("status", "--porcelain").splitlines() if x],
              "machine": {"cpus": os.cpu_count(), **hardware.describe(), "bf16_matmul_speedup": hardware.cpu_bf16_speedup(),
                          "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
              "checkpoint": args.checkpoint, "num_beams": args.num_beams, "batch_size": args.batch_size}
    catalogue = data.Catalogue(info_file=args.info_file, category=args.category)
    catalogue.split(args.test_file)
    rankings, runs = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-bf16-") as tmp:
        for precision in ("fp32", "bf16"):
            out = Path(tmp) / f"{precision}.json"
            seconds = evaluate(precision, args, out)
            rows = json.loads(out.read_text())
            result = metrics.compute_metrics(rows, catalogue.answer_sids)
            rankings[precision] = [row["predict"] for row in rows]
            runs[precision] = {"seconds": seconds, "users": len(rows),
                               **{k: result[k] for k in ("HR@10", "NDCG@10", "HR@20", "NDCG@20") if k in result}}
            print(f"{precision}: {seconds:.1f} s for {len(rows)} users, HR@10 {result['HR@10']:.4f}, "
                  f"NDCG@10 {result['NDCG@10']:.4f}", flush=True)
    report["runs"] = runs
    report["bf16_speedup"] = runs["fp32"]["seconds"] / runs["bf16"]["seconds"]
    report["agreement"] = {**agreement(rankings["fp32"], rankings["bf16"], k=10),
                           "identical_top1": agreement(rankings["fp32"], rankings["bf16"], k=1)["identical_top1"]}
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    data.write_json(report, args.out, indent=2)
    a = report["agreement"]
    print(f"bf16: {report['bf16_speedup']:.2f}x the fp32 speed; top-10 identical for {a['identical_top10']:.1%} of "
          f"{a['users']} users (mean overlap {a['mean_top10_overlap']:.3f}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
