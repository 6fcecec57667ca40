"""Tiny, offline test assets: tokenizers trained from scratch in milliseconds, from-scratch models of
a few hundred thousand parameters, and a synthetic catalogue + split CSVs in the MiniOneRec format.

The synthetic log follows a deterministic rule (the next item is `(last + 1) % n_items`), so a model
that learns anything at all learns it, and metrics have a known best value.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

import data

REPO = Path(__file__).resolve().parents[1]
SHARED_OFFICE = REPO.parent / "shared" / "data" / "Office_Products"
TOKENIZER_KINDS = ("gpt2_bpe", "sentencepiece_bos")

_CORPUS = [
    data.build_prompt("Answer the question about items and their semantic IDs.", "Which item has the title: x?"),
    "Below is an instruction that describes a task, paired with an input that provides further context.",
    "The user has interacted with the following items in chronological order: Can you predict the "
    "next possible item the user may expect? What is the title of the next item? Which item is it "
    "describing? An item can be described as follows:",
    "movie film toy pen paper office blue red green black white 0123456789 (1995) comedy drama",
]


def make_tokenizer(kind: str = "gpt2_bpe", extra_texts=()) -> PreTrainedTokenizerFast:
    """A small tokenizer of a real family: GPT-2 byte-level BPE (no BOS), or a SentencePiece-style
    (Metaspace) BPE that prepends a BOS token like Llama's."""
    corpus = list(_CORPUS) + list(extra_texts)
    if kind == "gpt2_bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer)
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    if kind == "sentencepiece_bos":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
        trainer = trainers.BpeTrainer(
            vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens, show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
    raise ValueError(kind)


def make_model(tokenizer, arch: str = "qwen2", hidden: int = 32, layers: int = 2, seed: int = 0):
    """From-scratch causal LM sized to the tokenizer (SID tokens included)."""
    torch.manual_seed(seed)
    cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[arch]
    config = cls(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return AutoModelForCausalLM.from_config(config)


def write_base_model(folder, kind: str = "gpt2_bpe"):
    """A tiny from-scratch model folder (model + tokenizer, no SID tokens): a --base_model."""
    tok = make_tokenizer(kind)
    make_model(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_catalogue(n_items: int = 12, levels: int = 3, codes: int = 4) -> tuple[dict, dict]:
    """(index, item_meta) of n_items with distinct SIDs built from the item number's digits."""
    prefixes = "abcdefgh"
    index, meta = {}, {}
    for i in range(n_items):
        digits = [(i // codes**lvl) % codes for lvl in reversed(range(levels))]
        index[str(i)] = [f"<{prefixes[lvl]}_{d}>" for lvl, d in enumerate(digits)]
        meta[str(i)] = {"title": f"Item number {i}", "description": f"a {['red', 'blue', 'green'][i % 3]} thing"}
    return index, meta


def synthetic_rows(index, meta, n_users: int = 30, seq_len: int = 6, seed: int = 0):
    """Split rows where each user's sequence counts up from a random start: next = last + 1."""
    g = torch.Generator().manual_seed(seed)
    n = len(index)
    rows = []
    for u in range(n_users):
        start = int(torch.randint(0, n, (1,), generator=g))
        seq = [(start + t) % n for t in range(seq_len)]
        for t in range(1, seq_len):
            hist = seq[max(0, t - 10):t]
            rows.append({
                "user_id": f"U{u}",
                "history_item_title": [meta[str(i)]["title"] for i in hist],
                "item_title": meta[str(seq[t])]["title"],
                "history_item_id": hist,
                "item_id": seq[t],
                "history_item_sid": [data.sid_string(index[str(i)]) for i in hist],
                "item_sid": data.sid_string(index[str(seq[t])]),
            })
    return rows


def write_dataset(folder, n_items: int = 12, n_users: int = 30, seq_len: int = 6, category="Toy_Store"):
    """Write index.json, item.json, info.txt and train/valid/test CSVs; returns the paths."""
    folder = Path(folder)
    index, meta = make_catalogue(n_items)
    rows = synthetic_rows(index, meta, n_users, seq_len)
    n_test = max(1, len(rows) // 10)
    paths = {name: folder / f"{name}.csv" for name in ("train", "valid", "test")}
    data.write_split_csv(rows[: -2 * n_test], paths["train"])
    data.write_split_csv(rows[-2 * n_test: -n_test], paths["valid"])
    data.write_split_csv(rows[-n_test:], paths["test"])
    paths["index"] = folder / "index.json"
    paths["item"] = folder / "item.json"
    paths["info"] = folder / "info.txt"
    data.write_index(index, paths["index"])
    paths["item"].write_text(json.dumps(meta))
    data.write_info(index, meta, paths["info"])
    paths["category"] = category
    return paths


def with_sids(tok, index):
    """`tok` with the index's SID tokens added, pad = EOS, left padding (as sft.py prepares it)."""
    data.add_sid_tokens(tok, index)
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def tokenizer_with_sids(kind: str, index) -> PreTrainedTokenizerFast:
    return with_sids(make_tokenizer(kind), index)
