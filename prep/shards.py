"""A test CSV cut into one chunk per evaluation process, and the chunks' predictions merged back: the
original evaluate.sh's split.py / merge.py steps (`<output_path>/<name>.csv` per entry of
`--cuda_list`; the merged JSON is the chunks' rows in list order).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

import data
from runtime import InputError

_SEPARATORS = re.compile(r"[,\s]+")


def shard_names(value, flag="--cuda_list") -> list[str]:
    """The chunk names of a `--cuda_list` value as the original's fire command line passes it:
    "0,1,2", "0 1 2", "[0, 1]", "(0,1)", a single "3", or an int/list from Python."""
    if isinstance(value, int):
        value = [value]
    if isinstance(value, (list, tuple)):
        names = [str(v).strip() for v in value]
    else:
        names = [n for n in _SEPARATORS.split(str(value).strip().strip("[]()")) if n]
    names = [n.strip("'\"") for n in names]
    if not names or any(not n for n in names):
        raise InputError(f"{flag} {value!r}: give the chunk names, e.g. 0,1,2,3")
    if len(set(names)) != len(names):
        raise InputError(f"{flag} {value!r}: a name is repeated (each chunk is one file)")
    return names


def split_csv(input_path, output_path, names) -> list[Path]:
    """Write `<output_path>/<name>.csv` for each name: consecutive, near-equal row ranges of the input
    (chunk i holds rows i*n//k .. (i+1)*n//k - 1, the original's cut), each with the input's row
    number as its first, unnamed column as the original writes it. Returns the paths."""
    input_path = Path(input_path)
    if not input_path.is_file():
        raise InputError(f"--input_path {input_path}: file not found")
    try:
        frame = pd.read_csv(input_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise data.DataFormatError(input_path, f"not a CSV file: {err}") from None
    output_path = Path(output_path)
    n, k = len(frame), len(names)
    paths = []
    for i, name in enumerate(names):
        path = output_path / f"{name}.csv"
        with data.atomic_write(path, newline="") as f:
            frame.iloc[i * n // k:(i + 1) * n // k].to_csv(f, index=True)
        paths.append(path)
    return paths


def merge_predictions(input_path, output_path, names) -> int:
    """Concatenate the JSON lists `<input_path>/<name>.json` (in `names` order) into `output_path`
    (indent 4, as the original). Returns the number of rows."""
    rows = []
    for name in names:
        path = Path(input_path) / f"{name}.json"
        if not path.is_file():
            raise InputError(f"{path}: predictions chunk not found (is '{name}' in --cuda_list a chunk "
                             f"that was evaluated?)")
        try:
            chunk = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise data.DataFormatError(path, f"invalid JSON ({err.msg}); was its evaluation cut short?",
                                       line=err.lineno) from None
        if not isinstance(chunk, list):
            raise data.DataFormatError(path, "expected a JSON list of prediction rows")
        rows.extend(chunk)
    data.write_json(rows, output_path, indent=4)
    return len(rows)
