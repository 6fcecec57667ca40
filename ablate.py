"""Ablations as a tool: a grid of pipeline flag variants x seeds, one table and one plot.

    python ablate.py --grid config/ablations/rl_reward.json
    python ablate.py --grid config/ablations/rl_rollout.json --seeds 42,43

A grid is a JSON file:

    {"description": "...",
     "pipeline": ["--profile", "small"],          # pipeline.py flags every variant shares
     "model": "SFT+RL",                            # the model compared: SFT or SFT+RL
     "seeds": [42, 43, 44],
     "seed_flags": ["rl.seed"],                    # profile flags the seed sets (--set rl.seed=43)
     "metrics": ["HR@10", "NDCG@10"],
     "variants": {"ranking": [], "rule": ["--set", "rl.reward_type=rule"]}}

Each (variant, seed) is one pipeline.py run (`runs/ablations/<grid>/<variant>/seed<seed>`); the
pipeline's stage store reuses every stage two cells share (the variants of an RL grid train one
SFT), and finished stages are skipped, so an interrupted grid resumes where it stopped. The table
(`results/ablations/<grid>/table.md`, `results.json`, `plot.png`) gives per variant and metric the
mean over seeds with its 95% interval (Student t over seeds; with one seed, a bootstrap over test
rows), and the difference to the first variant: per row averaged over seeds, then a paired
bootstrap over the same test rows (95% interval).
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import sys
from pathlib import Path

import matplotlib
import numpy as np
from scipy import stats
from tqdm import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import data  # noqa: E402
import pipeline  # noqa: E402
from report import paired_bootstrap, per_row_metric, row_ranks  # noqa: E402
from runtime import ArgumentParser, InputError, run_main  # noqa: E402

REPO = Path(__file__).resolve().parent
MODEL_STAGES = {"SFT": ("eval_sft", "eval_sft_dir"), "SFT+RL": ("eval_rl", "eval_rl_dir")}
logger = logging.getLogger("ablate")


def load_grid(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--grid {path}: not found (grids: {', '.join(sorted(p.name for p in (REPO / 'config' / 'ablations').glob('*.json')))})")
    grid = json.loads(path.read_text())
    for key in ("pipeline", "model", "seeds", "seed_flags", "metrics", "variants"):
        if key not in grid:
            raise InputError(f"--grid {path}: no {key!r} field")
    if grid["model"] not in MODEL_STAGES:
        raise InputError(f"--grid {path}: model {grid['model']!r} is not one of {', '.join(MODEL_STAGES)}")
    if not grid["variants"]:
        raise InputError(f"--grid {path}: no variants")
    grid["name"] = path.stem
    return grid


def cell_argv(grid: dict, variant: str, seed: int, runs_dir: Path) -> list[str]:
    """pipeline.py flags of one (variant, seed) cell."""
    until, _ = MODEL_STAGES[grid["model"]]
    argv = [*grid["pipeline"], *grid["variants"][variant]]
    for flag in grid["seed_flags"]:
        argv += ["--set", f"{flag}={seed}"]
    return argv + ["--run", f"{grid['name']}/{variant}/seed{seed}", "--runs_dir", str(runs_dir),
                   "--results_dir", str(runs_dir / "reports"), "--until", until]


def interval(values: list[float], row_samples: np.ndarray | None = None) -> tuple[float, float, float]:
    """(mean, low, high): Student t 95% interval over seeds; one seed: bootstrap over its rows."""
    mean = float(np.mean(values))
    if len(values) > 1:
        half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
        return mean, mean - half, mean + half
    result = paired_bootstrap(np.zeros_like(row_samples), row_samples)
    return mean, result["low"], result["high"]


def summarise(grid: dict, cells: dict[tuple[str, int], dict]) -> dict:
    """Per variant and metric: seeds' values, mean and 95% interval, and the paired difference to
    the first variant over the test rows (per-row values averaged over seeds)."""
    stage, output_key = MODEL_STAGES[grid["model"]]
    variants = list(grid["variants"])

    def seed_averaged(variant: str, key: str) -> dict:
        """Per-row metric values averaged over the variant's seeds, and each seed's mean."""
        rows = []
        for seed in grid["seeds"]:
            targets, ranks = row_ranks(Path(cells[variant, seed]["outputs"][key]) / "predictions.json")
            rows.append({"targets": targets, **{m: per_row_metric(ranks, m) for m in grid["metrics"]}})
        if any(r["targets"] != rows[0]["targets"] for r in rows):
            raise ValueError(f"variant {variant}: seeds were scored on different test rows")
        return {"targets": rows[0]["targets"],
                **{m: np.mean([r[m] for r in rows], axis=0) for m in grid["metrics"]},
                "seeds": {m: [float(r[m].mean()) for r in rows] for m in grid["metrics"]}}

    @functools.cache  # the reference's rows are compared with every other variant's
    def test_rows(variant: str) -> tuple | None:
        """The test rows a variant was scored on, by user and item (not by SID: a grid over SID
        methods scores the same rows under other SIDs), when its run recorded its test sample."""
        stages = cells[variant, grid["seeds"][0]].get("stages", {})
        if "test_sample" not in stages:
            return None
        sample = Path(stages["test_sample"]["dir"]) / "test.csv"
        return tuple((row.user_id, row.item_id) for row in data.read_split_csv(sample))

    per_row = {variant: seed_averaged(variant, output_key) for variant in variants}
    reference = variants[0]
    summary = {}
    for variant in variants:
        same_rows = (per_row[variant]["targets"] == per_row[reference]["targets"]
                     or test_rows(variant) is not None and test_rows(variant) == test_rows(reference))
        if not same_rows:
            raise ValueError(f"variants {reference} and {variant} were scored on different test rows")
        # an RL variant against its own starting point: the SFT model of the same cells
        sft = seed_averaged(variant, "eval_sft_dir") if grid["model"] == "SFT+RL" else None
        entry = {"seeds": grid["seeds"], "runs": [cells[variant, s]["run_dir"] for s in grid["seeds"]],
                 "train_seconds": float(np.mean([cells[variant, s]["stages"][stage.removeprefix("eval_")]["seconds"]
                                                 for s in grid["seeds"]]))}
        for m in grid["metrics"]:
            mean, low, high = interval(per_row[variant]["seeds"][m], per_row[variant][m])
            entry[m] = {"per_seed": per_row[variant]["seeds"][m], "mean": mean, "low": low, "high": high}
            if variant != reference:
                entry[m]["vs_reference"] = paired_bootstrap(per_row[reference][m], per_row[variant][m])
            if sft is not None:
                entry[m]["vs_sft"] = paired_bootstrap(sft[m], per_row[variant][m])
        summary[variant] = entry
    return summary


def _difference(d: dict | None) -> str:
    return f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" if d else "reference"


def format_table(grid: dict, summary: dict) -> str:
    reference = next(iter(summary))
    metrics = grid["metrics"]
    versus_sft = grid["model"] == "SFT+RL"
    header = ["variant", *[f"{m} mean [95%]" for m in metrics], *[f"{m} vs {reference} [95%]" for m in metrics],
              *([f"{m} vs SFT [95%]" for m in metrics] if versus_sft else []), "training s"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for variant, entry in summary.items():
        cells = [f"{entry[m]['mean']:.4f} [{entry[m]['low']:.4f}, {entry[m]['high']:.4f}]" for m in metrics]
        cells += [_difference(entry[m].get("vs_reference")) for m in metrics]
        cells += [_difference(entry[m]["vs_sft"]) for m in metrics] if versus_sft else []
        cells.append(f"{entry['train_seconds']:.0f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(grid: dict, summary: dict, path: Path):
    metrics = grid["metrics"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8), squeeze=False)
    names = list(summary)
    for ax, m in zip(axes[0], metrics):
        means = np.array([summary[v][m]["mean"] for v in names])
        errors = np.array([[means[i] - summary[v][m]["low"], summary[v][m]["high"] - means[i]]
                           for i, v in enumerate(names)]).T
        ax.bar(range(len(names)), means, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
        for i, v in enumerate(names):
            ax.scatter([i] * len(summary[v][m]["per_seed"]), summary[v][m]["per_seed"], color="black", s=10, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(f"{grid['model']} {m}")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{grid['name']}: mean over seeds {grid['seeds']}, 95% interval, seeds as dots")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser():
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--grid", required=True, help="grid JSON (config/ablations/*.json)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds instead of the grid's")
    parser.add_argument("--variants", default=None, help="comma-separated variants to run (default: all)")
    parser.add_argument("--pipeline_args", default="",
                        help="more pipeline.py flags for every cell, e.g. \"--data_dir DIR --category NAME\" "
                             "(the grid on another dataset)")
    parser.add_argument("--name", default=None,
                        help="name of the ablation's runs and table folder (default: the grid file's name)")
    parser.add_argument("--runs_dir", default=None,
                        help="runs and stage store (default: runs/ beside ablate.py, shared with pipeline.py)")
    parser.add_argument("--out_dir", default=None, help="table and plot (default: results/ablations/<grid>)")
    parser.add_argument("--nproc", type=int, default=None, help="processes per stage (default: pipeline.py's)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    grid = load_grid(args.grid)
    grid["pipeline"] = grid["pipeline"] + shlex.split(args.pipeline_args)
    grid["name"] = args.name or grid["name"]
    if args.seeds:
        grid["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.variants:
        chosen = args.variants.split(",")
        unknown = [v for v in chosen if v not in grid["variants"]]
        if unknown:
            raise InputError(f"--variants: {', '.join(unknown)} not in the grid ({', '.join(grid['variants'])})")
        grid["variants"] = {v: grid["variants"][v] for v in chosen}
    runs_dir = Path(args.runs_dir or REPO / "runs").resolve()
    out_dir = Path(args.out_dir or REPO / "results" / "ablations" / grid["name"])

    cells = {}
    todo = [(variant, seed) for variant in grid["variants"] for seed in grid["seeds"]]
    for variant, seed in tqdm(todo, desc=f"ablation {grid['name']}", unit="run"):
        argv_cell = cell_argv(grid, variant, seed, runs_dir)
        if args.nproc:
            argv_cell += ["--nproc", str(args.nproc)]
        logger.info("%s seed %d: pipeline.py %s", variant, seed, " ".join(argv_cell))
        pipeline.run(argv_cell)
        run_dir = runs_dir / grid["name"] / variant / f"seed{seed}"
        record = json.loads((run_dir / "run.json").read_text())
        cells[variant, seed] = {"run_dir": str(run_dir), "outputs": record["outputs"], "commit": record["commit"],
                                "stages": record["stages"]}

    summary = summarise(grid, cells)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(grid, summary, out_dir / "plot.png")
    commits = sorted({cell["commit"] for cell in cells.values()})
    command = "python ablate.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = format_table(grid, summary)
    lines = [f"# Ablation: {grid['name']}", "", grid.get("description", ""), "",
             f"Command: `{command}` at commit {', '.join(commits)}; model compared: {grid['model']}; "
             f"seeds {grid['seeds']}; pipeline flags `{' '.join(grid['pipeline'])}`.", "",
             table, "", "Variants (pipeline.py flags):", "",
             *[f"- {v}: `{' '.join(flags) or '(the profile as is)'}`" for v, flags in grid["variants"].items()],
             "", "![plot](plot.png)", ""]
    with data.atomic_write(out_dir / "table.md") as f:
        f.write("\n".join(lines))
    data.write_json({"grid": grid, "command": command, "commits": commits, "summary": summary},
                    out_dir / "results.json", indent=2)
    print(table)
    return summary


if __name__ == "__main__":
    run_main(lambda: main() and None)
