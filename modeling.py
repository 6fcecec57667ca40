"""Loading and saving causal LMs and their tokenizers, shared by sft.py, rl.py and evaluate.py.

`--base_model` may be an HF folder or a `.gguf` file (transformers de-quantises it to float32).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from runtime import InputError, PathNotFound

import hardware

logger = logging.getLogger(__name__)


def _split_gguf(path) -> tuple[str, dict]:
    """(folder or file path, extra from_pretrained kwargs) for an HF folder or a .gguf file."""
    path = Path(path)
    if not path.exists():
        raise PathNotFound(f"model path not found: {path}")
    if path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    if not (path / "config.json").is_file():
        raise PathNotFound(f"{path}: not a model folder (no config.json) and not a .gguf file")
    return str(path), {}


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids as HF generate makes them: the count of real tokens before each one, pads at 0.
    SFT, RL scoring and decoding all use it, so left padding never shifts positions."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def trains_with_checkpointing(model) -> bool:
    """True while `model` (or the module DDP / DeepSpeed wraps) trains with gradient checkpointing,
    which builds no KV cache: a prefix cannot then be run once and shared."""
    inner = getattr(model, "module", model)
    return inner.training and bool(getattr(inner, "is_activation_checkpointing", False))


def left_pad(sequences, pad_token_id, device):
    """(input_ids, attention_mask, position_ids) of token-id lists, left-padded to the longest."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), int(pad_token_id), dtype=torch.long)
    attn = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if len(seq) == 0:
            raise ValueError("empty prompt")
        ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        attn[i, width - len(seq):] = 1
    return ids.to(device), attn.to(device), positions_from_mask(attn).to(device)


def load_tokenizer(path, padding_side: str = "left"):
    """Tokenizer with pad = EOS (the documents' convention) and the given padding side."""
    folder, extra = _split_gguf(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    if tokenizer.eos_token_id is None:
        raise InputError(f"{path}: the tokenizer has no EOS token")
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def default_dtype(precision: str = "auto") -> torch.dtype:
    """`precision` auto: bf16 on a GPU that supports it, or on a CPU where bf16 is measured to be
    clearly faster than fp32 (hardware.cpu_prefers_bf16: native bf16 instructions, then a timed
    matmul); fp32 otherwise. bf16 / fp32 force either."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return torch.float32
    if precision != "auto":
        raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if hardware.cpu_prefers_bf16() else torch.float32


def load_causal_lm(path, dtype=None, from_scratch: bool = False, seed: int = 0):
    """The model of `path`, or a freshly initialised one of its config when `from_scratch`."""
    folder, extra = _split_gguf(path)
    if from_scratch:
        config = AutoConfig.from_pretrained(folder, **extra)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or "auto", **extra)
    # A GGUF-loaded model is marked as quantised; saving that marker breaks reloading.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.is_quantized = False
    return model


def check_vocab_matches(model, tokenizer, source):
    """The embedding matrix must cover the tokenizer, or SID tokens index past it."""
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < len(tokenizer):
        raise InputError(
            f"{source}: the tokenizer has {len(tokenizer)} tokens but the model's embedding matrix "
            f"has {rows} rows: tokenizer and checkpoint do not belong together"
        )


def save_pretrained_atomic(model, tokenizer, output_dir):
    """Save model + tokenizer into a temporary sibling folder, then swap it into place. The folder
    gets the usual mode (umask), not mkdtemp's private 0700."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.with_name(f".{output_dir.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            # transformers saves padding_side only from init_kwargs
            tokenizer.init_kwargs["padding_side"] = tokenizer.padding_side
            tokenizer.save_pretrained(tmp)
        if output_dir.exists():
            old = output_dir.with_name(f".{output_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(output_dir, old)
            os.replace(tmp, output_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
