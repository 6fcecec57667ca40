"""Amazon Review Data (2018) raw files -> item.json + train/valid/test `.inter` (the documents'
`amazon18_data_process` step).

Inputs are the category's review and metadata files, JSON lines, plain or gzip:
  reviews  e.g. Office_Products.json.gz       {"reviewerID", "asin", "unixReviewTime", ...}
  metadata e.g. meta_Office_Products.json.gz  {"asin", "title", "description", "brand", "category"}
Reviews outside [start, end) of the time window are dropped; so are items whose title is missing,
is HTML, is a single character or has more than 20 words (the documents' title rules). Then the
shared recipe of data/interactions.py: 5-core, chronological windows of at most 10 items, one
global 8:1:1 time split.

Pipeline (from the repository root):
    python data/amazon18_data_process.py --reviews_file R --metadata_file M --output_dir DIR
    python rq/build_sids.py --item_meta_path DIR/item.json --output_dir DIR
    python data/convert_dataset.py --data_dir DIR
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import html
import json
import logging
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

import data  # noqa: E402
import interactions  # noqa: E402  (data/interactions.py: this script's folder is on sys.path)

logger = logging.getLogger("amazon18_data_process")

HTML_TAG = re.compile(r"<[^>]+>")
MAX_TITLE_WORDS = 20


def clean_text(text) -> str:
    """Text without HTML tags or entities, whitespace collapsed; lists are joined with spaces."""
    if isinstance(text, list):
        text = " ".join(str(t) for t in text)
    text = html.unescape(HTML_TAG.sub(" ", str(text or "")))
    return " ".join(text.split())


def json_lines(path, desc):
    """(line number, parsed object) of a JSON-lines file, gzip or plain; a bad line is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(tqdm(f, desc=desc, unit=" lines", mininterval=2), start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                raise data.DataFormatError(path, f"invalid JSON: {err.msg}", line=line_no) from None


def item_fields(meta: dict) -> dict | None:
    """The item.json entry of one metadata record, or None when its title is unusable."""
    raw_title = meta.get("title")
    if not isinstance(raw_title, str) or "<span id" in raw_title:
        return None
    title = clean_text(raw_title).strip('"')
    if len(title) <= 1 or len(title.split()) > MAX_TITLE_WORDS:
        return None
    # the 2018 dump calls the category path "category"; older dumps used "categories"
    categories = meta.get("category", meta.get("categories")) or []
    flat = [c for group in categories for c in (group if isinstance(group, list) else [group])]
    return {
        "title": title,
        "description": clean_text(meta.get("description")),
        "brand": clean_text(meta.get("brand")).removeprefix("by ").strip(),
        "categories": ", ".join(c for c in map(clean_text, flat) if c and "</span>" not in c),
    }


def read_metadata(path) -> dict[str, dict]:
    """item.json entries keyed by ASIN, for items with a usable title."""
    item_meta = {}
    for line_no, meta in json_lines(path, "metadata"):
        if "asin" not in meta:
            raise data.DataFormatError(path, "record has no 'asin'", line=line_no, field="asin")
        fields = item_fields(meta)
        if fields is not None:
            item_meta[str(meta["asin"])] = fields
    return item_meta


def read_reviews(path, start_timestamp: float, end_timestamp: float) -> pd.DataFrame:
    """(user_id, item_id, timestamp) of the reviews with start <= unixReviewTime < end."""
    users, items, times = [], [], []
    for line_no, review in json_lines(path, "reviews"):
        for field in ("reviewerID", "asin", "unixReviewTime"):
            if field not in review:
                raise data.DataFormatError(path, f"review has no '{field}'", line=line_no, field=field)
        try:
            timestamp = float(review["unixReviewTime"])
        except (TypeError, ValueError):
            raise data.DataFormatError(path, f"not a Unix time: {review['unixReviewTime']!r}",
                                       line=line_no, field="unixReviewTime") from None
        if start_timestamp <= timestamp < end_timestamp:
            users.append(str(review["reviewerID"]))
            items.append(str(review["asin"]))
            times.append(timestamp)
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times})


def month_start(year: int, month: int) -> float:
    return datetime.datetime(year, month, 1, tzinfo=datetime.timezone.utc).timestamp()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews_file", required=True, help="reviews JSON lines (.json or .json.gz)")
    parser.add_argument("--metadata_file", required=True, help="metadata JSON lines (.json or .json.gz)")
    parser.add_argument("--output_dir", required=True,
                        help="folder for item.json, train/valid/test.inter and item2id.tsv")
    parser.add_argument("--st_year", type=int, default=1996, help="time window start year")
    parser.add_argument("--st_month", type=int, default=10, help="time window start month (inclusive)")
    parser.add_argument("--ed_year", type=int, default=2018, help="time window end year")
    parser.add_argument("--ed_month", type=int, default=11, help="time window end month (exclusive)")
    parser.add_argument("--user_k", type=int, default=5, help="k-core: minimum interactions per user")
    parser.add_argument("--item_k", type=int, default=5, help="k-core: minimum interactions per item")
    parser.add_argument("--max_history", type=int, default=10, help="most history items per window")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    item_meta = read_metadata(args.metadata_file)
    log = read_reviews(args.reviews_file, month_start(args.st_year, args.st_month),
                       month_start(args.ed_year, args.ed_month))
    logger.info("%d items with a usable title, %d reviews in the time window", len(item_meta), len(log))
    return interactions.prepare_dataset(log, item_meta, args.output_dir, args.user_k, args.item_k,
                                        args.max_history)


if __name__ == "__main__":
    main()
