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
    parser.add_argument("--complement", action="store_true",
                        help="write the rows the sample leaves out instead, in file order (held-out rows for a "
                             "confirmation after choosing settings on the sample)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    rows = data.read_split_csv(args.input)
    if 0 <= args.rows < len(rows):
        chosen = random.Random(args.seed).sample(range(len(rows)), args.rows)
        if args.complement:
            left_out = set(range(len(rows))) - set(chosen)
            rows = [row for i, row in enumerate(rows) if i in left_out]
        else:
            rows = [rows[i] for i in chosen]
    elif args.complement:
        rows = []
    data.write_split_csv(rows, args.output)
    print(f"{args.output}: {len(rows)} rows")


if __name__ == "__main__":
    run_main(main)
