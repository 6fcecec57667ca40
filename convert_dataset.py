"""A prepared dataset (`.inter` splits + index.json + item.json) -> the split CSVs + info file that
sft.py, rl.py and evaluate.py read (prep/convert.py does the work). Two command lines, one script:

the original's (reads DATA_DIR/<dataset_name>.{train,valid,test}.inter, .index.json, .item.json;
writes OUTPUT_DIR/{train,valid,test}/<category>_5_2016-10-2018-11.csv, OUTPUT_DIR/info/<category>_5_2016-10-2018-11.txt
and, so OUTPUT_DIR is all sft.sh / rl.sh need, OUTPUT_DIR/index/<category>.index.json and .item.json):
    python convert_dataset.py --dataset_name Industrial_and_Scientific \
        --data_dir data/Amazon18/Industrial_and_Scientific --output_dir data/Amazon

ours (reads DATA_DIR/{train,valid,test}.inter, index.json, item.json; writes {train,valid,test}.csv
and info.txt into --output_dir, default DATA_DIR):
    python convert_dataset.py --data_dir DIR
"""

from __future__ import annotations

import logging

from prep.convert import ORIGINAL_DEFAULT_DATASET, convert_dataset
from runtime import ArgumentParser, positive_int, run_main


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", required=True, help="folder of the prepared dataset (.inter files, index, items)")
    parser.add_argument("--dataset_name", default=None,
                        help="the original's layout: read DATA_DIR/<dataset_name>.* (default: our layout when "
                             f"DATA_DIR/train.inter exists, else {ORIGINAL_DEFAULT_DATASET} as the original)")
    parser.add_argument("--output_dir", default=None,
                        help="where the split CSVs go (default: DATA_DIR; required with the original's layout)")
    parser.add_argument("--category", default=None,
                        help="category in the output file names (original layout; default: --dataset_name)")
    parser.add_argument("--index_path", default=None, help="index.json with the SIDs (default: the dataset's)")
    parser.add_argument("--item_meta_path", default=None, help="item.json (default: the dataset's)")
    parser.add_argument("--max_valid_samples", type=positive_int, default=None,
                        help="keep a random sample of this many validation rows (default: all)")
    parser.add_argument("--max_test_samples", type=positive_int, default=None,
                        help="keep a random sample of this many test rows (default: all)")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the row samples")
    parser.add_argument("--keep_longest_only", action="store_true", default=False,
                        help="keep only each user's longest training window")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return convert_dataset(args.data_dir, args.output_dir, args.index_path, args.item_meta_path, args.dataset_name,
                           args.category, args.max_valid_samples, args.max_test_samples, args.seed,
                           args.keep_longest_only)


if __name__ == "__main__":
    run_main(lambda: main() and None)
