"""Cut a test CSV into one chunk per evaluation process (the original evaluate.sh's first step).

    python split.py --input_path test.csv --output_path temp/Office --cuda_list "0,1,2,3"

writes temp/Office/0.csv .. 3.csv: consecutive, near-equal row ranges, each with the input's row
number as an unnamed first column (as the original's split.py writes them).
"""

from __future__ import annotations

from prep.shards import shard_names, split_csv
from runtime import ArgumentParser, run_main


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--input_path", required=True, help="the split CSV to cut (e.g. a test CSV)")
    parser.add_argument("--output_path", required=True, help="folder for the chunks <name>.csv (created)")
    parser.add_argument("--cuda_list", required=True,
                        help='chunk names, one per process: "0,1,2,3", "0 1 2 3" or "[0,1]"')
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    paths = split_csv(args.input_path, args.output_path, shard_names(args.cuda_list))
    print(f"wrote {len(paths)} chunks of {args.input_path} into {args.output_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
