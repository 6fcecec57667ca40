"""Amazon Review Data (2018) raw files -> a prepared dataset (the original's
data/amazon18_data_process.py step; that script is the command line).

Inputs are the category's review and metadata files, JSON lines, plain or gzip:
  reviews  e.g. Office_Products.json(.gz)       {"reviewerID", "asin", "unixReviewTime", ...}
  metadata e.g. meta_Office_Products.json(.gz)  {"asin", "title", "description", "brand", "category"}
As the original: reviews outside [start, end] of the time window are dropped (month starts, UTC);
so are items whose title is missing, holds "<span id", is a single character or has more than 20
words after the original's light cleaning (its title text is kept as is, so the item set and hence
the item numbering match the original's); while fewer than `min_items` items survive and the window
starts after 1996, it starts one year earlier (the original's rule). Then the shared recipe of
prep/interactions.py: k-core, chronological windows of at most 10 items, one global 8:1:1 time split.
Differences, on purpose: `item_k` is honoured (the original applies `user_k` to items too);
descriptions and categories have HTML removed (the original keeps the Python repr of the list);
no `<dataset>.review.json` (nothing downstream reads it).
"""

from __future__ import annotations

import datetime
import gzip
import html
import json
import logging
import re
from pathlib import Path

import pandas as pd
from tqdm import tqdm

import data
from prep import interactions
from prep.layout import DatasetFiles
from runtime import InputError

logger = logging.getLogger(__name__)

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
        raise InputError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    line_no = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line_no, line in enumerate(tqdm(f, desc=desc, unit=" lines", mininterval=2), start=1):
                if not line.strip():
                    continue
                try:
                    yield line_no, json.loads(line)
                except json.JSONDecodeError as err:
                    raise data.DataFormatError(path, f"invalid JSON: {err.msg}", line=line_no) from None
    except (EOFError, gzip.BadGzipFile, UnicodeDecodeError) as err:  # a cut download, a wrong file
        raise data.DataFormatError(path, f"unreadable after line {line_no} ({err}); is the file complete, "
                                         "UTF-8 JSON lines (plain or .gz)?") from None


def original_title(raw_title) -> str | None:
    """The title as the original keeps it, or None when the original drops the item: no title,
    "<span id" in it, one character or more than 20 space-separated words after its cleaning."""
    if not isinstance(raw_title, str) or "<span id" in raw_title:
        return None
    title = raw_title.replace("&quot;", '"').replace("&amp;", "&").strip(" ").strip('"')
    if len(title) <= 1 or len(title.split(" ")) > MAX_TITLE_WORDS:
        return None
    return title


def item_fields(meta: dict) -> dict | None:
    """The item.json entry of one metadata record, or None when its title is unusable."""
    title = original_title(meta.get("title"))
    if title is None:
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


def read_reviews(path) -> pd.DataFrame:
    """(user_id, item_id, timestamp) of every review, in file order."""
    users, items, times = [], [], []
    for line_no, review in json_lines(path, "reviews"):
        for field in ("reviewerID", "asin", "unixReviewTime"):
            if field not in review:
                raise data.DataFormatError(path, f"review has no '{field}'", line=line_no, field=field)
        try:
            times.append(float(review["unixReviewTime"]))
        except (TypeError, ValueError):
            raise data.DataFormatError(path, f"not a Unix time: {review['unixReviewTime']!r}",
                                       line=line_no, field="unixReviewTime") from None
        users.append(str(review["reviewerID"]))
        items.append(str(review["asin"]))
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times})


def month_start(year: int, month: int) -> float:
    return datetime.datetime(year, month, 1, tzinfo=datetime.timezone.utc).timestamp()


def in_window(reviews: pd.DataFrame, st_year, st_month, ed_year, ed_month) -> pd.DataFrame:
    """The reviews with month_start(st) <= time <= month_start(ed) (the original keeps both ends)."""
    times = reviews["timestamp"]
    return reviews[(times >= month_start(st_year, st_month)) & (times <= month_start(ed_year, ed_month))]


def widened_start_year(reviews, item_meta, st_year, st_month, ed_year, ed_month, user_k, item_k, min_items) -> int:
    """The original's rule: while the k-core of the window keeps fewer than min_items items and the
    window starts after 1996, start it one year earlier. Returns the start year to use."""
    rated = reviews[reviews["item_id"].isin(item_meta.keys())]
    while st_year > 1996 and min_items > 0:
        kept = interactions.k_core_filter(in_window(rated, st_year, st_month, ed_year, ed_month), user_k, item_k)
        n_items = kept["item_id"].nunique()
        if n_items >= min_items:
            break
        logger.info("%d items < %d in %d-%02d .. %d-%02d: the window starts one year earlier",
                    n_items, min_items, st_year, st_month, ed_year, ed_month)
        st_year -= 1
    return st_year


def original_input_files(dataset: str) -> tuple[Path, Path]:
    """The original's default (reviews, metadata) files of a dataset, relative to the working
    folder: ../<dataset>_5.json (else ../<dataset>.json) and ../meta_<dataset>.json."""
    five_core = Path("..") / f"{dataset}_5.json"
    reviews = five_core if five_core.is_file() else Path("..") / f"{dataset}.json"
    return reviews, Path("..") / f"meta_{dataset}.json"


def prepare_amazon18(reviews_file, metadata_file, files: DatasetFiles, st_year=1996, st_month=10, ed_year=2018,
                     ed_month=11, user_k=5, item_k=5, max_history=10, min_items=3000) -> dict:
    """Write the prepared dataset under the names of `files`; returns its statistics."""
    item_meta = read_metadata(metadata_file)
    reviews = read_reviews(reviews_file)
    logger.info("%d items with a usable title, %d reviews", len(item_meta), len(reviews))
    st_year = widened_start_year(reviews, item_meta, st_year, st_month, ed_year, ed_month, user_k, item_k, min_items)
    log = in_window(reviews, st_year, st_month, ed_year, ed_month)
    logger.info("%d reviews in %d-%02d .. %d-%02d", len(log), st_year, st_month, ed_year, ed_month)
    stats = interactions.prepare_dataset(log, item_meta, files, user_k, item_k, max_history)
    return {**stats, "st_year": st_year}
