"""Amazon Review Data (2018) raw files -> item.json + train/valid/test `.inter` (prep/amazon18.py
does the work). Two command lines, one script:

the original's (its flags and defaults; files as it names them, under <output_path>/<dataset>/:
<dataset>.item.json, <dataset>.{train,valid,test}.inter, <dataset>.item2id, .user2id, .inter.json):
    python data/amazon18_data_process.py --dataset Office_Products --metadata_file meta_Office_Products.json \
        --reviews_file Office_Products_5.json --st_year 2017 --ed_month 11 --output_path ./data/Amazon18

ours (one folder, our names: item.json, train.inter, ...):
    python data/amazon18_data_process.py --reviews_file R --metadata_file M --output_dir DIR

Then rq/build_sids.py (SIDs from item.json) and convert_dataset.py (split CSVs).
"""

from __future__ import annotations

import logging
from pathlib import Path

from prep.amazon18 import original_input_files, prepare_amazon18
from prep.layout import DatasetFiles
from runtime import ArgumentParser, InputError, positive_int, run_main


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="Arts",
                        help="dataset (category) name: names the output folder and files, and the default input files")
    parser.add_argument("--reviews_file", default=None,
                        help="reviews JSON lines (.json or .json.gz); default ../<dataset>_5.json, else ../<dataset>.json")
    parser.add_argument("--metadata_file", default=None,
                        help="metadata JSON lines (.json or .json.gz); default ../meta_<dataset>.json")
    parser.add_argument("--output_path", default="./data",
                        help="the original's layout: files go to <output_path>/<dataset>/<dataset>.*")
    parser.add_argument("--output_dir", default=None,
                        help="our layout instead: item.json, train/valid/test.inter, ... directly in this folder")
    parser.add_argument("--st_year", type=int, default=1996, help="time window start year")
    parser.add_argument("--st_month", type=int, default=10, help="time window start month (from its first day)")
    parser.add_argument("--ed_year", type=int, default=2018, help="time window end year")
    parser.add_argument("--ed_month", type=int, default=11, help="time window end month (up to its first day)")
    parser.add_argument("--user_k", type=positive_int, default=5, help="k-core: minimum interactions per user")
    parser.add_argument("--item_k", type=positive_int, default=5, help="k-core: minimum interactions per item")
    parser.add_argument("--max_history", type=positive_int, default=10, help="most history items per window")
    parser.add_argument("--min_items", type=int, default=3000,
                        help="while fewer items survive and st_year > 1996, start the window a year earlier "
                             "(the original's rule; 0 turns it off)")
    return parser


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output_dir and args.output_path != parser.get_default("output_path"):
        raise InputError("give --output_path (the original's layout) or --output_dir (ours), not both")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    default_reviews, default_metadata = original_input_files(args.dataset)
    if args.output_dir:
        files = DatasetFiles(Path(args.output_dir))
    else:
        files = DatasetFiles(Path(args.output_path) / args.dataset, args.dataset)
    return prepare_amazon18(args.reviews_file or default_reviews, args.metadata_file or default_metadata, files,
                            args.st_year, args.st_month, args.ed_year, args.ed_month, args.user_k, args.item_k,
                            args.max_history, args.min_items)


if __name__ == "__main__":
    run_main(lambda: main() and None)
