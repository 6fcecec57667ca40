"""Confirm a setting chosen on the pipeline's test sample on the test rows the sample left out.

Settings picked by comparing variants on one sample of test rows are then tested on rows that took
no part in the choice: the split's test rows outside the sample (`scripts/sample_rows.py
--complement`, same seed); settings picked on validation rows (`pipeline.py --eval_split valid`)
on every test row. The run's own SFT and SFT+RL checkpoints are evaluated there with the
run's evaluation command, and SFT+RL is compared with SFT by a paired bootstrap over those rows.

    python scripts/confirm_heldout.py --run rl_budget/sasrec_sid_240_lr3e-4/seed42

Writes results/heldout/<run with / as ->.json (metrics of both models, the differences with their
95% intervals, the command, the commit).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from metrics import compute_metrics
from pipeline import finished_stage, git_state, heldout_dir, run_analysis_parser, write_analysis
from report import paired_bootstrap, per_row_metric, row_ranks
from runtime import InputError, run_main

REPO = Path(__file__).resolve().parents[1]
METRICS = ("HR@10", "NDCG@10")


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def main(argv=None):
    parser = run_analysis_parser(__doc__, "heldout")
    args = parser.parse_args(argv)

    run_dir = Path(args.runs_dir) / args.run
    _, sample_commands = finished_stage(run_dir, "test_sample")
    run = json.loads((run_dir / "run.json").read_text())
    sample = sample_commands[0]
    work = heldout_dir(args.runs_dir, args.run)
    heldout_csv = work / "test.csv"
    if run.get("eval_split") == "valid":  # chosen on validation rows: every test row is held out
        heldout_csv = Path(run["dataset"]["test.csv"])
    elif not heldout_csv.is_file():
        subprocess.run([sys.executable, "scripts/sample_rows.py", "--input", option(sample, "--input"),
                        "--output", str(heldout_csv), "--rows", option(sample, "--rows"), "--seed",
                        option(sample, "--seed"), "--complement"], cwd=REPO, check=True)
    if len(heldout_csv.read_text().splitlines()) < 2:  # a header and no row
        raise InputError(f"{run_dir}: the run scored every test row (pipeline.py --test_rows): none is held out")

    predictions = {}
    for model, eval_stage in (("SFT", "eval_sft"), ("SFT+RL", "eval_rl")):
        _, commands = finished_stage(run_dir, eval_stage)
        evaluate = next(c for c in commands if "evaluate.py" in c)
        out = work / eval_stage / "predictions.json"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            command = list(evaluate)
            command[command.index("--test_data_path") + 1] = str(heldout_csv)
            command[command.index("--result_json_data") + 1] = str(out)
            subprocess.run(command, cwd=REPO, check=True)
        predictions[model] = out

    ranks = {model: row_ranks(path)[1] for model, path in predictions.items()}
    report = {
        "command": ["python", "scripts/confirm_heldout.py", "--run", args.run],
        "commit": git_state()[0],
        "run_command": run["command"], "heldout_rows": len(ranks["SFT"]),
        "models": {model: {k: v for k, v in compute_metrics(json.loads(path.read_text())).items() if k in METRICS}
                   for model, path in predictions.items()},
        "rl_vs_sft": {metric: paired_bootstrap(per_row_metric(ranks["SFT"], metric),
                                               per_row_metric(ranks["SFT+RL"], metric)) for metric in METRICS},
    }
    write_analysis(report, args.out_dir, args.run.replace("/", "-"))
    return 0


if __name__ == "__main__":
    run_main(main)
