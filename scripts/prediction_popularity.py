"""Does RL move the recommendations toward popular items? For a finished run, the training-set
popularity of the items each model ranks in its top 10 on the run's own rows: SFT, SFT+RL, and
SASRec's own top 10 on the same histories.

    python scripts/prediction_popularity.py --run ml100k-small

Popularity is how often an item is a training row's target (what the popularity baseline ranks
by). Reported per model: the share of top-10 slots held by the --top_n most popular items and the
mean log(1 + count) of the top-10 items. Writes results/analysis/<run>-popularity.json.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

import data
import sasrec
from pipeline import finished_stage, git_state, run_analysis_parser, write_analysis
from runtime import run_main

TOP_K = 10


def popularity_profile(item_lists, counts: Counter, top_n: int) -> dict:
    """Share of the listed items among the `top_n` most frequent ones, and their mean log(1 + count)."""
    popular = {item for item, _ in counts.most_common(top_n)}
    items = [item for items in item_lists for item in items]
    return {"top_n_share": sum(item in popular for item in items) / len(items),
            "mean_log_count": float(np.mean([np.log1p(counts[item]) for item in items]))}


def main(argv=None):
    parser = run_analysis_parser(__doc__, "analysis")
    parser.add_argument("--top_n", type=int, default=100, help="how many of the most popular items count as popular")
    args = parser.parse_args(argv)

    run_dir = Path(args.runs_dir) / args.run
    run = json.loads((run_dir / "run.json").read_text())
    counts = Counter(row.item_id for row in data.read_split_csv(run["dataset"]["train.csv"]))
    lists, rows = {}, None
    for model, stage in (("SFT", "eval_sft"), ("SFT+RL", "eval_rl")):
        folder, _ = finished_stage(run_dir, stage)
        rows = json.loads((folder / "predictions.json").read_text())
        lists[model] = [row["predict_item_ids"][:TOP_K] for row in rows]
    sasrec_dir, _ = finished_stage(run_dir, "sasrec")
    model = sasrec.load_sasrec_checkpoint(sasrec_dir / "sasrec.pt")  # eval mode; forward_eval: no grad
    scores = model.forward_eval(*model.states_from_histories([row["history_item_id"] for row in rows]))
    lists["SASRec"] = scores.topk(min(TOP_K, scores.size(-1)), dim=-1).indices.tolist()

    report = {"command": ["python", "scripts/prediction_popularity.py", "--run", args.run, "--top_n", str(args.top_n)],
              "commit": git_state()[0], "rows": len(rows), "top_n": args.top_n,
              "models": {name: popularity_profile(item_lists, counts, args.top_n)
                         for name, item_lists in lists.items()}}
    write_analysis(report, args.out_dir, f"{args.run.replace('/', '-')}-popularity")
    return 0


if __name__ == "__main__":
    run_main(main)
