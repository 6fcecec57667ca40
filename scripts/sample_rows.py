"""A seeded sample of a split CSV's rows (the pipeline's test sample: every model is scored on the
same rows, and beam search over every test row would dominate a CPU run).

    python scripts/sample_rows.py --input test.csv --output test_sample.csv --rows 2000 --seed 42
"""

from __future__ import annotations

import random

import data
from runtime import ArgumentParser, run_main


def build_parser():
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True, help="split CSV to sample from")
    parser.add_argument("--output", required=True, help="split CSV written (atomically)")
    parser.add_argument("--rows", type=int, required=True, help="rows kept (all when the file has fewer; -1: all)")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the sample")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    rows = data.read_split_csv(args.input)
    if 0 <= args.rows < len(rows):
        rows = random.Random(args.seed).sample(rows, args.rows)
    data.write_split_csv(rows, args.output)
    print(f"{args.output}: {len(rows)} rows")


if __name__ == "__main__":
    run_main(main)
