"""`.inter` split files + index.json + item.json -> split CSVs + info.txt (the original's
convert_dataset.py step), i.e. the MiniOneRec training format (README "File formats").

Both layouts of prep/layout.py: a prepared dataset in ours (DIR/train.inter, DIR/index.json, ...)
becomes DIR/{train,valid,test}.csv + DIR/info.txt; one in the original's
(DIR/<dataset>.train.inter, DIR/<dataset>.index.json, ...) becomes the original's folder-per-kind
layout under the output folder (train/<category>_5_2016-10-2018-11.csv, info/..., plus
index/<category>.index.json and .item.json so that folder is all sft.sh / rl.sh read).

As the original: `max_valid_samples` / `max_test_samples` keep a random sample of that many rows
(`random.seed(seed)` then `random.sample`, per split), `keep_longest_only` keeps each user's longest
training window, and the original layout's user ids are written as `A<user number>`. Unlike the
original, every history and target item must have a SID and an item.json entry: a missing one stops
the conversion with the file, line and item id (the original silently dropped such history items,
which shortens histories without telling anyone), and nothing is written until every split converts.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import data
from prep.interactions import read_inter
from prep.layout import SPLITS, DatasetFiles, SplitFiles
from runtime import InputError

logger = logging.getLogger(__name__)

ORIGINAL_DEFAULT_DATASET = "Industrial_and_Scientific"  # the original convert_dataset.py's --dataset_name


def split_rows(inter_path, index: dict[str, list[str]], item_meta: dict[str, dict], user_prefix: str = "") -> list[dict]:
    """Split-CSV rows (dicts with data.SPLIT_COLUMNS keys) of one `.inter` file."""
    sids = {item_id: data.sid_string(tokens) for item_id, tokens in index.items()}
    titles = {item_id: fields["title"] for item_id, fields in item_meta.items()}
    rows = []
    for user_id, history, item_id, line in read_inter(inter_path):
        for iid, field in [(i, "item_id_list") for i in history] + [(item_id, "item_id")]:
            if str(iid) not in sids:
                raise data.DataFormatError(
                    inter_path, f"item {iid} has no SID in the index (rebuild index.json from this "
                    f"dataset's item.json)", line=line, field=field,
                )
            if str(iid) not in titles:
                raise data.DataFormatError(inter_path, f"item {iid} is not in item.json", line=line, field=field)
        rows.append({
            "user_id": f"{user_prefix}{user_id}",
            "history_item_title": [titles[str(i)] for i in history],
            "item_title": titles[str(item_id)],
            "history_item_id": history,
            "item_id": item_id,
            "history_item_sid": [sids[str(i)] for i in history],
            "item_sid": sids[str(item_id)],
        })
    return rows


def longest_per_user(rows: list[dict]) -> list[dict]:
    """Each user's first window with the longest history, users in order of first appearance."""
    longest: dict[str, dict] = {}
    for row in rows:
        kept = longest.get(row["user_id"])
        if kept is None or len(row["history_item_id"]) > len(kept["history_item_id"]):
            longest[row["user_id"]] = row
    return list(longest.values())


def sample_rows(rows: list[dict], max_rows: int | None, seed: int) -> list[dict]:
    """At most max_rows rows, drawn as the original draws them (random.seed(seed); random.sample)."""
    if max_rows is None or len(rows) <= max_rows:
        return rows
    return random.Random(seed).sample(rows, max_rows)


def input_files(data_dir, dataset_name: str | None) -> DatasetFiles:
    """The prepared dataset in data_dir: ours (train.inter) unless a dataset name is given or only
    the original's `<dataset>.train.inter` is there."""
    ours = DatasetFiles(Path(data_dir))
    if dataset_name is None and ours.inter("train").is_file():
        return ours
    original = DatasetFiles(Path(data_dir), dataset_name or ORIGINAL_DEFAULT_DATASET)
    if not original.inter("train").is_file():
        raise InputError(
            f"--data_dir {data_dir}: neither {ours.inter('train').name} (our layout) nor "
            f"{original.inter('train').name} (the original's; --dataset_name names the dataset) is there"
        )
    return original


def convert_dataset(data_dir, output_dir=None, index_path=None, item_meta_path=None, dataset_name=None,
                    category=None, max_valid_samples=None, max_test_samples=None, seed=42,
                    keep_longest_only=False) -> dict[str, int]:
    """Write the split CSVs and info file of the prepared dataset in `data_dir` (layouts: see the
    module docstring); returns the rows per split. Our layout writes into `output_dir` (default
    `data_dir`), with copies of index.json and item.json when that is another folder."""
    source = input_files(data_dir, dataset_name)
    if source.original:
        if output_dir is None:
            raise InputError("--output_dir is required with the original's layout (e.g. data/Amazon)")
        target = SplitFiles(Path(output_dir), category or source.dataset)
    else:
        target = SplitFiles(Path(output_dir or data_dir))
    index_path = Path(index_path or source.path("index.json"))
    item_meta_path = Path(item_meta_path or source.path("item.json"))
    index = data.read_index(index_path)
    item_meta = data.read_item_meta(item_meta_path)

    # every split is converted before any file is written: a failed conversion leaves no partial dataset
    user_prefix = "A" if source.original else ""
    rows_by_split = {split: split_rows(source.inter(split), index, item_meta, user_prefix) for split in SPLITS}
    if keep_longest_only:
        rows_by_split["train"] = longest_per_user(rows_by_split["train"])
    rows_by_split["valid"] = sample_rows(rows_by_split["valid"], max_valid_samples, seed)
    rows_by_split["test"] = sample_rows(rows_by_split["test"], max_test_samples, seed)
    for split, rows in rows_by_split.items():
        data.write_split_csv(rows, target.csv(split))
    data.write_info(index, item_meta, target.info)
    if target.index.resolve() != index_path.resolve():
        data.write_index(index, target.index)
    if target.item_meta.resolve() != item_meta_path.resolve():
        data.write_json(item_meta, target.item_meta, indent=2)
    counts = {split: len(rows) for split, rows in rows_by_split.items()}
    logger.info("wrote %s rows to %s", counts, target.folder)
    return counts
