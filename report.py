"""The results of a pipeline run, for people: a table (markdown + JSON) comparing popularity,
SASRec, SFT and SFT+RL on the same test rows, a paired bootstrap of SFT+RL against SFT, and PNGs of
metric vs K and the training curves. Every file names the commit and the command that produced it.

    python report.py --run runs/ml100k-small/run.json --out_dir results/ml100k-small
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import data  # noqa: E402
import metrics  # noqa: E402
from runtime import ArgumentParser, reporting_input_errors  # noqa: E402

REPORT_KS = (1, 3, 5, 10, 20)
BOOTSTRAP_METRICS = ("HR@10", "NDCG@10")


def _load(path) -> dict | list | None:
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None


def row_ranks(predictions_path) -> tuple[list[str], np.ndarray]:
    """(target SID per test row, 0-based rank of the target in its row's list; -1 when absent)."""
    rows = _load(predictions_path)
    if not rows:
        raise ValueError(f"{predictions_path}: no prediction rows")
    predicted, targets = metrics.predicted_and_targets(rows)
    return targets, metrics.target_ranks(predicted, targets)


def per_row_metric(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Each row's HR@K (0/1) or NDCG@K, so that the mean is metrics.hr_ndcg's value."""
    name, k = metric.split("@")
    k = int(k)
    hit = (ranks >= 0) & (ranks < k)
    if name == "HR":
        return hit.astype(np.float64)
    return np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 0) + 2.0), 0.0)


def paired_bootstrap(base: np.ndarray, other: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of other - base over the same rows, and the 95% percentile interval of that difference
    under resampling rows with replacement (the same rows for both: paired)."""
    base, other = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if base.shape != other.shape or base.ndim != 1 or not base.size:
        raise ValueError(f"paired bootstrap needs two equal-length 1-d arrays, got {base.shape} and {other.shape}")
    diff = other - base
    rows = np.random.default_rng(seed).integers(0, diff.size, size=(n_boot, diff.size))
    means = diff[rows].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"diff": float(diff.mean()), "low": float(low), "high": float(high), "n_rows": int(diff.size),
            "n_boot": n_boot, "seed": seed}


def compare_predictions(base_path, other_path, metric_names=BOOTSTRAP_METRICS) -> dict[str, dict]:
    """{metric: paired_bootstrap(...)} of two predictions files over the same test rows."""
    base_targets, base_ranks = row_ranks(base_path)
    other_targets, other_ranks = row_ranks(other_path)
    if base_targets != other_targets:
        raise ValueError(f"{base_path} and {other_path} are not predictions for the same test rows in the same order")
    return {m: paired_bootstrap(per_row_metric(base_ranks, m), per_row_metric(other_ranks, m))
            for m in metric_names}


def collect_models(outputs: dict) -> dict[str, dict]:
    """{model name: metrics dict} from the files the pipeline stages wrote (run.json "outputs")."""
    models = {}
    sasrec = _load(outputs.get("sasrec_json"))
    if sasrec:
        models["Popularity"] = {**sasrec["popularity_test"], "invalid_predictions": 0}
        models["SASRec"] = {**sasrec["test"], "invalid_predictions": 0}
    for stage, label in (("eval_sft_dir", "SFT"), ("eval_rl_dir", "SFT+RL")):
        found = _load(Path(outputs[stage]) / "metrics.json") if stage in outputs else None
        if found:
            models[label] = found
    return models


def _curve(trainer_state: Path, keys):
    state = _load(trainer_state)
    if not state:
        return {}
    curves = {}
    for key in keys:
        points = [(h["step"], h[key]) for h in state["log_history"] if key in h]
        if points:
            curves[key] = points
    return curves


def plot_metrics_vs_k(models, ks, path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("HR", "NDCG")):
        for name, values in models.items():
            xs = [k for k in ks if f"{metric}@{k}" in values]
            ax.plot(xs, [values[f"{metric}@{k}"] for k in xs], marker="o", label=name)
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.set_xscale("log")
        ax.set_xticks(list(ks), [str(k) for k in ks])
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(curves: dict, title: str, path):
    if not curves:
        return False
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.6), squeeze=False)
    for ax, (key, points) in zip(axes[0], curves.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def format_interval(result: dict) -> str:
    return f"{result['diff']:+.4f} [{result['low']:+.4f}, {result['high']:+.4f}]"


def write_report(run_json, out_dir) -> dict:
    """results.md, results.json and PNGs of one run (pipeline.py's run.json) into out_dir."""
    run = _load(run_json)
    if run is None:
        raise FileNotFoundError(f"{run_json}: no run record (pipeline.py writes it)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = run["outputs"]
    models = collect_models(outputs)
    ks = [k for k in REPORT_KS if any(f"HR@{k}" in m for m in models.values())]
    rl_vs_sft = None
    if "eval_sft_dir" in outputs and "eval_rl_dir" in outputs:
        rl_vs_sft = compare_predictions(Path(outputs["eval_sft_dir"]) / "predictions.json",
                                        Path(outputs["eval_rl_dir"]) / "predictions.json")

    plots = []
    if models:
        plot_metrics_vs_k(models, ks, out_dir / "metrics_vs_k.png")
        plots.append("metrics_vs_k.png")
    if "sft_dir" in outputs and plot_curves(_curve(Path(outputs["sft_dir"]) / "trainer_state.json",
                                                   ("loss", "eval_loss")), "SFT", out_dir / "sft_curves.png"):
        plots.append("sft_curves.png")
    if "rl_dir" in outputs and plot_curves(_curve(Path(outputs["rl_dir"]) / "trainer_state.json",
                                                  ("loss", "reward", "frac_reward_zero_std", "kl")),
                                           "RL (GRPO)", out_dir / "rl_curves.png"):
        plots.append("rl_curves.png")

    timings = {name: stage["seconds"] for name, stage in run["stages"].items()}
    n_rows = [m["n_rows"] for m in models.values() if m.get("n_rows")]
    rows = "validation rows" if run.get("eval_split") == "valid" else "test rows"
    lines = [
        f"# Results: {run['run']}",
        "",
        f"Command: `python {' '.join(run['command'])}` at commit {run['commit']}; profile "
        f"{run['profile']['name']}; {rows}: {max(n_rows, default='?')}. Every model is scored on the "
        f"same {rows} with the same metric code (metrics.py).",
        "",
        metrics.format_table(models, ks),
        "",
    ]
    if rl_vs_sft:
        lines += [f"SFT+RL minus SFT, paired bootstrap over the same {rows} (2000 resamples), 95% interval:", "",
                  "| metric | difference [95% interval] |", "|---|---|",
                  *[f"| {m} | {format_interval(r)} |" for m, r in rl_vs_sft.items()], ""]
    lines += [
        "| model | invalid predictions |",
        "|---|---|",
        *[f"| {name} | {m.get('invalid_predictions', '-')} |" for name, m in models.items()],
        "",
        "| stage | wall time (s) | |",
        "|---|---|---|",
        *[f"| {name} | {stage['seconds']:.0f} | {'reused' if stage['reused'] else 'ran'} |"
          for name, stage in run["stages"].items()],
        "",
        *[f"![{p}]({p})" for p in plots],
        "",
    ]
    with data.atomic_write(out_dir / "results.md") as f:
        f.write("\n".join(lines))
    summary = {"run": run["run"], "command": run["command"], "commit": run["commit"],
               "changed_files": run.get("changed_files", []), "profile": run["profile"],
               "category": run["category"], "eval_split": run.get("eval_split", "test"), "models": models,
               "ks": ks, "rl_vs_sft": rl_vs_sft,
               "timings_s": timings, "total_s": sum(timings.values()), "plots": plots}
    data.write_json(summary, out_dir / "results.json", indent=2)
    return summary


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="run.json of a pipeline run (runs/<run>/run.json)")
    parser.add_argument("--out_dir", required=True, help="folder for results.md, results.json and the PNGs")
    a = parser.parse_args()
    reporting_input_errors(write_report, a.run, a.out_dir)
    print((Path(a.out_dir) / "results.md").read_text())
