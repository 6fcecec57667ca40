"""Where the files of a prepared dataset live: our layout and the original's.

Prepared dataset (the output of data/amazon18_data_process.py / data/prepare_ml100k.py, the input
of rq/build_sids.py and convert_dataset.py):
  ours        DIR/item.json, DIR/{train,valid,test}.inter, DIR/index.json, DIR/item2id.tsv, ...
  original    DIR/<dataset>.item.json, DIR/<dataset>.{train,valid,test}.inter,
              DIR/<dataset>.index.json, DIR/<dataset>.item2id, ... with DIR = <output_path>/<dataset>

Split CSVs (the output of convert_dataset.py, the input of sft/rl/evaluate):
  ours        DIR/{train,valid,test}.csv, DIR/info.txt (+ index.json, item.json)
  original    DIR/{train,valid,test}/<category>_5_2016-10-2018-11.csv, DIR/info/<category>_5_2016-10-2018-11.txt,
              and (ours, so the folder is complete for sft.sh / rl.sh) DIR/index/<category>.index.json
              and DIR/index/<category>.item.json. The original's scripts find these files with
              `ls ./data/Amazon/train/${category}*11.csv`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "valid", "test")

# The original's convert_dataset.py names every split file with this suffix, whatever the time window
# (its sft.sh / rl.sh / evaluate.sh glob `<category>*11.csv`, so the name must end like this).
ORIGINAL_SPLIT_SUFFIX = "_5_2016-10-2018-11"

# our names where they differ from the original's `<dataset>.<kind>`
_OUR_NAMES = {"item2id": "item2id.tsv", "user2id": "user2id.tsv"}


@dataclass(frozen=True)
class DatasetFiles:
    """The files of one prepared dataset in `folder`: the original's `<dataset>.<kind>` names when
    `dataset` is given, ours (`<kind>`) otherwise."""

    folder: Path
    dataset: str | None = None

    @property
    def original(self) -> bool:
        return self.dataset is not None

    def path(self, kind: str) -> Path:
        """kind: item.json, index.json, train.inter, valid.inter, test.inter, item2id, user2id,
        inter.json."""
        name = f"{self.dataset}.{kind}" if self.original else _OUR_NAMES.get(kind, kind)
        return Path(self.folder) / name

    def inter(self, split: str) -> Path:
        return self.path(f"{split}.inter")


@dataclass(frozen=True)
class SplitFiles:
    """The split CSVs and info file of one dataset: the original's folder-per-kind layout when
    `category` is given, ours (one folder) otherwise."""

    folder: Path
    category: str | None = None

    @property
    def original(self) -> bool:
        return self.category is not None

    def csv(self, split: str) -> Path:
        if self.original:
            return Path(self.folder) / split / f"{self.category}{ORIGINAL_SPLIT_SUFFIX}.csv"
        return Path(self.folder) / f"{split}.csv"

    @property
    def info(self) -> Path:
        if self.original:
            return Path(self.folder) / "info" / f"{self.category}{ORIGINAL_SPLIT_SUFFIX}.txt"
        return Path(self.folder) / "info.txt"

    @property
    def index(self) -> Path:
        return self._catalogue_file("index.json")

    @property
    def item_meta(self) -> Path:
        return self._catalogue_file("item.json")

    def _catalogue_file(self, kind: str) -> Path:
        if self.original:
            return Path(self.folder) / "index" / f"{self.category}.{kind}"
        return Path(self.folder) / kind
