"""HR@K and NDCG@K of predictions files (the paper's definition; metrics.py), as a table, JSON and PNG.

    python calc.py --path results/final_result_Office_Products.json --item_path data/info.txt

A predictions file is a JSON list of test rows, each with "output" (the target SID; the original's
files may hold it with its trailing newline and quotes, or as a one-element list) and "predict" (ranked
SIDs): files of the original evaluate.py and of ours read alike. K runs over {1,3,5,10,20,50}, those
not above the beam count (the shortest "predict" list). Invalid predictions (SIDs not in
`--item_path`, an info.txt) and repeated SIDs within one list are counted; both must be 0 for a
constrained decoder, so a non-zero count fails the run unless --allow_invalid.

Writes <path stem>_metrics.json and <path stem>_metrics.png next to the first --path unless
--out_json / --out_png say otherwise. From Python: `metrics.compute_metrics(predictions, valid_sids, ks)`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import data
import metrics
from runtime import ArgumentParser, InputError, run_main


def load_predictions(path) -> list:
    """The rows of a predictions JSON (a list); a missing, truncated or non-list file is an
    InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--path {path}: predictions file not found")
    try:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    except json.JSONDecodeError as err:
        raise data.DataFormatError(
            path, f"invalid JSON ({err.msg}); an evaluation cut short leaves a truncated file: run it again",
            line=err.lineno,
        ) from None
    except UnicodeDecodeError as err:
        raise data.DataFormatError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not isinstance(rows, list):
        raise data.DataFormatError(path, "expected a JSON list of prediction rows")
    return rows


def metrics_of_file(path, valid_sids) -> dict:
    """compute_metrics of one predictions file; a bad row is an InputError naming the file."""
    try:
        return metrics.compute_metrics(load_predictions(path), valid_sids)
    except data.DataFormatError:
        raise
    except InputError as err:
        raise InputError(f"{path}: {err}") from None


def plot_metrics(results: dict, path) -> None:
    """PNG of HR@K and NDCG@K against K, one line per predictions file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, res in results.items():
        label = Path(name).stem
        for ax, metric in zip(axes, ("HR", "NDCG")):
            ys = [res[f"{metric}@{k}"] for k in res["ks"]]
            ax.plot(res["ks"], ys, marker="o", label=label)
            for k, y in zip(res["ks"], ys):
                ax.annotate(f"{y:.3f}", (k, y), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
    for ax, metric in zip(axes, ("HR", "NDCG")):
        ax.set_xscale("log")
        ks = sorted({k for res in results.values() for k in res["ks"]})
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.set_title(f"{metric}@K")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    n = next(iter(results.values()))
    fig.suptitle(f"{len(results)} run(s); {n['n_rows']} test rows, {n['num_beams']} beams")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with data.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--path", nargs="+", required=True, help="predictions JSON file(s) (evaluate.py output)")
    parser.add_argument("--item_path", required=True, help="info.txt of the catalogue (SID<TAB>title<TAB>item_id); the \".txt\" may be left off")
    parser.add_argument("--out_json", default=None, help="metrics JSON (default: <path stem>_metrics.json)")
    parser.add_argument("--out_png", default=None, help="metrics plot (default: <path stem>_metrics.png)")
    parser.add_argument("--allow_invalid", action="store_true", help="exit 0 even with invalid/repeated predictions")
    args = parser.parse_args(argv)

    # the original's calc.py takes the info file with or without its ".txt"
    item_path = args.item_path if Path(args.item_path).is_file() else f"{args.item_path}.txt"
    if not Path(item_path).is_file():
        raise InputError(f"--item_path {args.item_path}: not found (nor with .txt)")
    valid_sids = {sid for sid, _, _ in data.read_info(item_path)}
    results = {p: metrics_of_file(p, valid_sids) for p in args.path}
    ks = sorted({k for r in results.values() for k in r["ks"]})
    print(metrics.format_table({Path(p).name: r for p, r in results.items()}, ks))
    bad = False
    for p, r in results.items():
        print(f"{Path(p).name}: {r['n_rows']} rows, {r['num_beams']} beams, "
              f"invalid predictions {r['invalid_predictions']}, repeated predictions {r['duplicate_predictions']}")
        bad |= bool(r["invalid_predictions"] or r["duplicate_predictions"])
    first = Path(args.path[0])
    out_json = args.out_json or str(first.with_name(first.stem + "_metrics.json"))
    out_png = args.out_png or str(first.with_name(first.stem + "_metrics.png"))
    data.write_json(results if len(results) > 1 else next(iter(results.values())), out_json, indent=2)
    plot_metrics(results, out_png)
    print(f"saved {out_json} and {out_png}")
    if bad and not args.allow_invalid:
        print("ERROR: predictions outside the catalogue or repeated within a list (must be 0)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
