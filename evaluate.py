"""Offline evaluation: constrained beam search over the valid SIDs for every test row.

    python evaluate.py --base_model output/sft/final_checkpoint --info_file data/info.txt \\
        --category Office_Products --test_data_path data/test.csv \\
        --result_json_data results/final_result_Office_Products.json --num_beams 50
    torchrun --nproc_per_node 2 evaluate.py ...      # or: accelerate launch --num_processes 2 ...

Several processes (torchrun / accelerate launch; gloo, so CPU works) split the test rows by whole
batches, and rank 0 gathers them and writes ONE predictions file in test-row order (atomically).
The batches do not depend on the number of processes, so the file is the same as one process's.

The prompts are the original's EvalSidDataset prompts, token for token (`--prompt_style unified`:
the project's one wording). A checkpoint saved by the original's sft.py evaluates as it is.

Each predictions row is the original's record, input (the user input text) and output (the
target SID + newline), with user_id, history_item_sid, history_item_id, target_item_id, predict
(ranked SIDs), predict_item_ids and scores (sequence log-probabilities). Score it with
`calc.py --path <file> --item_path <info.txt>`.

Generation settings are explicit: beam search with sum-of-log-prob scores (divided by
length ** length_penalty; all completions have the same length unless SIDs carry a collision
level); nothing is read from the checkpoint's generation_config.json.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import torch
from transformers import set_seed

import data
import metrics
from decoding import plan_batches, sid_beam_search
from modeling import check_vocab_matches, default_dtype, load_causal_lm, load_tokenizer
from runtime import ArgumentParser, InputError, boolean, positive_int, run_main
from sid_trie import SidTrie

logger = logging.getLogger("evaluate")


def _as_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def evaluate_rows(model, tokenizer, trie: SidTrie, dataset, num_beams: int, batch_size: int = 4,
                  length_penalty: float = 0.0, progress=False, indices=None, sort_by_length=True) -> list[dict]:
    """Predictions rows for the dataset items at `indices` (all by default), in that order.

    `dataset`: an `EvalSidDataset(test=True)` (or a view of one): items with `input_ids` and the
    row's target, `.rows` (its split rows) and `get_all()` (the original's records). Each row is
    the original's record (`input`, `output` = target SID + newline) with the split row's ids and
    `predict` (ranked SIDs), `predict_item_ids` and `scores` (sequence log-probabilities). Batches
    follow `plan_batches` over the given items (or consecutive items with sort_by_length=False)."""
    indices = list(range(len(dataset)) if indices is None else indices)
    if not indices:  # e.g. a process whose shard is empty
        return []
    items = [dataset[i] for i in indices]
    records = dataset.get_all()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    result = sid_beam_search(model, trie, [it["input_ids"] for it in items], num_beams, pad,
                             batch_size=batch_size, length_penalty=length_penalty, progress=progress,
                             sort_by_length=sort_by_length)
    out = []
    for k, i in enumerate(indices):
        row = dataset.rows[i]
        out.append({
            "user_id": row.user_id,
            "input": records[i]["input"],
            "output": records[i]["output"],
            "history_item_sid": list(row.history_item_sid),
            "history_item_id": list(row.history_item_id),
            "target_item_id": row.item_id,
            "predict": result.sids[k],
            "predict_item_ids": [_as_int(trie.item_ids[j][0]) for j in result.item_index[k].tolist()],
            "scores": [round(float(s), 6) for s in result.scores[k].tolist()],
        })
    return out


def shard_indices(prompt_ids, batch_size: int, rank: int, world_size: int) -> list[int]:
    """The dataset positions of this rank: every world_size-th batch of the global batch plan."""
    batches = plan_batches(prompt_ids, batch_size)
    return [i for b, batch in enumerate(batches) if b % world_size == rank for i in batch]


def evaluate_dataset(model, tokenizer, trie, dataset, num_beams, batch_size=4, length_penalty=0.0,
                     rank=0, world_size=1, progress=False, n_rows=None) -> list[dict] | None:
    """The first `n_rows` rows (all by default) in dataset order on rank 0 (None on other ranks);
    shards by whole batches and gathers with torch.distributed when world_size > 1."""
    n_rows = len(dataset) if n_rows is None else min(n_rows, len(dataset))
    prompt_ids = [dataset[i]["input_ids"] for i in range(n_rows)]
    mine = shard_indices(prompt_ids, batch_size, rank, world_size)
    # consecutive batch_size chunks of `mine` are exactly this rank's batches of the global plan
    rows = evaluate_rows(model, tokenizer, trie, dataset, num_beams, batch_size, length_penalty,
                         progress=progress, indices=mine, sort_by_length=False)
    pairs = list(zip(mine, rows))
    if world_size > 1:
        import torch.distributed as dist

        gathered = [None] * world_size if rank == 0 else None
        dist.gather_object(pairs, gathered, dst=0)
        if rank != 0:
            return None
        pairs = [p for part in gathered for p in part]
    ordered = [None] * n_rows
    for i, row in pairs:
        ordered[i] = row
    missing = [i for i, r in enumerate(ordered) if r is None]
    if missing:
        raise RuntimeError(f"rows {missing[:5]} were evaluated by no process")
    return ordered


def load_model_and_tokenizer(base_model, device="cpu", dtype=torch.float32):
    """The checkpoint (an HF folder with its tokenizer, e.g. one the original's sft.py saved), in
    eval mode, on `device`, in `dtype`."""
    if not os.path.isdir(base_model):
        raise InputError(f"--base_model {base_model}: not a folder (expected an HF checkpoint folder, "
                         f"e.g. the SFT/RL final_checkpoint)")
    tokenizer = load_tokenizer(base_model, padding_side="left")
    model = load_causal_lm(base_model, dtype=dtype).to(device).eval()
    check_vocab_matches(model, tokenizer, base_model)
    return model, tokenizer


def check_writable(path, flag="--result_json_data"):
    """Fail before any decoding when the predictions file cannot be written: a folder given as the
    file, or a folder where no file can be created."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{flag} {path}: is a folder; give the predictions file, e.g. {target / 'result.json'}")
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.", suffix=".probe"):
            pass
    except OSError as err:
        raise InputError(f"{flag} {path}: cannot write there ({err.strerror})") from None


def _dist_setup():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")
    return rank, world, local_rank


DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16"}


def evaluation_dtype(precision: str) -> torch.dtype:
    """The weights' dtype for ranking. `auto` is bf16 on a GPU that supports it (the original's), but
    fp32 on a CPU even where training picks bf16: bf16 weights reorder close beams (on the trained
    quickstart model, top-10 lists identical for 15% of 2,000 users, top-1 for 94%, at 1.12x the
    speed; benchmarks/results/bench_bf16.json), and a ranking should not depend on the CPU."""
    if precision == "auto" and not torch.cuda.is_available():
        return torch.float32
    return default_dtype(precision)


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("--base_model", required=True, help="HF checkpoint folder (model + tokenizer with SID tokens)")
    p.add_argument("--train_file", default="", help="accepted as the original's evaluate.py accepts it; not read")
    p.add_argument("--info_file", required=True, help="info.txt: SID<TAB>title<TAB>item_id per item")
    p.add_argument("--category", default="",
                   help="category name (e.g. Office_Products): the original's five names map to its phrases, "
                        "others are humanised")
    p.add_argument("--test_data_path", required=True, help="test split CSV")
    p.add_argument("--result_json_data", required=True, help="predictions JSON to write (checked before decoding)")
    p.add_argument("--batch_size", type=positive_int, default=4, help="prompts decoded together (x num_beams rows)")
    p.add_argument("--K", type=int, default=0, help="evaluate only the first K test rows (0: all; the original "
                                                     "accepts K and ignores it)")
    p.add_argument("--seed", type=int, default=42, help="random seed")
    p.add_argument("--length_penalty", type=float, default=0.0,
                   help="rank by log-prob / length**length_penalty (0: sum of log-probs, the original's setting)")
    p.add_argument("--max_new_tokens", type=positive_int, default=256,
                   help="upper bound on the completion length; must cover the longest SID + newline + EOS")
    p.add_argument("--num_beams", type=positive_int, default=50,
                   help="beams per prompt: the top-K list ranked (K up to num_beams)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="accepted as the original's evaluate.sh passes it; beam search is deterministic and ignores it")
    p.add_argument("--guidance_scale", type=float, default=1.0,
                   help="accepted as the original's evaluate.sh passes it; no classifier-free guidance here")
    p.add_argument("--prompt_style", default="upstream", choices=list(data.PROMPT_STYLES),
                   help="upstream: the original's EvalSidDataset prompts; unified: the project's one wording")
    p.add_argument("--max_len", type=positive_int, default=2560,
                   help="prompt token budget (the original's EvalSidDataset max_len); longer prompts lose their "
                        "oldest history items")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="model weights dtype: auto (bf16 on a GPU that supports it, else fp32: see "
                        "evaluation_dtype), bf16 or fp32")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="alias of --precision (float32 = fp32, bfloat16 = bf16)")
    p.add_argument("--allow_unreachable_targets", default=False, type=boolean,
                   help="True: evaluate test rows whose target SID the info file cannot produce (they count as "
                        "misses; the count is reported); otherwise such rows are an error")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    check_writable(args.result_json_data)
    rank, world, local_rank = _dist_setup()
    set_seed(args.seed)
    if args.temperature != 1.0:
        logger.warning("--temperature %s is ignored: beam search is deterministic", args.temperature)
    if args.guidance_scale != 1.0:
        logger.warning("--guidance_scale %s is ignored: no classifier-free guidance", args.guidance_scale)
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"

    # the catalogue (info.txt) and the test split, read and cross-checked once
    catalogue = data.Catalogue(info_file=args.info_file, category=args.category,
                               allow_unreachable_targets=args.allow_unreachable_targets)
    catalogue.split(args.test_data_path)

    dtype = evaluation_dtype(DTYPE_ALIASES.get(args.dtype, args.precision))
    model, tokenizer = load_model_and_tokenizer(args.base_model, device, dtype)
    try:  # checks that every SID token is one token of the checkpoint's tokenizer
        trie = SidTrie.from_sids([sid for sid, _, _ in catalogue.info], tokenizer,
                                 item_ids=[item_id for _, _, item_id in catalogue.info])
    except ValueError as err:
        raise InputError(f"{args.base_model} cannot decode the SIDs of {args.info_file}: {err}") from None
    if trie.depth > args.max_new_tokens:
        raise InputError(f"--max_new_tokens {args.max_new_tokens} is below the completion length {trie.depth} "
                         f"(SID tokens + newline + EOS)")
    dataset = data.EvalSidDataset(train_file=args.test_data_path, tokenizer=tokenizer, max_len=args.max_len,
                                  test=True, seed=args.seed, category=catalogue.category,
                                  prompt_style=args.prompt_style, catalogue=catalogue)
    n_rows = min(args.K, len(dataset)) if args.K > 0 else len(dataset)
    if rank == 0:
        logger.info("%d test rows, %d valid SIDs (depth %d), %d beams, batch %d, %s, %d process(es)",
                    n_rows, len(trie), trie.depth, args.num_beams, args.batch_size, model.dtype, world)
    start = time.time()
    progress = False if args.no_progress or rank != 0 else f"rank 0/{world}" if world > 1 else "evaluate"
    rows = evaluate_dataset(model, tokenizer, trie, dataset, args.num_beams, args.batch_size,
                            args.length_penalty, rank, world, progress, n_rows=n_rows)
    if rank == 0:
        data.write_json(rows, args.result_json_data, indent=2)
        elapsed = time.time() - start
        logger.info("wrote %s: %d rows in %.1f s (%.2f users/s)", args.result_json_data, len(rows), elapsed,
                    len(rows) / max(elapsed, 1e-9))
        result = metrics.compute_metrics(rows, catalogue.answer_sids)
        print(metrics.format_table({os.path.basename(args.result_json_data): result}, result["ks"]))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    run_main(main)
