"""The README's results, rendered from the committed results files (never typed by hand): one
section per pipeline run (results/<run>/results.json) and per ablation
(results/ablations/<grid>/results.json), each naming the command and the commit it came from.

    python scripts/readme_results.py                         # print the Markdown
    python scripts/readme_results.py --write README.md       # replace the text between the markers
    python scripts/readme_results.py --check README.md       # exit 1 when the file is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
START = "<!-- results:start -->"
END = "<!-- results:end -->"
KS = (5, 10, 20)


def _short(commit: str) -> str:
    return commit[:10] + ("-dirty" if commit.endswith("-dirty") else "")


def run_section(path: Path) -> list[str]:
    result = json.loads(path.read_text())
    models = result["models"]
    ks = [k for k in KS if k in result["ks"]]
    cols = [f"HR@{k}" for k in ks] + [f"NDCG@{k}" for k in ks]
    lines = [f"#### {result['run']}", "",
             f"`python {' '.join(result['command'])}` (profile {result['profile']['name']}, commit "
             f"{_short(result['commit'])}, {result['total_s'] / 60:.1f} min of stage wall time; "
             f"[{path.relative_to(REPO)}]({path.relative_to(REPO)}))", "",
             "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, values in models.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[c]:.4f}" if c in values else "-" for c in cols) + " |")
    if "SASRec" in models and "SFT" in models:
        lines += ["", f"SFT reaches {models['SFT']['HR@10'] / models['SASRec']['HR@10']:.0%} of SASRec's HR@10."]
    if result.get("rl_vs_sft"):
        cells = [f"{m} {r['diff']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]" for m, r in result["rl_vs_sft"].items()]
        lines += ["", "SFT+RL minus SFT (paired bootstrap over the same test rows, 95% interval): "
                  + "; ".join(cells) + "."]
    return lines + [""]


def ablation_section(path: Path) -> list[str]:
    result = json.loads(path.read_text())
    table = (path.parent / "table.md").read_text().split("\n")
    # the table lines of table.md (its header names the command and commit already)
    rows = [line for line in table if line.startswith("|")]
    return [f"#### Ablation: {result['grid']['name']}", "", result["grid"].get("description", ""), "",
            f"`{result['command']}` (commits {', '.join(_short(c) for c in result['commits'])}; "
            f"[{path.relative_to(REPO)}]({path.relative_to(REPO)}))", "", *rows, ""]


def render(results_dir: Path = RESULTS) -> str:
    lines = []
    for path in sorted(results_dir.glob("*/results.json")):
        if path.parent.name != "ablations":
            lines += run_section(path)
    for path in sorted((results_dir / "ablations").glob("*/results.json")):
        lines += ablation_section(path)
    return "\n".join(lines).rstrip() + "\n"


def replaced(text: str, rendered: str, name: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"{name}: no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{rendered}{END}{tail}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results_dir", default=None, help="folder of the committed results files (default: results/)")
    parser.add_argument("--write", default=None, help="replace the text between the results markers of this file")
    parser.add_argument("--check", default=None, help="exit 1 when this file's results section is out of date")
    args = parser.parse_args(argv)
    rendered = render(Path(args.results_dir) if args.results_dir else RESULTS)
    if args.write:
        path = Path(args.write)
        path.write_text(replaced(path.read_text(), rendered, args.write))
    elif args.check:
        path = Path(args.check)
        if replaced(path.read_text(), rendered, args.check) != path.read_text():
            print(f"{args.check}: results section out of date; run scripts/readme_results.py --write {args.check}")
            return 1
    else:
        sys.stdout.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
