"""Interaction logs -> the original's sequential-recommendation splits (shared by every data source).

The recipe is the one of the original's `data/amazon18_data_process.py`, whatever the source:
  1. drop interactions with items that have no usable metadata;
  2. iterated k-core filter (users and items with at least k interactions, repeated until stable);
  3. users numbered 0.. in order of first appearance in the source; items numbered 0.. in order of
     first appearance walking the users in that order, each user's interactions chronologically
     (the original's numbering, which its published index.json files are keyed by);
  4. per user, interactions in chronological order (ties: source order); sliding windows: target
     i_t with history i_max(0,t-10)..i_{t-1}, for t >= 1;
  5. one global chronological 8:1:1 split of all windows by target timestamp
     (stable; ties broken by user number, then position in the user's sequence).

`prepare_dataset` writes item.json, the three `.inter` split files (RecBole atomic files: user_id,
item_id_list, item_id and, in our layout, timestamp), the item and user id maps and the users'
item sequences, under the names of a `prep.layout.DatasetFiles`. SIDs are built from item.json
next (rq/build_sids.py); convert_dataset.py then turns the `.inter` files + index.json into the
split CSVs.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

import data
from prep.layout import DatasetFiles
from runtime import InputError

logger = logging.getLogger(__name__)

INTER_HEADER = ("user_id:token", "item_id_list:token_seq", "item_id:token")
TIMESTAMP_HEADER = "timestamp:float"


# ---------------------------------------------------------------------------------------------
# RecBole atomic files (`name:type` header, tab separated)


def read_atomic(text: str, path, required: tuple[str, ...]) -> pd.DataFrame:
    """Parse a RecBole atomic file given as text; columns are named without their `:type`.
    `path` only names the file in errors. Every value stays a string."""
    frame = pd.read_csv(
        io.StringIO(text), sep="\t", dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False
    )
    frame.columns = [c.split(":", 1)[0].strip() for c in frame.columns]
    for name in required:
        if name not in frame.columns:
            raise data.DataFormatError(
                path, f"missing column '{name}'; header is {list(frame.columns)}", line=1, field=name
            )
    return frame


def numeric_column(frame: pd.DataFrame, name: str, path) -> np.ndarray:
    """A column as float64; an empty or non-numeric value is an error naming its line."""
    values = pd.to_numeric(frame[name].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(values))
    if bad.size:
        row = int(bad[0])
        raise data.DataFormatError(
            path, f"not a number: {frame[name].iloc[row]!r} ({bad.size} such rows)", line=row + 2, field=name
        )
    return values


# ---------------------------------------------------------------------------------------------
# the recipe


def k_core_filter(log: pd.DataFrame, user_k: int = 5, item_k: int = 5) -> pd.DataFrame:
    """Keep only users with >= user_k and items with >= item_k interactions, repeating the filter
    until it removes nothing (removing an item can push a user below the threshold, and back)."""
    while True:
        user_counts = log.groupby("user_id")["user_id"].transform("size")
        item_counts = log.groupby("item_id")["item_id"].transform("size")
        keep = (user_counts >= user_k) & (item_counts >= item_k)
        if keep.all():
            return log
        log = log[keep]


def sliding_windows(log: pd.DataFrame, max_history: int = 10) -> pd.DataFrame:
    """One row per (history -> next item) of every user's time-ordered sequence.

    `log` has columns user_id, user_index (int), item_index (int), timestamp and row_order (the
    position in the source, which orders interactions with equal timestamps). Returns columns
    user_id, user_index, position, history (list of item indices, oldest first), item_id
    (target item index) and timestamp (target's)."""
    log = log.sort_values(["user_index", "timestamp", "row_order"], kind="stable").reset_index(drop=True)
    position = log.groupby("user_index").cumcount().to_numpy()
    items = log["item_index"].to_numpy()
    targets = np.flatnonzero(position >= 1)
    # history of the target at row r: rows r-max_history .. r-1 that belong to the same user
    offsets = np.arange(-max_history, 0)
    rows = targets[:, None] + offsets
    valid = offsets[None, :] >= -position[targets, None]
    history_matrix = np.where(valid, items[np.clip(rows, 0, None)], -1)
    histories = [h[h >= 0].tolist() for h in history_matrix]
    return pd.DataFrame(
        {
            "user_id": log["user_id"].to_numpy()[targets],
            "user_index": log["user_index"].to_numpy()[targets],
            "position": position[targets],
            "history": histories,
            "item_id": items[targets],
            "timestamp": log["timestamp"].to_numpy()[targets],
        }
    )


def chronological_split(windows: pd.DataFrame, ratios=(0.8, 0.1, 0.1)) -> dict[str, pd.DataFrame]:
    """One global cut of all windows sorted by target timestamp (ties: user, then position):
    the first 80% train, the next 10% valid, the last 10% test (the original's int() cut points)."""
    ordered = windows.sort_values(["timestamp", "user_index", "position"], kind="stable").reset_index(drop=True)
    n = len(ordered)
    train_end = int(n * ratios[0])
    valid_end = int(n * (ratios[0] + ratios[1]))
    return {
        "train": ordered.iloc[:train_end],
        "valid": ordered.iloc[train_end:valid_end],
        "test": ordered.iloc[valid_end:],
    }


def number_like_the_original(log: pd.DataFrame) -> pd.DataFrame:
    """`log` with user_index and item_index (ints from 0), numbered as the original numbers them:
    users in order of first appearance in the source (`row_order`); items in order of first
    appearance walking the users in that order, each user's interactions by time (ties: source
    order)."""
    user_order = pd.unique(log.sort_values("row_order", kind="stable")["user_id"])
    user_index = pd.Series(np.arange(len(user_order)), index=user_order).loc[log["user_id"]].to_numpy()
    log = log.assign(user_index=user_index)
    walk = log.sort_values(["user_index", "timestamp", "row_order"], kind="stable")
    item_order = pd.unique(walk["item_id"])
    item_index = pd.Series(np.arange(len(item_order)), index=item_order).loc[log["item_id"]].to_numpy()
    return log.assign(item_index=item_index)


def prepare_dataset(log: pd.DataFrame, item_meta: dict[str, dict], files: DatasetFiles, user_k=5, item_k=5,
                    max_history=10) -> dict:
    """Run the recipe on `log` (columns user_id, item_id: raw string ids; timestamp: number; rows in
    source order) with `item_meta` keyed by raw item id, and write item.json, the three `.inter`
    files, item2id, user2id (`raw<TAB>number` lines) and inter.json (each user's items in time
    order) under the names of `files`. Returns the statistics it logs."""
    log = log.reset_index(drop=True).assign(row_order=lambda f: np.arange(len(f)))
    n_raw = len(log)
    log = log[log["item_id"].isin(item_meta.keys())]
    if len(log) < n_raw:
        logger.info("dropped %d of %d interactions with items that have no usable metadata",
                    n_raw - len(log), n_raw)
    log = k_core_filter(log, user_k, item_k)
    if log.empty:
        raise InputError(
            f"no interactions survive the {user_k}/{item_k}-core filter ({n_raw} before it); "
            f"use a longer time window or a smaller --user_k / --item_k"
        )
    log = number_like_the_original(log)
    raw_users = pd.unique(log.sort_values("user_index")["user_id"])
    raw_items = pd.unique(log.sort_values("item_index")["item_id"])

    windows = sliding_windows(log, max_history)
    splits = chronological_split(windows)
    for name, frame in splits.items():
        # the original's .inter files have no timestamp column, and its convert_dataset.py skips
        # every line that does not have exactly three fields
        write_inter(frame, files.inter(name), with_timestamp=not files.original)
    data.write_json({str(i): item_meta[raw] for i, raw in enumerate(raw_items)}, files.path("item.json"), indent=2)
    for kind, raw_ids in (("item2id", raw_items), ("user2id", raw_users)):
        with data.atomic_write(files.path(kind)) as f:
            f.writelines(f"{raw}\t{i}\n" for i, raw in enumerate(raw_ids))
    sequences = log.sort_values(["user_index", "timestamp", "row_order"], kind="stable").groupby("user_index")
    data.write_json({str(u): items.tolist() for u, items in sequences["item_index"]}, files.path("inter.json"),
                    indent=2)

    stats = {
        "interactions": len(log),
        "users": len(raw_users),
        "items": len(raw_items),
        "density": len(log) / (len(raw_users) * len(raw_items)),
        **{f"{name}_windows": len(frame) for name, frame in splits.items()},
    }
    logger.info("prepared %s: %s", files.folder, stats)
    return stats


# ---------------------------------------------------------------------------------------------
# the intermediate split files


def write_inter(windows: pd.DataFrame, path, with_timestamp: bool = True):
    """Windows as a RecBole atomic file: user_id (the user's number), item_id_list (space
    separated), item_id and, with_timestamp, the target's timestamp."""
    header = INTER_HEADER + ((TIMESTAMP_HEADER,) if with_timestamp else ())
    columns = [windows["user_index"], windows["history"], windows["item_id"]]
    if with_timestamp:
        columns.append(windows["timestamp"].map("{:.15g}".format))
    with data.atomic_write(path) as f:
        f.write("\t".join(header) + "\n")
        f.writelines(
            "\t".join([str(user), " ".join(map(str, history)), str(item), *rest]) + "\n"
            for user, history, item, *rest in zip(*columns)
        )


def read_inter(path) -> list[tuple[str, list[int], int, int]]:
    """Rows (user_id, history item ids, target item id, line number) of a `.inter` split file;
    the timestamp column is optional (the original's files have none)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    frame = read_atomic(path.read_text(encoding="utf-8"), path, ("user_id", "item_id_list", "item_id"))
    rows = []
    for line, (user, history_text, item_text) in enumerate(
        zip(frame["user_id"], frame["item_id_list"], frame["item_id"]), start=2
    ):
        try:
            history = [int(i) for i in history_text.split()]
            item = int(item_text)
        except ValueError:
            raise data.DataFormatError(path, "item ids must be integers", line=line, field="item_id_list") from None
        if not history:
            raise data.DataFormatError(path, "empty history", line=line, field="item_id_list")
        rows.append((user.strip(), history, item, line))
    return rows
