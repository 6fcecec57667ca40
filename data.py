"""Data layer: the MiniOneRec file formats, the run's Catalogue, the task wordings, and the
original's dataset classes (SFT, evaluation and RL) under their names and calls.

File formats (README "File formats"): split CSVs, index.json, item.json, info.txt.

Every reader validates as it parses and raises `DataFormatError` naming the file, the 1-based line
and the field, so bad input never surfaces as a traceback from deep inside a library. A UTF-8 BOM
is accepted; a file that is not UTF-8 is named with the offending byte.
Every writer is atomic: it writes a temporary file next to the target and renames it.

Prompts (`prompt_style="upstream"`, the default) are the original's texts byte for byte, per class
(typos such as "palyed" and "recetenly" included: a checkpoint trained by the original expects
those tokens), tokenised its way (instruction with BOS and prompt encoded apart, then joined;
`encode_upstream`), with its row choice (`pandas.DataFrame.sample(n, random_state=seed)` for the
CSV classes, `random.seed(seed); random.sample` for the item classes, one `random.randint` per row
for SFTData's instruction). `prompt_style="unified"` words every task one consistent way (`TASKS`).

Deliberate differences from the original, each where the original is wrong:
- its item classes (SidItemFeatDataset, RLTitle2SidDataset, RLSid2TitleDataset) write the answer
  into the prompt too (`generate_prompt` fills `### Response:` with the output, so an RL prompt
  already holds its completion and SFT learns to copy): here their prompts end at `### Response:` and its newline;
- list columns are parsed with `ast.literal_eval`, never `eval`;
- an over-long example keeps its response and loses its oldest history items (then the end of a
  long item text); the original's `tokens[-max_len:]` cuts the head of the instruction. Examples
  that fit are token-for-token the original's. Evaluation prompts (test=True) are fitted to
  max_len (the original never cuts them);
- a row whose target has no title / SID in the catalogue is an error naming file and line (the
  original trains on "Unknown item 123" or on the item id as a SID);
- a SID is all of its level tokens (the original joins the first three and drops items with fewer);
- `dedup=True` drops rows whose target repeats the last history item in every class (the original
  ignores the flag in SFTData, D3Dataset, EvalD3Dataset, SidDataset, SidSFTDataset and
  EvalSidDataset; its scripts never set it);
- `sample` above the number of rows takes them all (the original raises), `sample=0` is an error
  (the original takes all rows); an item without a description has no description task (the
  original raises KeyError);
- the Preference* classes need a user-preference file this project has no data for: not provided.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import logging
import os
import random
import re
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import pandas as pd
from torch.utils.data import Dataset

from runtime import InputError, PathNotFound

logger = logging.getLogger(__name__)

SPLIT_COLUMNS = (
    "user_id",
    "history_item_title",
    "item_title",
    "history_item_id",
    "item_id",
    "history_item_sid",
    "item_sid",
)
LIST_COLUMNS = ("history_item_title", "history_item_id", "history_item_sid")


class DataFormatError(InputError):
    """Malformed input file; the message names file, line and field."""

    def __init__(self, path, message, line=None, field=None):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.field = str(path), line, field


@dataclass(frozen=True)
class SplitRow:
    """One (history -> next item) row of a split CSV; `line` is its 1-based line in the file."""

    user_id: str
    history_item_title: tuple
    item_title: str
    history_item_id: tuple
    item_id: int
    history_item_sid: tuple
    item_sid: str
    line: int


# ---------------------------------------------------------------------------------------------
# atomic writing


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """Open a temporary sibling of `path` for writing; rename it over `path` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if "b" not in mode:
            open_kwargs.setdefault("encoding", "utf-8")
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(obj, path, indent=None):
    with atomic_write(path) as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)


def _require_file(path):
    path = Path(path)
    if not path.is_file():
        raise PathNotFound(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataFormatError(path, "file is empty")
    return path


def _read_text(path) -> str:
    """The whole file as text: UTF-8, a leading BOM dropped; anything else is named."""
    raw = _require_file(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataFormatError(path, f"not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                                    f"save it as UTF-8") from None


def _load_json(path):
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(path, f"invalid JSON: {err.msg}", line=err.lineno) from None


# ---------------------------------------------------------------------------------------------
# index.json


def sid_string(tokens: Iterable[str]) -> str:
    return "".join(tokens)


def read_index(path) -> dict[str, list[str]]:
    """`{"item_id": ["<a_1>", "<b_2>", ...]}`. Collisions load, with one warning giving the count."""
    index = _load_json(path)
    if not isinstance(index, dict) or not index:
        raise DataFormatError(path, "expected a non-empty JSON object {item_id: [sid tokens]}")
    for item_id, tokens in index.items():
        if (
            not isinstance(tokens, list)
            or not tokens
            or not all(isinstance(t, str) and t.startswith("<") and t.endswith(">") for t in tokens)
        ):
            raise DataFormatError(
                path, f"item {item_id!r}: expected a list of tokens like '<a_12>', got {tokens!r}"
            )
    _warn_collisions(path, index)
    return {str(k): list(v) for k, v in index.items()}


def _warn_collisions(path, index):
    counts = Counter(sid_string(t) for t in index.values())
    colliding = sum(c for c in counts.values() if c > 1)
    if colliding:
        logger.warning(
            "%s: %d of %d items share their SID with another item (%d SIDs are shared); "
            "a generated SID for them maps to more than one item",
            path, colliding, len(index), sum(1 for c in counts.values() if c > 1),
        )


def sid_tokens_of_index(index: dict[str, list[str]]) -> list[str]:
    """Every distinct SID token used by the index, in a stable order (level, then code)."""
    tokens = {t for toks in index.values() for t in toks}
    return sorted(tokens, key=_token_sort_key)


def _token_sort_key(token: str):
    body = token.strip("<>")
    prefix, _, number = body.rpartition("_")
    return (prefix, int(number)) if number.isdigit() else (body, -1)


def write_index(index: dict, path):
    write_json({str(k): list(v) for k, v in index.items()}, path)


# ---------------------------------------------------------------------------------------------
# item.json


def read_item_meta(path) -> dict[str, dict]:
    """`{"item_id": {"title": ..., "description": ..., ...}}`; every item needs a string title."""
    meta = _load_json(path)
    if not isinstance(meta, dict) or not meta:
        raise DataFormatError(path, "expected a non-empty JSON object {item_id: {title, ...}}")
    for item_id, fields in meta.items():
        if not isinstance(fields, dict) or not isinstance(fields.get("title"), str):
            raise DataFormatError(path, f"item {item_id!r} has no string 'title'", field="title")
    return {str(k): v for k, v in meta.items()}


def item_description(fields: dict) -> str:
    """Description text of an item.json entry; upstream stores lists as strings or lists."""
    desc = fields.get("description") or ""
    if isinstance(desc, list):
        desc = " ".join(str(d) for d in desc)
    desc = str(desc)
    if desc.startswith("[") and desc.endswith("]"):
        try:
            parsed = ast.literal_eval(desc)
            if isinstance(parsed, list):
                desc = " ".join(str(d) for d in parsed)
        except (ValueError, SyntaxError):
            pass
    return " ".join(desc.split())


# ---------------------------------------------------------------------------------------------
# info.txt


def read_info(path) -> list[tuple[str, str, str]]:
    """Lines `SID<TAB>title<TAB>item_id` -> list of (sid, title, item_id)."""
    rows = []
    for line_no, line in enumerate(io.StringIO(_read_text(path)), start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise DataFormatError(path, "expected 'SID<TAB>title<TAB>item_id'", line=line_no)
        sid, item_id = parts[0].strip(), parts[-1].strip()
        title = "\t".join(parts[1:-1]).strip()
        if not (sid.startswith("<") and sid.endswith(">")):
            raise DataFormatError(path, f"not a SID: {sid!r}", line=line_no, field="sid")
        rows.append((sid, title, item_id))
    if not rows:
        raise DataFormatError(path, "no items")
    return rows


def index_of_info(info_rows, path=None) -> dict[str, list[str]]:
    """{item_id: [level tokens]} of read_info rows (collisions warned about as read_index does)."""
    index = {item_id: re.findall(r"<[^<>]+>", sid) for sid, _, item_id in info_rows}
    _warn_collisions(path, index)
    return index


def write_info(index: dict, item_meta: dict, path):
    with atomic_write(path) as f:
        for item_id, tokens in index.items():
            title = " ".join(str(item_meta.get(str(item_id), {}).get("title", "")).split())
            f.write(f"{sid_string(tokens)}\t{title}\t{item_id}\n")


# ---------------------------------------------------------------------------------------------
# split CSVs


def _not_a_python_literal(name):
    raise ValueError(name)  # NaN / Infinity: JSON, not Python literals


_LIST_DECODER = json.JSONDecoder(parse_constant=_not_a_python_literal)


def list_literal(text: str):
    """The value of a Python list literal. Lists of numbers, and of strings with neither double
    quotes nor backslashes (SIDs, most titles), are JSON once their single quotes become double
    ones, and json parses them many times faster than ast.literal_eval; the rest (a title
    with an apostrophe is written in double quotes) goes to ast.literal_eval."""
    if text.startswith("[") and '"' not in text and "\\" not in text:
        try:
            return _LIST_DECODER.decode(text.replace("'", '"'))
        except ValueError:
            pass
    return ast.literal_eval(text)


def _parse_list(text, path, line, field):
    try:
        value = list_literal(text) if text.strip() else []
    except (ValueError, SyntaxError):
        raise DataFormatError(path, f"not a list literal: {text[:80]!r}", line=line, field=field) from None
    if isinstance(value, (int, str)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise DataFormatError(path, f"not a list: {text[:80]!r}", line=line, field=field)
    return tuple(value)


def _parse_int(text, path, line, field):
    try:
        return int(str(text).strip())
    except ValueError:
        raise DataFormatError(path, f"not an integer item id: {text!r}", line=line, field=field) from None


def read_split_csv(path, index: dict | None = None, item_meta: dict | None = None) -> list[SplitRow]:
    """Read a split CSV. With `index`, every history/target SID must be an item's SID in it; with
    `item_meta`, every item id must be in item.json. Empty histories are an error."""
    text = _read_text(path)
    known_sids = {sid_string(t) for t in index.values()} if index is not None else None
    rows = []
    with io.StringIO(text, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(path, "file is empty") from None
        header = [h.strip() for h in header]
        missing = [c for c in SPLIT_COLUMNS if c not in header]
        if missing:
            raise DataFormatError(path, f"missing column(s) {missing}; header is {header}", line=1)
        col = {name: header.index(name) for name in SPLIT_COLUMNS}
        start = reader.line_num + 1
        for record in reader:
            line = start
            start = reader.line_num + 1
            if not record or all(not c.strip() for c in record):
                continue
            if len(record) != len(header):
                raise DataFormatError(
                    path, f"expected {len(header)} fields, found {len(record)}", line=line
                )
            get = lambda name: record[col[name]]  # noqa: E731
            hist_titles = _parse_list(get("history_item_title"), path, line, "history_item_title")
            hist_ids = tuple(
                _parse_int(v, path, line, "history_item_id")
                for v in _parse_list(get("history_item_id"), path, line, "history_item_id")
            )
            hist_sids = _parse_list(get("history_item_sid"), path, line, "history_item_sid")
            if not hist_ids or not hist_sids:
                raise DataFormatError(path, "empty history", line=line, field="history_item_id")
            if not (len(hist_ids) == len(hist_sids) == len(hist_titles)):
                raise DataFormatError(
                    path,
                    f"history lists differ in length (ids {len(hist_ids)}, sids {len(hist_sids)}, "
                    f"titles {len(hist_titles)})",
                    line=line, field="history_item_sid",
                )
            item_sid = get("item_sid").strip()
            if known_sids is not None:
                for sid in hist_sids:
                    if sid not in known_sids:
                        raise DataFormatError(
                            path, f"history SID {sid!r} is not in the index", line=line,
                            field="history_item_sid",
                        )
                if item_sid not in known_sids:
                    raise DataFormatError(
                        path, f"target SID {item_sid!r} is not in the index", line=line, field="item_sid"
                    )
            item_id = _parse_int(get("item_id"), path, line, "item_id")
            if item_meta is not None:
                for iid, name in [(i, "history_item_id") for i in hist_ids] + [(item_id, "item_id")]:
                    if str(iid) not in item_meta:
                        raise DataFormatError(
                            path, f"item id {iid} is not in item.json", line=line, field=name
                        )
            rows.append(
                SplitRow(
                    user_id=get("user_id").strip(),
                    history_item_title=tuple(str(t) for t in hist_titles),
                    item_title=get("item_title"),
                    history_item_id=hist_ids,
                    item_id=item_id,
                    history_item_sid=tuple(str(s) for s in hist_sids),
                    item_sid=item_sid,
                    line=line,
                )
            )
    if not rows:
        raise DataFormatError(path, "no data rows")
    return rows


def write_split_csv(rows: Iterable[dict | SplitRow], path):
    """Write split rows (dicts with the SPLIT_COLUMNS keys, or SplitRow) atomically."""
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SPLIT_COLUMNS)
        for row in rows:
            get = row.get if isinstance(row, dict) else lambda name, r=row: getattr(r, name)
            writer.writerow(
                [
                    get("user_id"),
                    str(list(get("history_item_title"))),
                    get("item_title"),
                    str([int(i) for i in get("history_item_id")]),
                    int(get("item_id")),
                    str(list(get("history_item_sid"))),
                    get("item_sid"),
                ]
            )


# ---------------------------------------------------------------------------------------------
# SID tokens in a tokenizer


def add_sid_tokens(tokenizer, index: dict[str, list[str]]) -> list[str]:
    """Add the index's SID tokens the tokenizer lacks (as ordinary added tokens); returns them."""
    vocab = tokenizer.get_vocab()  # a fresh dict per call: build it once
    new_tokens = [t for t in sid_tokens_of_index(index) if t not in vocab]
    if new_tokens:
        tokenizer.add_tokens(new_tokens)
    return new_tokens


def require_sid_tokens(tokenizer, index: dict[str, list[str]], source="tokenizer"):
    """Every SID token must be one token of the tokenizer, or generation can never produce it."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in sid_tokens_of_index(index) if t not in vocab]
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} SID tokens of the index are not in the tokenizer "
            f"(e.g. {missing[:3]}); use the tokenizer saved with the checkpoint that was trained "
            f"on this index (sft.py adds them)"
        )


# ---------------------------------------------------------------------------------------------
# categories


UPSTREAM_CATEGORY_PHRASES = {  # the original's sft.py / rl.py / evaluate.py `category_dict`
    "Industrial_and_Scientific": "industrial and scientific items",
    "Office_Products": "office products",
    "Toys_and_Games": "toys and games",
    "Sports": "sports and outdoors",
    "Books": "books",
}


def category_phrase(category: str) -> str:
    """The phrase the prompts use for a `--category` name: the original's five names map to its
    phrases; any other name is humanised ('ml-100k' -> 'ml 100k items'). sft.py, rl.py and
    evaluate.py call this once and hand the phrase to the datasets, as the original's scripts do."""
    if category in UPSTREAM_CATEGORY_PHRASES:
        return UPSTREAM_CATEGORY_PHRASES[category]
    words = " ".join(str(category).replace("_", " ").replace("-", " ").split()).lower()
    if not words:
        return "items"
    return words if words.endswith("items") else f"{words} items"


# ---------------------------------------------------------------------------------------------
# prompt wording: one registry of tasks, each worded the original's way per stage ("upstream")
# and the project's single consistent way ("unified")

PROMPT_STYLES = ("upstream", "unified")

UPSTREAM_HEADER = (  # note the space after "request." and the blank line: the original's bytes
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request. \n\n### Instruction:\n"
)
PROMPT_HEADER = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n"
)
USER_INPUT = "### User Input: \n{input}\n\n### Response:\n"


def build_prompt(instruction: str, user_input: str) -> str:
    """Unified-style prompt: header with the instruction, then the user input, ending where the
    model starts writing its answer."""
    return PROMPT_HEADER.format(instruction=instruction) + USER_INPUT.format(input=user_input)


def build_response(answer: str) -> str:
    """The text after `### Response:\n`; the tokenised response is this plus EOS."""
    return f"{answer}\n"


@dataclass(frozen=True)
class Wording:
    """How one task is worded for one stage.

    `instructions`: instruction texts (the whole text before `### User Input:`, tokenised apart
    with BOS); a row draws one at random when there are several; empty: a bare prompt (the
    original's RL prompts). `user_input` has `{history}`, `{item}` and `{category}` slots; each
    history entry is written as `history_item` and joined by `history_sep`; `answer` wraps the
    target text (the response, before EOS)."""

    instructions: tuple
    user_input: str
    history_item: str = "{}"
    history_sep: str = ", "
    answer: str = "{}\n"


@dataclass(frozen=True)
class Task:
    """A task name with its wordings: `upstream[stage]` (stage: sft | eval | rl, as the original's
    dataset classes word it) and one `unified` wording for every stage."""

    name: str
    unified: Wording
    upstream: dict

    def wording(self, style: str, stage: str) -> Wording:
        if style == "unified":
            return self.unified
        if style == "upstream":
            return self.upstream[stage]
        raise InputError(f"prompt_style {style!r}: choose one of {PROMPT_STYLES}")


_SFTDATA_INSTRUCTIONS = tuple(  # SFTData / D3Dataset / EvalD3Dataset draw one per row (typos kept)
    UPSTREAM_HEADER + text
    for text in (
        "Given a list of {category} the user recetenly enjoy, please write a new {category} that the user may bought",
        "Considering the {category} that has recently captured the user's interest, kindly create a compilation of other {category} that the user might have played prior to this.",
        "Based on the user's current gaming preference, please draft a list of potential {category} they may have experienced beforehand.",
        "Reflecting on the {category} the user has taken pleasure in recently, we request that you formulate a list of {category} that may have preceded the user's current enjoyment.",
        "In light of the recent gaming enjoyment expressed by the user, please assemble a list of {category} that could potentially include past titles the user has engaged with.",
        "Taking into account the {category} that has lately provided enjoyment to the user, please put together an inventory of {category} the user might have explored previously.",
        "Given the user's newfound enjoyment of a particular {category}, would you kindly generate a roster of other {category} that might resonate with their past gaming experiences?",
        "In response to the user's recent fondness for a specific {category}, we seek your assistance in listing possible {category} the user may have delighted in earlier.",
        "With respect to the {category} currently enjoyed by the user, please compile a suggestive list of {category} they may have played in the past.",
        "Bearing in mind the {category} that the user has recently been enthralled by, please construct a catalog of other {category} that the user potentially partook in beforehand.",
        "In relation to the user's recent entertainment with a given {category}, it would be appreciated if you could curate a list of {category} that might form part of the user's previous gaming history.",
    )
)
_PREDICT = "Can you predict the next possible item that the user may expect?"
_SID_HISTORY_INPUT = "The user has interacted with items {history} in chronological order. " + _PREDICT
_PLAYED_WORDING = Wording(tuple(t + "\n \n" for t in _SFTDATA_INSTRUCTIONS),
                          "The user has palyed the following {category}s before: {history}", '"{}"', ",\t", '"{}"\n')
_TITLE_TO_SID_INPUT = "Which item has the title: {item}?"
_SID_TO_TITLE_INPUT = 'What is the title of item "{item}"?'
_DESCRIPTION_INPUT = 'An item can be described as follows: "{item}". Which item is it describing?'
_SIDHIS_TITLE_RL_INPUT = (
    "The user has interacted with items {history} in chronological order. Can you predict the title "
    "of the next item that the user may expect? Analyze user preferences and then predict the title "
    "of the next item."
)


def _instruction(text: str) -> tuple:
    return (UPSTREAM_HEADER + text + "\n\n",)


def _unified(instruction: str, user_input: str) -> Wording:
    return Wording((PROMPT_HEADER.format(instruction=instruction),), user_input)


_NEXT = "Can you predict the next possible item the user may expect?"
_UNIFIED_QA = "Answer the question about {category} and their semantic IDs."
TASKS = {
    task.name: task
    for task in (
        Task(
            "sid_history_to_sid",
            _unified("Given the {category} a user has interacted with, recommend the next item. " + _NEXT,
                     "The user has interacted with the following {category} in chronological order: "
                     "{history}. " + _NEXT),
            {
                "sft": Wording(_instruction(_PREDICT), _SID_HISTORY_INPUT),
                "eval": Wording(_instruction(_PREDICT), "Can you predict the next possible item the user may "
                                "expect, given the following chronological interaction history: {history}"),
                "rl": Wording((), _SID_HISTORY_INPUT),
            },
        ),
        Task(
            "sid_history_to_title",
            _unified("Given the {category} a user has interacted with, name the next item. " + _NEXT,
                     "The user has interacted with the following {category} in chronological order: "
                     "{history}. What is the title of the next item the user may expect?"),
            {
                "sft": Wording(_instruction("Can you recommend the next item for the user based on their "
                                            "interaction history?"),
                               "The user has sequentially interacted with items {history}. Can you recommend "
                               "the next item for him? Tell me the title of the item"),
                "rl": Wording((), _SIDHIS_TITLE_RL_INPUT),
            },
        ),
        Task(
            "title_history_to_title",
            _unified("Given the titles of {category} a user has interacted with, name the next item. " + _NEXT,
                     "The user has interacted with the following {category} in chronological order: "
                     "{history}. What is the title of the next item the user may expect?"),
            {
                "sft": _PLAYED_WORDING,  # SFTData
                "rl": _PLAYED_WORDING,  # D3Dataset
                "eval": replace(_PLAYED_WORDING, instructions=tuple(t + "\n\n" for t in _SFTDATA_INSTRUCTIONS)),
            },
        ),
        Task(
            "title_history_to_sid",
            _unified("Given the titles of {category} a user has interacted with, recommend the next item. " + _NEXT,
                     "The user has interacted with the following {category} in chronological order: "
                     "{history}. " + _NEXT),
            {
                "sft": Wording(_instruction("Based on the user's historical interaction with item titles, "
                                            "predict the semantic ID of the next item they may expect."),
                               "The user has interacted with the following {category} items in chronological "
                               "order: {history}. Can you predict the next item the user may expect?", '"{}"'),
                "rl": Wording((), "Given the title sequence of user historical interactive items: {history}, "
                              "can you recommend a suitable next item for the user?", '"{}"'),
            },
        ),
        Task(
            "sid_to_title",
            _unified(_UNIFIED_QA, "What is the title of the item with semantic ID {item}?"),
            {
                "sft": Wording(_instruction("Answer the question about item identification."), _SID_TO_TITLE_INPUT),
                "rl": Wording((), _SID_TO_TITLE_INPUT),
            },
        ),
        Task(
            "title_to_sid",
            _unified(_UNIFIED_QA, "Which item has the title: {item}?"),
            {
                "sft": Wording(_instruction("Answer the question about item identification."), _TITLE_TO_SID_INPUT),
                "rl": Wording((), _TITLE_TO_SID_INPUT),
            },
        ),
        Task(
            "description_to_sid",
            _unified(_UNIFIED_QA, "An item can be described as follows: {item}. Which item is it describing?"),
            {"rl": Wording((), _DESCRIPTION_INPUT)},
        ),
    )
}
_UPSTREAM_ITEM_TASK_NAMES = {"sid_to_title": "sid2title", "title_to_sid": "title2sid",
                             "description_to_sid": "description2sid"}


@dataclass(frozen=True)
class Example:
    """One prompt/answer pair plus the row's own target, which travels with it into rewards."""

    task: str
    wording: Wording
    instruction: str  # the instruction text (category filled in); "" for a bare prompt
    category: str  # the category phrase
    history: tuple  # texts of the history slot, oldest first (empty for item tasks)
    item: str  # text of the `{item}` slot (item tasks)
    target: str  # the answer's text (a SID or a title)
    target_sid: str
    target_item_id: int
    history_item_ids: tuple
    dedup: bool = False  # the target repeats the last history item

    def user_input(self, history_start: int = 0) -> str:
        w = self.wording
        history = w.history_sep.join(w.history_item.format(h) for h in self.history[history_start:])
        return w.user_input.format(history=history, item=self.item, category=self.category)

    def prompt_input(self, history_start: int = 0) -> str:
        """The user-input part of the prompt (tokenised apart from the instruction)."""
        return USER_INPUT.format(input=self.user_input(history_start))

    def prompt(self, history_start: int = 0) -> str:
        return self.instruction + self.prompt_input(history_start)

    @property
    def answer(self) -> str:
        return self.wording.answer.format(self.target)

    @property
    def history_key(self) -> str:
        """The original's `history_str` (prompt2history / history2target keys)."""
        return "::".join(self.history) if self.history else self.item


# ---------------------------------------------------------------------------------------------
# the catalogue of a run: loaded and validated once, handed to datasets, trie and evaluation


class Catalogue:
    """index.json (+ item.json, + info.txt) of one run, each read once, and the category phrase.
    With info.txt alone (evaluation), the index is the info file's SIDs.

    `answer_sids`: the SIDs constrained decoding can produce (info.txt's when given, else the
    index's). `split(path)` reads a split CSV once and cross-checks it: every history SID must be
    in the index, and every target must be reachable (its `item_sid` an answer SID and the SID of
    its `item_id`); unreachable targets are an InputError naming file, first line and count,
    unless `allow_unreachable_targets` (then a warning gives the count)."""

    def __init__(self, index_file=None, item_file=None, info_file=None, category: str = "",
                 allow_unreachable_targets: bool = False):
        if not index_file and not info_file:
            raise InputError("a Catalogue needs index.json or info.txt")
        self.index_file, self.item_file, self.info_file = index_file, item_file, info_file
        self.info = read_info(info_file) if info_file else None
        self.index = read_index(index_file) if index_file else index_of_info(self.info, info_file)
        self.item_meta = read_item_meta(item_file) if item_file else None
        self.category = category_phrase(category)
        self.allow_unreachable_targets = allow_unreachable_targets
        self.sid_of_item = {item_id: sid_string(tokens) for item_id, tokens in self.index.items()}
        self.answer_sids = ({sid for sid, _, _ in self.info} if self.info is not None
                            else set(self.sid_of_item.values()))
        self.unreachable: dict[str, int] = {}
        self._splits: dict[str, list[SplitRow]] = {}

    def require_item_meta(self, who: str) -> dict:
        if self.item_meta is None:
            raise InputError(f"{who} needs item.json: build the Catalogue with item_file")
        return self.item_meta

    def split(self, path) -> list[SplitRow]:
        key = str(Path(path).resolve())
        if key not in self._splits:
            rows = read_split_csv(path, item_meta=self.item_meta)
            self._check(path, rows)
            self._splits[key] = rows
        return self._splits[key]

    def _check(self, path, rows):
        index_sids = set(self.sid_of_item.values())
        source = self.index_file or self.info_file
        for row in rows:
            for sid in row.history_item_sid:
                if sid not in index_sids:
                    raise DataFormatError(path, f"history SID {sid!r} is not in {source}",
                                          line=row.line, field="history_item_sid")
        bad = []
        for row in rows:
            own = self.sid_of_item.get(str(row.item_id))
            if own is None:
                bad.append((row, f"item_id {row.item_id} is not in {source}"))
            elif row.item_sid != own:
                bad.append((row, f"item_sid {row.item_sid} is not the SID of item {row.item_id} ({own})"))
            elif row.item_sid not in self.answer_sids:
                bad.append((row, f"item_sid {row.item_sid} is not among the answer SIDs of "
                                 f"{self.info_file or self.index_file}"))
        if not bad:
            return
        self.unreachable[str(path)] = len(bad)
        first, why = bad[0]
        message = (f"{len(bad)} of {len(rows)} rows have a target the catalogue cannot produce "
                   f"(first at line {first.line}: {why})")
        if not self.allow_unreachable_targets:
            raise InputError(f"{path}: {message}; fix the split or the SID files, or pass "
                             f"--allow_unreachable_targets True to proceed (those rows can never be hit)")
        logger.warning("%s: %s; proceeding (--allow_unreachable_targets): they count as misses", path, message)


# ---------------------------------------------------------------------------------------------
# tokenisation: the original's way (instruction and prompt encoded apart), batched


def encode_upstream(tokenizer, texts, bos: bool, eos: bool) -> list[list[int]]:
    """The original's `Tokenizer.encode` over many texts: the tokenizer's own ids with special
    tokens, a leading BOS and trailing EOS it adds stripped, then BOS / EOS added on request (BOS
    only if the tokenizer has one)."""
    bos_id, eos_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    texts = list(texts)
    distinct = list(dict.fromkeys(texts))  # instructions and answers repeat: each is encoded once
    encoded = {}
    for text, ids in zip(distinct, tokenizer(distinct)["input_ids"]):
        start, end = 0, len(ids)
        while start < end and ids[start] == bos_id:
            start += 1
        while end > start and ids[end - 1] == eos_id:
            end -= 1
        ids = ([bos_id] if bos and bos_id is not None else []) + ids[start:end]
        if eos and eos_id is not None:
            ids.append(eos_id)
        encoded[text] = ids
    return [list(encoded[text]) for text in texts]


def _fit_prompts(examples, encode, fixed_lens, budgets, tokenizer):
    """Token ids of each example's variable prompt part (`encode(list of examples and history
    starts)`) so that fixed_len + len(ids) fits its budget. A prompt that is too long loses its
    oldest history items first, then the end of its item text (long descriptions). The original
    cuts `tokens[-max_len:]` instead, losing the head of the instruction; prompts that fit are
    identical. Returns (examples as shortened, history starts, ids, number shortened)."""
    examples = list(examples)
    for ex, fixed, budget in zip(examples, fixed_lens, budgets):
        if budget - fixed < 1:
            raise InputError(f"a {ex.task} answer of {ex.target[:60]!r}... leaves no room for its prompt within "
                             f"max_len (budget {budget} after the answer, {fixed} tokens of instruction): "
                             f"raise max_len / cutoff_len")
    starts = [0] * len(examples)
    ids = encode(examples, starts)
    pending = [i for i in range(len(examples)) if fixed_lens[i] + len(ids[i]) > budgets[i]]
    n_shortened = len(pending)
    while pending:
        for i in pending:
            ex = examples[i]
            if starts[i] < len(ex.history) - 1:
                starts[i] += 1
            elif ex.item:
                overflow = fixed_lens[i] + len(ids[i]) - budgets[i]
                examples[i] = _cut_item_text(ex, tokenizer, overflow)
            else:
                raise InputError(
                    f"a {ex.task} prompt is {fixed_lens[i] + len(ids[i])} tokens with at most one history "
                    f"item and no item text left to cut, above its budget of {budgets[i]}: raise max_len / cutoff_len"
                )
        for i, new_ids in zip(pending, encode([examples[i] for i in pending], [starts[i] for i in pending])):
            ids[i] = new_ids
        pending = [i for i in pending if fixed_lens[i] + len(ids[i]) > budgets[i]]
    return examples, starts, ids, n_shortened


def _cut_item_text(example, tokenizer, overflow: int):
    """The example with `overflow` tokens cut from the end of its item text (empty: none left)."""
    item_ids = tokenizer(example.item, add_special_tokens=False)["input_ids"]
    keep = max(0, len(item_ids) - max(1, overflow))
    return replace(example, item=tokenizer.decode(item_ids[:keep]).strip())


def _log_truncation(name, n_shortened, n_total, max_len):
    if n_shortened:
        logger.info("%s: shortened %d of %d prompts to fit %d tokens (oldest history items dropped, "
                    "then the end of long item texts)", name, n_shortened, n_total, max_len)


def tokenize_examples(examples, tokenizer, max_len, test=False, name="dataset") -> list[dict]:
    """The original's SFT/eval items: instruction encoded with BOS, prompt encoded apart, joined;
    SFT (test=False) adds the response encoded with EOS and labels -100 on every prompt token;
    test=True gives the prompt alone (input_ids / attention_mask) with the row's target fields."""
    if not test and tokenizer.eos_token_id is None:
        raise InputError("the tokenizer has no EOS token; SFT responses end with EOS")
    instructions = sorted({ex.instruction for ex in examples})
    instruction_ids = dict(zip(instructions, encode_upstream(tokenizer, instructions, bos=True, eos=False)))
    answers = [] if test else encode_upstream(tokenizer, [ex.answer for ex in examples], bos=False, eos=True)
    budgets = [max_len] * len(examples) if test else [max_len - len(a) for a in answers]
    fixed = [len(instruction_ids[ex.instruction]) for ex in examples]

    def encode(exs, starts):
        return encode_upstream(tokenizer, [ex.prompt_input(s) for ex, s in zip(exs, starts)], bos=False, eos=False)

    fitted, starts, prompt_ids, n_shortened = _fit_prompts(examples, encode, fixed, budgets, tokenizer)
    _log_truncation(name, n_shortened, len(examples), max_len)
    items = []
    for i, ex in enumerate(fitted):
        prompt = instruction_ids[ex.instruction] + prompt_ids[i]
        if test:
            items.append({
                "input_ids": prompt, "attention_mask": [1] * len(prompt),
                "prompt": ex.prompt(starts[i]), "target_sid": ex.target_sid,
                "target_item_id": ex.target_item_id, "history_item_ids": list(ex.history_item_ids),
                "task": ex.task,
            })
        else:
            input_ids = prompt + answers[i]
            items.append({"input_ids": input_ids, "attention_mask": [1] * len(input_ids),
                          "labels": [-100] * len(prompt) + answers[i]})
    return items


def rl_items(examples, tokenizer=None, max_len=None, name="dataset") -> tuple[list[dict], list[str]]:
    """The original's RL items (`prompt`, `completion`) with the row's own target fields. With a
    tokenizer and max_len, prompts too long for max_len minus the longest answer are shortened
    (oldest history first, then the end of the item text). Returns (items, final prompts)."""
    examples = list(examples)
    starts = [0] * len(examples)
    if tokenizer is not None and max_len is not None and examples:
        answer_len = 1 + max(map(len, tokenizer([ex.answer for ex in examples], add_special_tokens=False)["input_ids"]))

        def encode(exs, sts):
            return tokenizer([ex.prompt(s) for ex, s in zip(exs, sts)], add_special_tokens=False)["input_ids"]

        examples, starts, _, n_shortened = _fit_prompts(
            examples, encode, [0] * len(examples), [max_len - answer_len] * len(examples), tokenizer)
        _log_truncation(name, n_shortened, len(examples), max_len)
    items = [
        {"prompt": ex.prompt(s), "completion": ex.answer, "task": ex.task, "target_sid": ex.target_sid,
         "target_item_id": ex.target_item_id, "history_item_ids": list(ex.history_item_ids)}
        for ex, s in zip(examples, starts)
    ]
    return items, examples


# ---------------------------------------------------------------------------------------------
# rows: the original's sampling and order


def sample_rows(rows, sample, seed, who):
    """Split rows as the original chooses them: all in file order (sample < 0), or pandas'
    `df.sample(sample, random_state=seed)` order. More rows than the file has: all of them, in
    that shuffled order (the original raises); sample=0 selects nothing: an InputError."""
    if sample == 0:
        raise InputError(f"{who}: sample=0 selects no rows (use -1 for all)")
    if sample is None or sample < 0:
        return list(rows)
    positions = pd.Series(range(len(rows))).sample(min(sample, len(rows)), random_state=seed).tolist()
    return [rows[i] for i in positions]


def sample_items(items, sample, seed, who):
    """Item-task entries as the original chooses them: `random.seed(seed); random.sample(items,
    sample)` when 0 < sample < len(items), else all in order; sample=0 is an InputError."""
    if sample == 0:
        raise InputError(f"{who}: sample=0 selects no rows (use -1 for all)")
    if sample is None or sample < 0 or sample >= len(items):
        return list(items)
    return random.Random(seed).sample(list(items), sample)


def upstream_description(description) -> str:
    """RLTitle2SidDataset's description text: a "['...']" string becomes its first element."""
    if isinstance(description, list):
        return str(description[0]) if description else ""
    if isinstance(description, str) and description.startswith("['") and description.endswith("']"):
        try:
            parsed = ast.literal_eval(description)
        except (ValueError, SyntaxError):
            return description
        return parsed[0] if parsed else description
    return description


# ---------------------------------------------------------------------------------------------
# datasets: the original's classes, names and calls; one implementation underneath


class PromptDataset(Dataset):
    """Items of one dataset class, held in `.inputs` (the original's attribute).

    `stage` picks the upstream wording (sft | eval | rl); tokenised classes give SFT items
    (input_ids / attention_mask / labels) or, with test=True, the prompt alone; RL classes give
    `prompt` / `completion` plus the row's `task`, `target_sid`, `target_item_id` and
    `history_item_ids`, and fill the original's `prompt2history` / `history2target`."""

    stage = "sft"

    def _finish(self, examples, tokenizer=None, max_len=2048, test=False, rl=False):
        name = type(self).__name__
        if not examples:
            raise InputError(f"{name}: no rows left (after sample/dedup): check the file and --sample / --tasks")
        self.examples = examples
        if rl:
            self.inputs, self.examples = rl_items(examples, tokenizer, max_len, name)
            self.prompt2history = {item["prompt"]: ex.history_key for item, ex in zip(self.inputs, self.examples)}
            self.history2target = {ex.history_key: ex.answer for ex in self.examples}
        else:
            self.inputs = tokenize_examples(examples, tokenizer, max_len, test, name)

    @property
    def items(self):
        return self.inputs

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, idx):
        return self.inputs[idx]

    def get_inputs_list(self):
        return self.inputs

    def get_all(self):
        """The original's per-row records (evaluate.py writes them with "predict" added)."""
        if self.examples and not self.examples[0].history:
            return [{"task": _UPSTREAM_ITEM_TASK_NAMES[ex.task], "input": ex.item, "output": ex.target}
                    for ex in self.examples]
        return [{"input": ex.user_input(), "output": ex.answer, "history_str": ex.history_key, "dedup": ex.dedup}
                for ex in self.examples]


def _check_style(prompt_style):
    if prompt_style not in PROMPT_STYLES:
        raise InputError(f"prompt_style {prompt_style!r}: choose one of {PROMPT_STYLES}")


def _split_rows(train_file, catalogue):
    return catalogue.split(train_file) if catalogue is not None else read_split_csv(train_file)


def _catalogue(index_file, item_file, catalogue, category):
    """The run's catalogue, or one read from the paths as the original reads them."""
    if catalogue is None:
        catalogue = Catalogue(index_file, item_file)
    return catalogue, (category or catalogue.category)


def _choose_instruction(wording, rng):
    """A row's instruction; several: one drawn with `rng.randint`, as the original does."""
    n = len(wording.instructions)
    if n > 1:
        return wording.instructions[rng.randint(0, n - 1)]
    return wording.instructions[0] if n else ""


class _SequentialDataset(PromptDataset):
    """Split rows -> examples of `task` (history of `history_field` -> target)."""

    task = "sid_history_to_sid"
    history_field = "history_item_sid"

    def _examples(self, train_file, sample, seed, category, dedup, prompt_style, catalogue):
        _check_style(prompt_style)
        who = type(self).__name__
        if not category and catalogue is not None:
            category = catalogue.category
        self.rows = sample_rows(_split_rows(train_file, catalogue), sample, seed, who)
        wording = TASKS[self.task].wording(prompt_style, self.stage)
        rng = random.Random(seed)  # the original: random.seed(seed), then one randint per row in order
        examples = []
        for row in self.rows:
            instruction = _choose_instruction(wording, rng)
            examples.append(Example(
                task=self.task, wording=wording, instruction=instruction.format(category=category),
                category=category, history=tuple(getattr(row, self.history_field)), item="",
                target=self.target_of(row, train_file), target_sid=row.item_sid, target_item_id=row.item_id,
                history_item_ids=row.history_item_id, dedup=row.item_id == row.history_item_id[-1],
            ))
        if dedup:
            keep = [i for i, ex in enumerate(examples) if not ex.dedup]
            self.rows, examples = [self.rows[i] for i in keep], [examples[i] for i in keep]
        return examples

    def target_of(self, row, path):
        return row.item_sid


class _ItemDataset(PromptDataset):
    """Catalogue entries -> examples of `item_tasks`, through the original's dicts: a SID keeps
    its first position and its last item's title, a title its first position and last SID."""

    item_tasks = ("sid_to_title", "title_to_sid")

    def _examples(self, item_file, index_file, sample, seed, category, prompt_style, catalogue):
        _check_style(prompt_style)
        catalogue, category = _catalogue(index_file, item_file, catalogue, category)
        meta = catalogue.require_item_meta(type(self).__name__)
        by_task = {task: {} for task in self.item_tasks}  # input text -> (target, target sid, item id)
        for item_id, sid in catalogue.sid_of_item.items():
            fields = meta.get(item_id)
            if fields is None:
                continue
            title = fields["title"]
            if "sid_to_title" in by_task:
                by_task["sid_to_title"][sid] = (title, sid, int(item_id))
            if "title_to_sid" in by_task:
                by_task["title_to_sid"][title] = (sid, sid, int(item_id))
            if "description_to_sid" in by_task and "description" in fields:
                by_task["description_to_sid"][upstream_description(fields["description"])] = (sid, sid, int(item_id))
        entries = [(task, text, *value) for task, mapping in by_task.items() for text, value in mapping.items()]
        entries = sample_items(entries, sample, seed, type(self).__name__)
        examples = []
        for task, text, target, sid, item_id in entries:
            wording = TASKS[task].wording(prompt_style, self.stage)
            examples.append(Example(task, wording, _choose_instruction(wording, None).format(category=category),
                                    category, (), text, target, sid, item_id, ()))
        return examples


# --- SFT / evaluation classes (tokenised) ---


class SFTData(_SequentialDataset):
    """SFT: title history -> next item's title (one of the original's eleven instructions per row)."""

    task = "title_history_to_title"
    history_field = "history_item_title"

    def __init__(self, train_file, tokenizer, max_len=2048, sample=-1, test=False, seed=0, category="", K=4,
                 dedup=False, *, prompt_style="upstream", catalogue=None):
        examples = self._examples(train_file, sample, seed, category, dedup, prompt_style, catalogue)
        self._finish(examples, tokenizer, max_len, test)

    def target_of(self, row, path):
        return row.item_title


class EvalD3Dataset(SFTData):
    """Evaluation: title history -> next title (the original's EvalD3Dataset wording)."""

    stage = "eval"


class SidSFTDataset(_SequentialDataset):
    """SFT: SID history -> next SID."""

    def __init__(self, train_file, tokenizer, max_len=2048, sample=-1, test=False, seed=0, category="", K=4,
                 dedup=False, *, prompt_style="upstream", catalogue=None):
        examples = self._examples(train_file, sample, seed, category, dedup, prompt_style, catalogue)
        self._finish(examples, tokenizer, max_len, test)


class EvalSidDataset(SidSFTDataset):
    """Evaluation: SID history -> next SID, worded as the original's evaluate.py prompts
    (differently from SidSFTDataset: that drift is part of the original's recipe)."""

    stage = "eval"


class _CatalogueSequentialDataset(_SequentialDataset):
    """Sequential classes that read item.json and index.json for their targets."""

    def _setup(self, item_file, index_file, catalogue, category):
        self.catalogue, category = _catalogue(index_file, item_file, catalogue, category)
        return category

    def _missing(self, row, path, what):
        raise DataFormatError(path, f"item {row.item_id} has no {what} in the catalogue "
                                    f"({self.catalogue.item_file or self.catalogue.index_file})",
                              line=row.line, field="item_id")


class FusionSeqRecDataset(_CatalogueSequentialDataset):
    """SFT: SID history -> the title the original's sid2title gives the target SID."""

    task = "sid_history_to_title"

    def __init__(self, train_file, item_file, index_file, tokenizer, max_len=2048, sample=-1, test=False, seed=0,
                 category="", dedup=False, *, prompt_style="upstream", catalogue=None):
        category = self._setup(item_file, index_file, catalogue, category)
        meta = self.catalogue.require_item_meta(type(self).__name__)
        self.sid2title = {sid: meta[i]["title"] for i, sid in self.catalogue.sid_of_item.items() if i in meta}
        examples = self._examples(train_file, sample, seed, category, dedup, prompt_style, catalogue)
        self._finish(examples, tokenizer, max_len, test)

    def target_of(self, row, path):
        if row.item_sid not in self.sid2title:
            self._missing(row, path, f"title for SID {row.item_sid}")
        return self.sid2title[row.item_sid]


class TitleHistory2SidSFTDataset(_CatalogueSequentialDataset):
    """SFT: title history -> the target item's SID from index.json."""

    task = "title_history_to_sid"
    history_field = "history_item_title"

    def __init__(self, train_file, item_file, index_file, tokenizer, max_len=2048, sample=-1, test=False, seed=0,
                 category="", dedup=False, *, prompt_style="upstream", catalogue=None):
        category = self._setup(item_file, index_file, catalogue, category)
        examples = self._examples(train_file, sample, seed, category, dedup, prompt_style, catalogue)
        self._finish(examples, tokenizer, max_len, test)

    def target_of(self, row, path):
        sid = self.catalogue.sid_of_item.get(str(row.item_id))
        if sid is None:
            self._missing(row, path, "SID")
        return sid


class SidItemFeatDataset(_ItemDataset):
    """SFT: SID -> title and title -> SID; without a tokenizer the items are the original's raw
    {'task', 'input', 'output'} entries."""

    def __init__(self, item_file, index_file, tokenizer=None, max_len=2048, sample=-1, test=False, seed=0,
                 category="", *, prompt_style="upstream", catalogue=None):
        examples = self._examples(item_file, index_file, sample, seed, category, prompt_style, catalogue)
        if tokenizer is None:
            self.examples = examples
            self.inputs = self.get_all()
        else:
            self._finish(examples, tokenizer, max_len, test)


# --- RL classes (prompt strings; an optional tokenizer + max_len shortens over-long prompts) ---


class D3Dataset(SFTData):
    """RL: title history -> next title, the instruction inside the prompt string."""

    stage = "rl"

    def __init__(self, train_file, max_len=2048, sample=-1, seed=0, category="", dedup=False, *,
                 prompt_style="upstream", catalogue=None, tokenizer=None):
        examples = self._examples(train_file, sample, seed, category, dedup, prompt_style, catalogue)
        self._finish(examples, tokenizer, max_len, rl=True)


class SidDataset(_SequentialDataset):
    """RL: SID history -> next SID (a bare `### User Input:` prompt, as the original)."""

    stage = "rl"

    def __init__(self, train_file, max_len=2048, sample=-1, seed=0, category="", dedup=False, *,
                 prompt_style="upstream", catalogue=None, tokenizer=None):
        examples = self._examples(train_file, sample, seed, category, dedup, prompt_style, catalogue)
        self._finish(examples, tokenizer, max_len, rl=True)


class RLSeqTitle2SidDataset(_SequentialDataset):
    """RL: title history -> next SID (the original's rl.py samples it to 10k rows)."""

    stage = "rl"
    task = "title_history_to_sid"
    history_field = "history_item_title"

    def __init__(self, train_file, sample=-1, seed=0, category="", dedup=False, *, prompt_style="upstream",
                 catalogue=None, tokenizer=None, max_len=None):
        examples = self._examples(train_file, sample, seed, category, dedup, prompt_style, catalogue)
        self._finish(examples, tokenizer, max_len, rl=True)


class RLSidhis2TitleDataset(_CatalogueSequentialDataset):
    """RL: SID history -> next item's title (from item.json by the row's item_id)."""

    stage = "rl"
    task = "sid_history_to_title"

    def __init__(self, train_file, item_file, index_file, sample=-1, seed=0, category="", dedup=False, *,
                 prompt_style="upstream", catalogue=None, tokenizer=None, max_len=None):
        category = self._setup(item_file, index_file, catalogue, category)
        self.meta = self.catalogue.require_item_meta(type(self).__name__)
        examples = self._examples(train_file, sample, seed, category, dedup, prompt_style, catalogue)
        self._finish(examples, tokenizer, max_len, rl=True)

    def target_of(self, row, path):
        fields = self.meta.get(str(row.item_id))
        if fields is None:
            self._missing(row, path, "title")
        return fields["title"]


class RLTitle2SidDataset(_ItemDataset):
    """RL: title -> SID and description -> SID (duplicate titles/descriptions collapse as in the
    original's dicts)."""

    stage = "rl"
    item_tasks = ("title_to_sid", "description_to_sid")

    def __init__(self, item_file, index_file, sample=-1, seed=0, category="", dedup=False, *,
                 prompt_style="upstream", catalogue=None, tokenizer=None, max_len=None):
        examples = self._examples(item_file, index_file, sample, seed, category, prompt_style, catalogue)
        self._finish(examples, tokenizer, max_len, rl=True)


class RLSid2TitleDataset(_ItemDataset):
    """RL: SID -> title."""

    stage = "rl"
    item_tasks = ("sid_to_title",)

    def __init__(self, item_file, index_file, sample=-1, seed=0, category="", dedup=False, *,
                 prompt_style="upstream", catalogue=None, tokenizer=None, max_len=None):
        examples = self._examples(item_file, index_file, sample, seed, category, prompt_style, catalogue)
        self._finish(examples, tokenizer, max_len, rl=True)


# The task registry of the scripts: task name -> the dataset class that makes it.
SFT_TASKS = {
    "sid_history_to_sid": SidSFTDataset,
    "sid_title": SidItemFeatDataset,
    "sid_history_to_title": FusionSeqRecDataset,
    "title_history_to_title": SFTData,
    "title_history_to_sid": TitleHistory2SidSFTDataset,
}
RL_TASKS = {
    "sid_history_to_sid": SidDataset,
    "title_description_to_sid": RLTitle2SidDataset,
    "title_history_to_sid": RLSeqTitle2SidDataset,
    "sid_to_title": RLSid2TitleDataset,
    "sid_history_to_title": RLSidhis2TitleDataset,
}
