"""The results of a pipeline run, for people: a table (markdown + JSON) comparing popularity,
SASRec, SFT and SFT+RL on the same test rows, and PNGs of metric vs K and the training curves.

    python report.py --run_dir runs/ml100k-small
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import data  # noqa: E402
from metrics import format_table  # noqa: E402

REPORT_KS = (1, 3, 5, 10, 20)


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def collect_models(run_dir: Path) -> dict[str, dict]:
    """{model name: metrics dict} from the files the pipeline stages wrote."""
    models = {}
    sasrec = _load(run_dir / "baselines" / "sasrec.json")
    if sasrec:
        models["Popularity"] = {**sasrec["popularity_test"], "invalid_predictions": 0}
        models["SASRec"] = {**sasrec["test"], "invalid_predictions": 0}
    for name, label in (("sft", "SFT"), ("rl", "SFT+RL")):
        found = _load(run_dir / "eval" / f"{name}_metrics.json")
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
        for name, metrics in models.items():
            xs = [k for k in ks if f"{metric}@{k}" in metrics]
            ax.plot(xs, [metrics[f"{metric}@{k}"] for k in xs], marker="o", label=name)
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


def write_report(run_dir, out_dir, timings: dict | None = None, backbone: str = ""):
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if timings is None:
        timings = {p.stem: json.loads(p.read_text())["seconds"] for p in sorted((run_dir / ".done").glob("*.json"))}
    models = collect_models(run_dir)
    ks = [k for k in REPORT_KS if any(f"HR@{k}" in m for m in models.values())]

    plot_metrics_vs_k(models, ks, out_dir / "metrics_vs_k.png")
    plots = ["metrics_vs_k.png"]
    if plot_curves(_curve(run_dir / "sft" / "trainer_state.json", ("loss", "eval_loss")),
                   "SFT", out_dir / "sft_curves.png"):
        plots.append("sft_curves.png")
    if plot_curves(_curve(run_dir / "rl" / "trainer_state.json",
                          ("loss", "reward", "frac_reward_zero_std", "kl")),
                   "RL (GRPO)", out_dir / "rl_curves.png"):
        plots.append("rl_curves.png")

    n_rows = {name: m.get("n_rows") for name, m in models.items()}
    lines = [
        f"# Results: {run_dir.name}",
        "",
        f"Backbone: {backbone or 'see run'}; test rows: {max(filter(None, n_rows.values()), default='?')}; "
        "all models scored on the same test rows with the same metric code (metrics.py).",
        "",
        format_table(models, ks),
        "",
        "| model | invalid predictions |",
        "|---|---|",
        *[f"| {name} | {m.get('invalid_predictions', '-')} |" for name, m in models.items()],
        "",
        "| stage | wall time (s) |",
        "|---|---|",
        *[f"| {stage} | {seconds:.0f} |" for stage, seconds in timings.items()],
        "",
        *[f"![{p}]({p})" for p in plots],
        "",
    ]
    with data.atomic_write(out_dir / "results.md") as f:
        f.write("\n".join(lines))
    data.write_json({"models": models, "ks": ks, "timings_s": timings, "backbone": backbone, "plots": plots},
                    out_dir / "results.json", indent=2)
    return models


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--out_dir", default=None, help="default: RUN_DIR/results")
    a = parser.parse_args()
    write_report(a.run_dir, a.out_dir or Path(a.run_dir) / "results")
    print((Path(a.out_dir or Path(a.run_dir) / "results") / "results.md").read_text())
