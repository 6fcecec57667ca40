"""Offline evaluation: constrained beam search over the valid SIDs for every test row.

    python evaluate.py --base_model output/sft/final_checkpoint --info_file data/info.txt \\
        --category Office_Products --test_data_path data/test.csv \\
        --result_json_data results/final_result_Office_Products.json --num_beams 50
    torchrun --nproc_per_node 2 evaluate.py ...      # or: accelerate launch --num_processes 2 ...

Several processes (torchrun / accelerate launch; gloo, so CPU works) split the test rows by whole
batches, and rank 0 gathers them and writes ONE predictions file in test-row order (atomically).
The batches do not depend on the number of processes, so the file is the same as one process's.

Each predictions row: user_id, input (the prompt), history_item_sid, history_item_id, output (the
target SID), target_item_id, predict (ranked SIDs), predict_item_ids, scores (sequence
log-probabilities). Score it with `calc.py --path <file> --item_path <info.txt>`.

Generation settings are explicit: beam search with sum-of-log-prob scores (divided by
length ** length_penalty; all completions have the same length unless SIDs carry a collision
level); nothing is read from the checkpoint's generation_config.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import torch

import calc
import data
import metrics
from decoding import plan_batches, sid_beam_search
from sid_trie import SidTrie
from modeling import check_vocab_matches, load_causal_lm, load_tokenizer
from transformers import set_seed

logger = logging.getLogger("evaluate")


def _as_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def evaluate_rows(model, tokenizer, trie: SidTrie, dataset, num_beams: int, batch_size: int = 8,
                  length_penalty: float = 0.0, progress=False, indices=None, sort_by_length=True) -> list[dict]:
    """Predictions rows for the dataset items at `indices` (all by default), in that order.

    `dataset`: an `EvalSidDataset` (items with prompt / prompt_ids / target_sid ..., and `.rows`)
    or any sequence of such item dicts. Batches follow `plan_batches` over the given items (or
    consecutive items with sort_by_length=False). Reusable from rl.py (--test_during_training)."""
    items = [dataset[i] for i in (range(len(dataset)) if indices is None else indices)]
    if not items:  # e.g. a process whose shard is empty
        return []
    rows = getattr(dataset, "rows", None)
    split_rows = [rows[i] for i in (range(len(dataset)) if indices is None else indices)] if rows is not None else None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    result = sid_beam_search(model, trie, [it["prompt_ids"] for it in items], num_beams, pad,
                             batch_size=batch_size, length_penalty=length_penalty, progress=progress,
                             sort_by_length=sort_by_length)
    out = []
    for i, item in enumerate(items):
        row = split_rows[i] if split_rows is not None else None
        record = {
            "user_id": row.user_id if row is not None else item.get("user_id"),
            "input": item["prompt"],
            "history_item_sid": list(row.history_item_sid) if row is not None else None,
            "history_item_id": list(item.get("history_item_ids", [])),
            "output": item["target_sid"],
            "target_item_id": item.get("target_item_id"),
            "predict": result.sids[i],
            "predict_item_ids": [_as_int(trie.item_ids[j][0]) for j in result.item_index[i].tolist()],
            "scores": [round(float(s), 6) for s in result.scores[i].tolist()],
        }
        out.append(record)
    return out


def shard_indices(prompt_ids, batch_size: int, rank: int, world_size: int) -> list[int]:
    """The dataset positions of this rank: every world_size-th batch of the global batch plan."""
    batches = plan_batches(prompt_ids, batch_size)
    return [i for b, batch in enumerate(batches) if b % world_size == rank for i in batch]


def evaluate_dataset(model, tokenizer, trie, dataset, num_beams, batch_size=8, length_penalty=0.0,
                     rank=0, world_size=1, progress=False) -> list[dict] | None:
    """All rows in dataset order on rank 0 (None on other ranks); shards by whole batches and
    gathers with torch.distributed when world_size > 1."""
    prompt_ids = [dataset[i]["prompt_ids"] for i in range(len(dataset))]
    mine = shard_indices(prompt_ids, batch_size, rank, world_size)
    # consecutive batch_size chunks of `mine` are exactly this rank's batches of the global plan
    rows = evaluate_rows(model, tokenizer, trie, _PlannedView(dataset, mine), num_beams, batch_size,
                         length_penalty, progress=progress, sort_by_length=False)
    pairs = list(zip(mine, rows))
    if world_size > 1:
        import torch.distributed as dist

        gathered = [None] * world_size if rank == 0 else None
        dist.gather_object(pairs, gathered, dst=0)
        if rank != 0:
            return None
        pairs = [p for part in gathered for p in part]
    ordered = [None] * len(dataset)
    for i, row in pairs:
        ordered[i] = row
    missing = [i for i, r in enumerate(ordered) if r is None]
    if missing:
        raise RuntimeError(f"rows {missing[:5]} were evaluated by no process")
    return ordered


class _PlannedView:
    """The dataset items (and split rows) at `indices`, in that order."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices
        rows = getattr(dataset, "rows", None)
        if rows is not None:
            self.rows = [rows[i] for i in indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def load_model_and_tokenizer(base_model, device="cpu", dtype="float32"):
    """The checkpoint (an HF folder with its tokenizer), in eval mode, on `device`."""
    if not os.path.isdir(base_model):
        raise FileNotFoundError(f"--base_model {base_model}: not a folder (expected an HF checkpoint folder, "
                                f"e.g. the SFT/RL final_checkpoint)")
    tokenizer = load_tokenizer(base_model, padding_side="left")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model = load_causal_lm(base_model, dtype=torch_dtype).to(device).eval()
    check_vocab_matches(model, tokenizer, base_model)
    return model, tokenizer


def _dist_setup():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")
    return rank, world, local_rank


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base_model", required=True, help="HF checkpoint folder (model + tokenizer with SID tokens)")
    p.add_argument("--info_file", required=True, help="info.txt: SID<TAB>title<TAB>item_id per item")
    p.add_argument("--category", default="", help="category name for the prompt (e.g. Office_Products)")
    p.add_argument("--test_data_path", required=True, help="test split CSV")
    p.add_argument("--result_json_data", required=True, help="predictions JSON to write")
    p.add_argument("--batch_size", type=int, default=8, help="prompts decoded together (x num_beams rows)")
    p.add_argument("--num_beams", type=int, default=50, help="beams per prompt: the top-K list ranked (K up to num_beams)")
    p.add_argument("--max_new_tokens", type=int, default=256,
                   help="upper bound on the completion length; must cover the longest SID + newline + EOS")
    p.add_argument("--length_penalty", type=float, default=0.0,
                   help="rank by log-prob / length**length_penalty (0: sum of log-probs, the documents' setting)")
    p.add_argument("--seed", type=int, default=42, help="random seed")
    p.add_argument("--K", type=int, default=0, help="evaluate only the first K test rows (0: all)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="accepted for the documents' scripts; beam search is deterministic and ignores it")
    p.add_argument("--guidance_scale", type=float, default=1.0,
                   help="accepted for the documents' scripts; no classifier-free guidance here")
    p.add_argument("--max_len", type=int, default=2048, help="prompt + answer token budget")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="model weights dtype")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rank, world, local_rank = _dist_setup()
    set_seed(args.seed)
    if args.temperature != 1.0:
        logger.warning("--temperature %s is ignored: beam search is deterministic", args.temperature)
    if args.guidance_scale != 1.0:
        logger.warning("--guidance_scale %s is ignored: no classifier-free guidance", args.guidance_scale)
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"

    model, tokenizer = load_model_and_tokenizer(args.base_model, device, args.dtype)
    try:  # checks that every SID token is one token of the checkpoint's tokenizer
        trie = SidTrie.from_info_file(args.info_file, tokenizer)
    except ValueError as err:
        raise SystemExit(f"evaluate.py: {args.base_model} cannot decode the SIDs of {args.info_file}: {err}")
    if trie.depth > args.max_new_tokens:
        raise ValueError(f"--max_new_tokens {args.max_new_tokens} is below the completion length {trie.depth} "
                         f"(SID tokens + newline + EOS)")
    dataset = data.EvalSidDataset(train_file=args.test_data_path, tokenizer=tokenizer, max_len=args.max_len,
                                  test=True, category=data.category_phrase(args.category))
    if args.K and args.K > 0:
        dataset = _PlannedView(dataset, list(range(min(args.K, len(dataset)))))
    if rank == 0:
        logger.info("%d test rows, %d valid SIDs (depth %d), %d beams, batch %d, %d process(es)",
                    len(dataset), len(trie), trie.depth, args.num_beams, args.batch_size, world)
    start = time.time()
    progress = False if args.no_progress or rank != 0 else f"rank 0/{world}" if world > 1 else "evaluate"
    rows = evaluate_dataset(model, tokenizer, trie, dataset, args.num_beams, args.batch_size,
                            args.length_penalty, rank, world, progress)
    if rank == 0:
        data.write_json(rows, args.result_json_data, indent=2)
        elapsed = time.time() - start
        logger.info("wrote %s: %d rows in %.1f s (%.2f users/s)", args.result_json_data, len(rows), elapsed,
                    len(rows) / max(elapsed, 1e-9))
        result = calc.compute_metrics(rows, set(trie.sids))
        print(metrics.format_table({os.path.basename(args.result_json_data): result}, result["ks"]))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
