"""Reproducibility check: run a finished pipeline stage's command twice more, each into its own
folder, and compare the two runs' outputs with each other and with the stage's own.

    python scripts/run_twice.py --run ml100k-small --stage rl     # RL on 2 processes, then its evaluation
    python scripts/run_twice.py --run ml100k-small --stage rl --nproc 1
    python scripts/run_twice.py --run ml100k-small --stage sft

The stage's recorded commands (runs/<run>/run.json) are replayed with the output
folders replaced, then the evaluation of the stage's checkpoint (eval_sft, eval_rl) on each copy. Compared: the
saved weights (bit for bit, else the largest absolute difference), the predictions file (bit for
bit, else the share of rows whose ranked list differs) and HR/NDCG@10. Writes
results/reproducibility/<run>-<stage>-nproc<N>.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from safetensors.torch import load_file

from metrics import compute_metrics
from pipeline import finished_stage, git_state, run_analysis_parser, write_analysis
from runtime import run_main

REPO = Path(__file__).resolve().parents[1]


def replayed(command: list[str], replace: dict[str, str], nproc: int) -> list[str]:
    out = []
    for arg in command:
        for old, new in replace.items():
            arg = arg.replace(old, new)
        out.append(f"--nproc_per_node={nproc}" if arg.startswith("--nproc_per_node=") else arg)
    return out


def weights_difference(a: Path, b: Path) -> dict:
    # torch, not numpy: numpy has no bfloat16, the dtype a model trained with --precision bf16 saves
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    if wa.keys() != wb.keys():
        return {"identical": False, "note": "different tensors"}
    largest = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)
    return {"identical": largest == 0.0, "largest_abs_difference": largest}


def predictions_difference(a: Path, b: Path) -> dict:
    rows_a, rows_b = json.loads(a.read_text()), json.loads(b.read_text())
    differing = sum(ra["predict"] != rb["predict"] for ra, rb in zip(rows_a, rows_b))
    return {"identical_bytes": a.read_bytes() == b.read_bytes(), "rows": len(rows_a),
            "rows_with_a_different_list": differing}


def main(argv=None):
    parser = run_analysis_parser(__doc__, "reproducibility")
    parser.add_argument("--stage", choices=["sft", "rl"], default="rl", help="the stage replayed (with its evaluation)")
    parser.add_argument("--nproc", type=int, default=2, help="processes of each replay")
    parser.add_argument("--work_dir", default=None, help="where the two replays go (default: runs/reproducibility)")
    args = parser.parse_args(argv)

    run_dir = Path(args.runs_dir) / args.run
    train_dir, train_commands = finished_stage(run_dir, args.stage)
    eval_dir, eval_commands = finished_stage(run_dir, f"eval_{args.stage}")
    work = Path(args.work_dir or Path(args.runs_dir) / "reproducibility") / f"{args.run}-{args.stage}-nproc{args.nproc}"
    copies = {}
    for name in ("first", "second"):
        target = work / name
        shutil.rmtree(target, ignore_errors=True)
        replace = {str(train_dir): str(target / "train"), str(eval_dir): str(target / "eval")}
        (target / "eval").mkdir(parents=True)
        started = time.time()
        for command in train_commands + eval_commands:
            subprocess.run(replayed(command, replace, args.nproc), cwd=REPO, check=True)
        copies[name] = {"dir": target, "seconds": round(time.time() - started, 1)}

    first, second = copies["first"]["dir"], copies["second"]["dir"]
    predictions = "predictions.json"
    report = {
        "command": ["python", "scripts/run_twice.py", "--run", args.run, "--stage", args.stage, "--nproc", str(args.nproc)],
        "commit": git_state()[0],
        "stage_dir": str(train_dir), "nproc": args.nproc,
        "seconds": {name: copy["seconds"] for name, copy in copies.items()},
        "weights_first_vs_second": weights_difference(first / "train" / "final_checkpoint",
                                                      second / "train" / "final_checkpoint"),
        "predictions_first_vs_second": predictions_difference(first / "eval" / predictions,
                                                              second / "eval" / predictions),
        "predictions_first_vs_stage": predictions_difference(first / "eval" / predictions, eval_dir / predictions),
        "metrics": {name: {k: v for k, v in compute_metrics(json.loads((path / predictions).read_text())).items()
                           if k in ("HR@10", "NDCG@10")}
                    for name, path in (("stage", eval_dir), ("first", first / "eval"), ("second", second / "eval"))},
    }
    write_analysis(report, args.out_dir, f"{args.run}-{args.stage}-nproc{args.nproc}")
    return 0


if __name__ == "__main__":
    run_main(main)
