"""How much could the SASRec reward give RL? Re-rank the SFT model's beams by SFT log-probability plus
lambda x SASRec log-probability, on the run's own test rows.

    python scripts/sasrec_rerank.py --run ml100k-small
    python scripts/sasrec_rerank.py --run ml100k-small --heldout   # after scripts/confirm_heldout.py
    python scripts/sasrec_rerank.py --run ml100k-small --sasrec_score pmi

RL with `--reward_type sasrec --scale_rewards none --beta B` has the KL-regularised optimum
pi_SFT(item) x p_SASRec(item)^(1/B): its best case on a prompt is this re-ranking of the items the
SFT policy proposes (lambda = 1/B). The run's eval_sft predictions (beams with their summed
log-probabilities) and its SASRec checkpoint are read; each row's beams are re-ranked for every
lambda, and HR@K / NDCG@K are reported with the paired bootstrap of each lambda against the SFT's
own order (lambda 0). With `--sasrec_score pmi` the SASRec term is the reward rl.py's
`--sasrec_score pmi` gives (log-probability minus the item's log share of the run's training
targets), so the optimum re-ranked is that reward's. Writes
results/analysis/<run>[-heldout][-pmi]-sasrec-rerank.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import data
import sasrec
from metrics import clean_answer, hr_ndcg, ks_up_to, target_ranks
from pipeline import finished_stage, git_state, heldout_dir, run_analysis_parser
from report import paired_bootstrap, per_row_metric
from rewards import item_log_prior
from runtime import InputError, run_main

LAMBDAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def reranked_ranks(rows, sasrec_logp: torch.Tensor, lam: float) -> np.ndarray:
    """0-based rank of each row's target after re-ranking its beams (-1: not among them)."""
    orders = []
    for row, logp in zip(rows, sasrec_logp):
        items = torch.tensor(row["predict_item_ids"])
        if (items < 0).any():
            raise InputError("a prediction is not a catalogue item (predict_item_ids -1): nothing to re-rank by")
        score = torch.tensor(row["scores"], dtype=torch.float64) + lam * logp[items].double()
        orders.append([row["predict"][i] for i in score.argsort(descending=True, stable=True).tolist()])
    return target_ranks(orders, [clean_answer(row["output"]) for row in rows])


def main(argv=None):
    parser = run_analysis_parser(__doc__, "analysis")
    parser.add_argument("--heldout", action="store_true",
                        help="re-rank the SFT's beams on the held-out rows scripts/confirm_heldout.py evaluated "
                             "(rows that took no part in choosing the settings) instead of the run's own rows")
    parser.add_argument("--sasrec_score", choices=("logit", "pmi"), default="logit",
                        help="the SASRec term: its log-probability (the logit reward's optimum) or that minus the "
                             "item's log share of the training targets (the pmi reward's)")
    args = parser.parse_args(argv)

    run_dir = Path(args.runs_dir) / args.run
    eval_dir, _ = finished_stage(run_dir, "eval_sft")
    if args.heldout:
        eval_dir = heldout_dir(args.runs_dir, args.run) / "eval_sft"
        if not (eval_dir / "predictions.json").is_file():
            raise InputError(f"{eval_dir / 'predictions.json'}: no held-out predictions; run "
                             f"python scripts/confirm_heldout.py --run {args.run} first")
    sasrec_dir, _ = finished_stage(run_dir, "sasrec")
    rows = json.loads((eval_dir / "predictions.json").read_text())
    model = sasrec.load_sasrec_checkpoint(sasrec_dir / "sasrec.pt")
    model.eval()
    with torch.no_grad():
        states, lengths = model.states_from_histories([row["history_item_id"] for row in rows])
        logp = torch.log_softmax(model.forward_eval(states, lengths).float(), dim=-1)
    if args.sasrec_score == "pmi":
        train_csv = json.loads((run_dir / "run.json").read_text())["dataset"]["train.csv"]
        logp = logp - item_log_prior(train_csv, model.item_num)
    ks = ks_up_to(len(rows[0]["predict"]))
    compared = (f"HR@{ks[-1]}", f"NDCG@{ks[-1]}") if ks[-1] < 10 else ("HR@10", "NDCG@10")
    base = reranked_ranks(rows, logp, 0.0)
    results = {}
    for lam in LAMBDAS:
        ranks = reranked_ranks(rows, logp, lam)
        metrics = hr_ndcg(ranks, ks)
        results[str(lam)] = {"metrics": metrics, "vs_sft": {
            metric: paired_bootstrap(per_row_metric(base, metric), per_row_metric(ranks, metric))
            for metric in compared}}
        print(f"lambda {lam}: " + ", ".join(f"{metric} {metrics[metric]:.4f}" for metric in compared))
    report = {"command": ["python", "scripts/sasrec_rerank.py", "--run", args.run,
                          *(["--heldout"] if args.heldout else []),
                          *(["--sasrec_score", args.sasrec_score] if args.sasrec_score != "logit" else [])],
              "commit": git_state()[0],
              "rows": len(rows), "beams": len(rows[0]["predict"]), "eval_sft": str(eval_dir),
              "sasrec": str(sasrec_dir), "sasrec_score": args.sasrec_score, "lambdas": results}
    suffix = ("-heldout" if args.heldout else "") + ("-pmi" if args.sasrec_score == "pmi" else "")
    out = Path(args.out_dir) / f"{args.run.replace('/', '-')}{suffix}-sasrec-rerank.json"
    data.write_json(report, out, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
