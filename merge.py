"""Merge the per-process predictions of an evaluation into one file (the original evaluate.sh's
step after evaluate.py).

    python merge.py --input_path temp/Office --output_path results/final_result_Office.json --cuda_list "0,1"

reads temp/Office/0.json, 1.json (JSON lists of prediction rows) and writes their rows, in
--cuda_list order, as one JSON list.
"""

from __future__ import annotations

from prep.shards import merge_predictions, shard_names
from runtime import ArgumentParser, run_main


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--input_path", required=True, help="folder holding the chunks' <name>.json")
    parser.add_argument("--output_path", required=True, help="the merged predictions JSON")
    parser.add_argument("--cuda_list", required=True, help='chunk names in merge order: "0,1,2" or "0 1 2"')
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    n_rows = merge_predictions(args.input_path, args.output_path, shard_names(args.cuda_list))
    print(f"merged {n_rows} rows into {args.output_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
