"""Data layer: the MiniOneRec file formats, the one prompt builder, and every SFT/RL/eval dataset.

File formats (README "File formats"): split CSVs, index.json, item.json, info.txt.

Every reader validates as it parses and raises `DataFormatError` naming the file, the 1-based line
and the field, so bad input never surfaces as a traceback from deep inside a library.
Every writer is atomic: it writes a temporary file next to the target and renames it.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import os
import random
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from torch.utils.data import Dataset

from runtime import InputError

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
        raise FileNotFoundError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataFormatError(path, "file is empty")
    return path


def _load_json(path):
    path = _require_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
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
    counts = Counter(sid_string(t) for t in index.values())
    colliding = sum(c for c in counts.values() if c > 1)
    if colliding:
        logger.warning(
            "%s: %d of %d items share their SID with another item (%d SIDs are shared); "
            "a generated SID for them maps to more than one item",
            path, colliding, len(index), sum(1 for c in counts.values() if c > 1),
        )
    return {str(k): list(v) for k, v in index.items()}


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
    path = _require_file(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\n")
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


def write_info(index: dict, item_meta: dict, path):
    with atomic_write(path) as f:
        for item_id, tokens in index.items():
            title = " ".join(str(item_meta.get(str(item_id), {}).get("title", "")).split())
            f.write(f"{sid_string(tokens)}\t{title}\t{item_id}\n")


# ---------------------------------------------------------------------------------------------
# split CSVs


def _parse_list(text, path, line, field):
    try:
        value = ast.literal_eval(text) if text.strip() else []
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
    path = _require_file(path)
    known_sids = {sid_string(t) for t in index.values()} if index is not None else None
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
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
# prompts: the one place that words every task, for SFT, RL and evaluation alike

CATEGORY_PHRASES = {
    "Industrial_and_Scientific": "industrial and scientific items",
    "Office_Products": "office products",
    "Toys_and_Games": "toys and games",
    "Sports_and_Outdoors": "sports and outdoors products",
    "Video_Games": "video games",
    "Books": "books",
    "CDs_and_Vinyl": "music albums",
    "Movies_and_TV": "movies and TV shows",
    "Musical_Instruments": "musical instruments",
    "Pet_Supplies": "pet supplies",
    "Arts_Crafts_and_Sewing": "arts and crafts products",
    "Beauty": "beauty products",
    "Steam": "games",
    "ml-100k": "movies",
    "ml-1m": "movies",
}


def category_phrase(category: str) -> str:
    """Plural phrase for a category; unknown names are humanised ('Home_and_Kitchen' ->
    'home and kitchen items')."""
    if category in CATEGORY_PHRASES:
        return CATEGORY_PHRASES[category]
    words = " ".join(str(category).replace("_", " ").replace("-", " ").split()).lower()
    return f"{words} items" if words else "items"


PROMPT_HEADER = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n"
)


def build_prompt(instruction: str, user_input: str) -> str:
    """Alpaca-style prompt ending where the model starts writing its answer."""
    return PROMPT_HEADER.format(instruction=instruction) + f"### User Input: \n{user_input}\n\n### Response:\n"


def build_response(answer: str) -> str:
    """The text after `### Response:\n`; the tokenised response is this plus EOS."""
    return f"{answer}\n"


@dataclass(frozen=True)
class Task:
    """How one task words its prompt. `user_input` has a `{history}` slot for sequential tasks."""

    name: str
    instruction: str
    user_input: str

    def prompt(self, category: str, history=(), item="") -> str:
        text = self.user_input.format(
            category=category_phrase(category), history=", ".join(history), item=item
        )
        return build_prompt(self.instruction.format(category=category_phrase(category)), text)


_NEXT = "Can you predict the next possible item the user may expect?"
TASKS = {
    task.name: task
    for task in (
        Task(
            "sid_history_to_sid",
            "Given the {category} a user has interacted with, recommend the next item. " + _NEXT,
            "The user has interacted with the following {category} in chronological order: "
            "{history}. " + _NEXT,
        ),
        Task(
            "sid_history_to_title",
            "Given the {category} a user has interacted with, name the next item. " + _NEXT,
            "The user has interacted with the following {category} in chronological order: "
            "{history}. What is the title of the next item the user may expect?",
        ),
        Task(
            "title_history_to_title",
            "Given the titles of {category} a user has interacted with, name the next item. " + _NEXT,
            "The user has interacted with the following {category} in chronological order: "
            "{history}. What is the title of the next item the user may expect?",
        ),
        Task(
            "title_history_to_sid",
            "Given the titles of {category} a user has interacted with, recommend the next item. "
            + _NEXT,
            "The user has interacted with the following {category} in chronological order: "
            "{history}. " + _NEXT,
        ),
        Task(
            "sid_to_title",
            "Answer the question about {category} and their semantic IDs.",
            "What is the title of the item with semantic ID {item}?",
        ),
        Task(
            "title_to_sid",
            "Answer the question about {category} and their semantic IDs.",
            "Which item has the title: {item}?",
        ),
        Task(
            "description_to_sid",
            "Answer the question about {category} and their semantic IDs.",
            "An item can be described as follows: {item}. Which item is it describing?",
        ),
    )
}


@dataclass(frozen=True)
class Example:
    """One prompt/answer pair plus the row's own target, which travels with it into rewards."""

    task: str
    category: str
    history: tuple  # texts of the history slot, oldest first (empty for item tasks)
    item: str  # text of the `{item}` slot (item tasks)
    answer: str
    target_sid: str
    target_item_id: int
    history_item_ids: tuple

    def prompt(self, history_start: int = 0) -> str:
        return TASKS[self.task].prompt(self.category, self.history[history_start:], self.item)


def sequential_examples(rows, task, category, item_meta=None) -> list[Example]:
    """Examples of a sequential task (history -> next item) from split rows."""
    history_field = "history_item_sid" if task.startswith("sid_history") else "history_item_title"
    answer_is_sid = task.endswith("_to_sid")
    examples = []
    for row in rows:
        if answer_is_sid:
            answer = row.item_sid
        else:
            answer = item_meta[str(row.item_id)]["title"] if item_meta else row.item_title
        examples.append(
            Example(
                task=task,
                category=category,
                history=tuple(getattr(row, history_field)),
                item="",
                answer=" ".join(answer.split()),
                target_sid=row.item_sid,
                target_item_id=row.item_id,
                history_item_ids=row.history_item_id,
            )
        )
    return examples


def item_examples(index, item_meta, task, category) -> list[Example]:
    """Examples of an item task (SID <-> title, description -> SID) for every indexed item."""
    examples = []
    for item_id, tokens in index.items():
        fields = item_meta.get(item_id)
        if fields is None:
            continue
        sid, title = sid_string(tokens), " ".join(fields["title"].split())
        if not title:
            continue
        if task == "sid_to_title":
            item, answer = sid, title
        elif task == "title_to_sid":
            item, answer = title, sid
        elif task == "description_to_sid":
            description = item_description(fields)
            item, answer = (f"{title}. {description}" if description else title), sid
        else:
            raise ValueError(f"unknown item task {task!r}")
        examples.append(Example(task, category, (), item, answer, sid, int(item_id), ()))
    if not examples:
        raise ValueError("no item of the index has an entry with a title in item.json")
    return examples


# ---------------------------------------------------------------------------------------------
# tokenisation: batched, response kept whole, history cut from the left when too long


def _fit_prompts(examples, tokenizer, budgets):
    """Token ids and texts of each example's prompt within its budget. A prompt that is too long
    loses its oldest history items first (histories hold at most 10 items, so this loops a few
    times over the few long prompts only), then the end of its item text (long descriptions of the
    item tasks). Returns (ids, texts, number of prompts shortened)."""
    examples = list(examples)
    history_starts = [0] * len(examples)
    texts = [ex.prompt() for ex in examples]
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
    pending = [i for i in range(len(examples)) if len(ids[i]) > budgets[i]]
    n_shortened = len(pending)
    while pending:
        for i in pending:
            ex = examples[i]
            if history_starts[i] < len(ex.history) - 1:
                history_starts[i] += 1
            elif ex.item:
                examples[i] = _cut_item_text(ex, tokenizer, overflow=len(ids[i]) - budgets[i])
            else:
                raise ValueError(
                    f"a {ex.task} prompt is {len(ids[i])} tokens with at most one history item and no "
                    f"item text left to cut, above its budget of {budgets[i]}: raise max_len / cutoff_len"
                )
            texts[i] = examples[i].prompt(history_starts[i])
        for i, prompt_ids in zip(pending, tokenizer([texts[i] for i in pending], add_special_tokens=True)["input_ids"]):
            ids[i] = prompt_ids
        pending = [i for i in pending if len(ids[i]) > budgets[i]]
    return ids, texts, n_shortened


def _cut_item_text(example, tokenizer, overflow: int):
    """The example with `overflow` tokens cut from the end of its item text (empty: none left)."""
    item_ids = tokenizer(example.item, add_special_tokens=False)["input_ids"]
    keep = max(0, len(item_ids) - max(1, overflow))
    return replace(example, item=tokenizer.decode(item_ids[:keep]).strip())


def _log_truncation(name, n_shortened, n_total, max_len):
    if n_shortened:
        logger.info("%s: shortened %d of %d prompts to fit %d tokens (oldest history items dropped, "
                    "then the end of long item texts)", name, n_shortened, n_total, max_len)


def tokenize_sft(examples, tokenizer, max_len, name="dataset") -> list[dict]:
    """input_ids / attention_mask / labels, labels -100 on every prompt token."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; SFT responses end with EOS")
    response_ids = tokenizer(
        [build_response(ex.answer) for ex in examples], add_special_tokens=False
    )["input_ids"]
    for ids in response_ids:
        ids.append(tokenizer.eos_token_id)
    budgets = [max_len - len(r) for r in response_ids]
    prompt_ids, _, n_shortened = _fit_prompts(examples, tokenizer, budgets)
    _log_truncation(name, n_shortened, len(examples), max_len)
    items = []
    for prompt, response in zip(prompt_ids, response_ids):
        input_ids = prompt + response
        items.append(
            {
                "input_ids": input_ids,
                "attention_mask": [1] * len(input_ids),
                "labels": [-100] * len(prompt) + response,
            }
        )
    return items


def fit_prompt_texts(examples, tokenizer, max_len, answer_len, name="dataset"):
    """(prompt texts, prompt ids) leaving `answer_len` tokens for the answer within max_len."""
    prompt_ids, texts, n_shortened = _fit_prompts(examples, tokenizer, [max_len - answer_len] * len(examples))
    _log_truncation(name, n_shortened, len(examples), max_len)
    return texts, prompt_ids


# ---------------------------------------------------------------------------------------------
# datasets: thin views over the shared code above, with the documents' names and keyword args


def load_rows(train_file, sample=-1, seed=0, dedup=False, index=None, item_meta=None):
    """Rows of a split CSV, optionally de-duplicated (target == last history item dropped) and
    sub-sampled to `sample` rows reproducibly by `seed` (-1 keeps all)."""
    rows = read_split_csv(train_file, index=index, item_meta=item_meta)
    if dedup:
        rows = [r for r in rows if r.history_item_id[-1] != r.item_id]
    return _subsample(rows, sample, seed)


def _subsample(items, sample, seed):
    if sample is None or sample < 0 or sample >= len(items):
        return list(items)
    chosen = sorted(random.Random(seed).sample(range(len(items)), sample))
    return [items[i] for i in chosen]


class ExampleDataset(Dataset):
    """Examples of one task, rendered for a stage:
    - SFT (default): input_ids / attention_mask / labels, labels -100 on every prompt token;
    - prompts only (RL, evaluation, or `test=True`): the prompt text and ids with the row's own
      target SID, target item id and history item ids, and `completion` = the answer text.
    """

    prompts_only = False

    def __init__(self, examples, tokenizer, max_len, prompts_only=None, name=None):
        self.examples = examples
        name = name or type(self).__name__
        if prompts_only is None:
            prompts_only = self.prompts_only
        if not prompts_only:
            self.items = tokenize_sft(examples, tokenizer, max_len, name)
            return
        answer_len = 1 + max(
            map(len, tokenizer([build_response(ex.answer) for ex in examples], add_special_tokens=False)["input_ids"])
        )
        prompts, prompt_ids = fit_prompt_texts(examples, tokenizer, max_len, answer_len, name)
        self.items = [
            {
                "prompt": prompt,
                "prompt_ids": ids,
                "completion": ex.answer,
                "target_sid": ex.target_sid,
                "target_item_id": ex.target_item_id,
                "history_item_ids": list(ex.history_item_ids),
                "task": ex.task,
            }
            for prompt, ids, ex in zip(prompts, prompt_ids, examples)
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        return self.items[idx]

    def get_all(self):
        return list(self.items)


def _index_and_meta(index_file, item_file):
    return (read_index(index_file) if index_file else None,
            read_item_meta(item_file) if item_file else None)


class _SequentialDataset(ExampleDataset):
    task = "sid_history_to_sid"

    def __init__(self, train_file, tokenizer, max_len=2048, sample=-1, seed=0, category="",
                 item_file=None, index_file=None, test=False, dedup=False):
        index, meta = _index_and_meta(index_file, item_file)
        rows = load_rows(train_file, sample, seed, dedup, index, meta)
        self.rows = rows
        super().__init__(sequential_examples(rows, self.task, category, meta), tokenizer, max_len,
                         prompts_only=test or self.prompts_only)


class _ItemDataset(ExampleDataset):
    item_tasks = ("sid_to_title", "title_to_sid")

    def __init__(self, item_file, index_file, tokenizer, max_len=2048, sample=-1, seed=0,
                 category="", test=False):
        index, meta = read_index(index_file), read_item_meta(item_file)
        examples = [ex for task in self.item_tasks for ex in item_examples(index, meta, task, category)]
        super().__init__(_subsample(examples, sample, seed), tokenizer, max_len,
                         prompts_only=test or self.prompts_only)


class SidSFTDataset(_SequentialDataset):
    """SFT: SID history -> next SID."""


class FusionSeqRecDataset(_SequentialDataset):
    """SFT: SID history -> next item's title."""

    task = "sid_history_to_title"


class SFTData(_SequentialDataset):
    """SFT: title history -> next item's title."""

    task = "title_history_to_title"


class TitleHistory2SidSFTDataset(_SequentialDataset):
    """SFT: title history -> next SID."""

    task = "title_history_to_sid"


class SidItemFeatDataset(_ItemDataset):
    """SFT: SID -> title and title -> SID, for every indexed item."""


class SidDataset(_SequentialDataset):
    """RL: SID history -> next SID."""

    prompts_only = True


class RLSeqTitle2SidDataset(_SequentialDataset):
    """RL: title history -> next SID (the documents sample it to 10k rows)."""

    prompts_only = True
    task = "title_history_to_sid"


class RLTitle2SidDataset(_ItemDataset):
    """RL: title and description -> SID."""

    prompts_only = True
    item_tasks = ("title_to_sid", "description_to_sid")


class EvalSidDataset(_SequentialDataset):
    """Evaluation: SID history -> next SID prompts (generation input) with their targets."""

    prompts_only = True


SFT_TASK_DATASETS = (SidSFTDataset, SidItemFeatDataset, FusionSeqRecDataset, SFTData, TitleHistory2SidSFTDataset)
