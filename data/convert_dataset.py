"""Split `.inter` files + index.json + item.json -> train/valid/test CSVs + info.txt (the
documents' `convert_dataset` step), i.e. the MiniOneRec training format of DESIGN.md.

Every history and target item must have a SID in the index and an entry in item.json: a missing
one stops the conversion with the file, line and item id (upstream silently dropped such history
items, which shortens histories without telling anyone).

Pipeline (from the repository root):
    python data/prepare_ml100k.py --output_dir DIR        (or data/amazon18_data_process.py)
    python rq/build_sids.py --item_meta_path DIR/item.json --output_dir DIR
    python data/convert_dataset.py --data_dir DIR
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402
import interactions  # noqa: E402  (data/interactions.py: this script's folder is on sys.path)

logger = logging.getLogger("convert_dataset")


def split_rows(inter_path, index: dict[str, list[str]], item_meta: dict[str, dict]) -> list[dict]:
    """Split-CSV rows (dicts with data.SPLIT_COLUMNS keys) of one `.inter` file."""
    sids = {item_id: data.sid_string(tokens) for item_id, tokens in index.items()}
    titles = {item_id: fields["title"] for item_id, fields in item_meta.items()}
    rows = []
    for user_id, history, item_id, line in interactions.read_inter(inter_path):
        for iid, field in [(i, "item_id_list") for i in history] + [(item_id, "item_id")]:
            if str(iid) not in sids:
                raise data.DataFormatError(
                    inter_path, f"item {iid} has no SID in the index (rebuild index.json from this "
                    f"dataset's item.json)", line=line, field=field,
                )
            if str(iid) not in titles:
                raise data.DataFormatError(inter_path, f"item {iid} is not in item.json", line=line, field=field)
        rows.append({
            "user_id": user_id,
            "history_item_title": [titles[str(i)] for i in history],
            "item_title": titles[str(item_id)],
            "history_item_id": history,
            "item_id": item_id,
            "history_item_sid": [sids[str(i)] for i in history],
            "item_sid": sids[str(item_id)],
        })
    return rows


def convert_dataset(data_dir, output_dir=None, index_path=None, item_meta_path=None) -> dict[str, int]:
    """Write {train,valid,test}.csv and info.txt into `output_dir` (default `data_dir`), plus copies
    of index.json and item.json when `output_dir` is another folder, so it holds a whole dataset."""
    data_dir = Path(data_dir)
    output_dir = Path(output_dir or data_dir)
    index_path = Path(index_path or data_dir / "index.json")
    item_meta_path = Path(item_meta_path or data_dir / "item.json")
    index = data.read_index(index_path)
    item_meta = data.read_item_meta(item_meta_path)

    # every split is checked before any file is written: a failed conversion leaves no partial dataset
    rows_by_split = {split: split_rows(data_dir / f"{split}.inter", index, item_meta) for split in interactions.SPLITS}
    for split, rows in rows_by_split.items():
        data.write_split_csv(rows, output_dir / f"{split}.csv")
    counts = {split: len(rows) for split, rows in rows_by_split.items()}
    data.write_info(index, item_meta, output_dir / "info.txt")
    if output_dir.resolve() != data_dir.resolve():
        data.write_index(index, output_dir / "index.json")
        data.write_json(item_meta, output_dir / "item.json", indent=2)
    logger.info("wrote %s rows to %s", counts, output_dir)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="folder with train/valid/test.inter (and item.json, index.json)")
    parser.add_argument("--output_dir", default=None, help="where the CSVs and info.txt go (default: --data_dir)")
    parser.add_argument("--index_path", default=None, help="index.json with the SIDs (default: DATA_DIR/index.json)")
    parser.add_argument("--item_meta_path", default=None, help="item.json (default: DATA_DIR/item.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return convert_dataset(args.data_dir, args.output_dir, args.index_path, args.item_meta_path)


if __name__ == "__main__":
    main()
