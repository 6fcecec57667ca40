"""RL (GRPO) step time split by phase, and the rollout decoder against HF beam search, on Office data.

    python benchmarks/bench_rl.py                      # tiny from-scratch + SmolLM2-135M
    python benchmarks/bench_rl.py --tiny_only --steps 3

1) `rl.train(...)` for --steps optimiser steps with G=16 (num_generations=16, train_batch_size=16:
   one prompt group per step), beam_search=True, reward_type=ranking, beta=0.04 (the reference
   model is used). ReReTrainer logs seconds per step of each phase (time/generation_s_per_step,
   time/reference_s_per_step, time/rewards_s_per_step, time/policy_s_per_step) with
   logging_steps=1; the wall time of each step (between on_step_end callbacks) is recorded too, so
   "other" = wall - phases (optimiser step, TRL bookkeeping, logging). Step 1 (warm-up) is reported
   apart; the means are over steps 2..N. Prompts are drawn at random from the RL training mix
   (mostly title/description -> SID), so step times vary with the prompt length (recorded per step).
   Also: one group scored (no grad) by TRL's own path vs ReReTrainer's completion-only LM head
   (see scoring_diagnostic).
2) Decoding, same model (the RL checkpoint) and the same --decode_prompts RL prompts (SID history ->
   next SID), 16 beams, all prompts in one batch: the fast path `decoding.sid_beam_search` vs
   HF `generate(num_beams=16)` with a per-beam dict-lookup prefix processor like the original
   MiniOneRec (implemented here only: at every step, for every beam, the generated token ids after
   the prompt are joined into a string key and looked up in a dict of all SID prefixes). Both are
   warmed up, then each is timed --repeats times (median reported). Issue target: fast >= 5x.

The "SFT checkpoint" is the base model with the Office SID tokens added
(`sft.prepare_model_and_tokenizer` then saved): speed does not depend on training. "tiny" is the
convert_gguf.py `--small_dir` config (SmolLM2 tokenizer, hidden 128, 4 layers, random init),
"smollm2" SmolLM2-135M-Instruct de-quantised from the installed GGUF; both cached in --cache.
Each model runs in its own process (peak memory = ru_maxrss of that process).
Writes benchmarks/results/bench_rl.json. Shared machine: the load average is recorded next to
every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
REPO = Path(__file__).resolve().parents[1]

OFFICE = REPO.parent / "shared" / "data" / "Office_Products"
CATEGORY = "Office_Products"
DEFAULT_CACHE = Path("/tmp/minionerec-bench")
OUT = REPO / "benchmarks" / "results" / "bench_rl.json"
PHASES = ("generation", "reference", "policy", "rewards")


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_models(cache: Path) -> dict:
    big, small = cache / "SmolLM2-135M", cache / "smol-tiny"
    if not (big / "config.json").is_file() or not (small / "config.json").is_file():
        print(f"converting the SmolLM2 GGUF into {cache} (once, ~40 s)", flush=True)
        import convert_gguf

        convert_gguf.convert(output_dir=str(big), small_dir=str(small))
    return {"smollm2": big, "tiny": small}


def ensure_sid_checkpoint(base: Path, folder: Path) -> Path:
    """Base model + Office SID tokens (resized embeddings), saved as an "SFT checkpoint"."""
    if (folder / "config.json").is_file():
        return folder
    import sft
    from modeling import save_pretrained_atomic

    model, tokenizer = sft.prepare_model_and_tokenizer(str(base), str(OFFICE / "index.json"), precision="fp32")
    tokenizer.padding_side = "left"
    save_pretrained_atomic(model, tokenizer, folder)
    return folder


# ---------------------------------------------------------------------------------------------
# the original MiniOneRec decoding, reproduced for comparison only


def prefix_dict(trie) -> dict:
    """{"-".join(generated ids so far): [allowed next ids]} over every valid completion (SID
    tokens, "\\n", EOS: the trie's completions, tokenised as SFT tokenises responses)."""
    allowed = {}
    for row, n in zip(trie.completion_ids.tolist(), trie.lengths.tolist()):
        for i in range(n):
            allowed.setdefault("-".join(map(str, row[:i])), set()).add(row[i])
    return {k: sorted(v) for k, v in allowed.items()}


def make_dict_processor(table, prompt_width, num_beams):
    import torch
    from transformers import LogitsProcessor

    class DictLookupProcessor(LogitsProcessor):
        """Per batch, per beam, per step: string key of the generated ids -> allowed tokens."""

        def __call__(self, input_ids, scores):
            scores = torch.nn.functional.log_softmax(scores, dim=-1)
            mask = torch.full_like(scores, -1000000.0)
            for batch_id, beams in enumerate(input_ids.view(-1, num_beams, input_ids.shape[-1])):
                for beam_id, sent in enumerate(beams):
                    key = "-".join(map(str, sent[prompt_width:].tolist()))
                    allowed = table.get(key, [])
                    if not allowed:
                        continue
                    mask[batch_id * num_beams + beam_id, allowed] = 0
            return scores + mask

    return DictLookupProcessor()


def dict_beam_search(model, tokenizer, trie, table, prompt_ids, num_beams):
    """HF generate(num_beams) + the dict-lookup processor; top-num_beams SID strings per prompt."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    from LogitProcessor import explicit_generation_config
    from modeling import left_pad

    ids, attn, _ = left_pad(prompt_ids, tokenizer.pad_token_id, "cpu")
    config = explicit_generation_config(
        num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=trie.depth, length_penalty=0.0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=trie.eos_token_id, bos_token_id=None,
    )
    saved = model.generation_config
    model.generation_config = GenerationConfig()  # nothing inherited from the checkpoint's config
    try:
        with torch.inference_mode():
            seqs = model.generate(input_ids=ids, attention_mask=attn, generation_config=config,
                                  logits_processor=LogitsProcessorList([make_dict_processor(table, ids.shape[1], num_beams)]))
    finally:
        model.generation_config = saved
    texts = tokenizer.batch_decode(seqs[:, ids.shape[1]:], skip_special_tokens=True)
    texts = [t.strip() for t in texts]
    return [texts[i * num_beams:(i + 1) * num_beams] for i in range(len(prompt_ids))]


# ---------------------------------------------------------------------------------------------
# diagnostic: how the policy/reference log-probs are computed


def scoring_diagnostic(trainer, spec) -> dict:
    """Forward (no grad) of one RL group (one prompt + 16 valid completions): TRL's own scoring
    path (GRPOTrainer._get_per_token_logps_and_entropies, fused LM head) vs ReReTrainer's, which
    computes logits for the completion positions only. On CPU TRL's fused head scores every
    position, prompt included (only Triton devices score the completion tokens alone)."""
    import torch
    from trl import GRPOTrainer

    import data

    tok, trie, g = trainer.processing_class, trainer.trie, spec["G"]
    ds = data.SidDataset(train_file=OFFICE / "train.csv", sample=1, seed=7, category=data.category_phrase(CATEGORY),
                         tokenizer=tok, max_len=spec["cutoff_len"])
    prompt = tok(ds[0]["prompt"])["input_ids"]
    comp = trie.completion_ids[:g]
    k = comp.shape[1]
    ids = torch.cat([torch.tensor(prompt)[None].repeat(g, 1), comp], dim=1)
    attn = torch.ones_like(ids)
    model = trainer.model
    model.eval()
    paths = {
        "trl_fused_head_s": lambda: GRPOTrainer._get_per_token_logps_and_entropies(trainer, model, ids, attn, k)[0],
        "rere_completion_only_s": lambda: trainer._get_per_token_logps_and_entropies(model, ids, attn, k)[0],
    }
    out = {"rows": g, "prompt_tokens": len(prompt), "completion_tokens": k}
    logps = {}
    with torch.no_grad():
        for name, path in paths.items():
            path()  # warm-up
            t = time.perf_counter()
            logps[name] = path()
            out[name] = time.perf_counter() - t
    model.train()
    out["max_abs_logp_diff"] = float((logps["trl_fused_head_s"] - logps["rere_completion_only_s"]).abs().max())
    out["ratio"] = out["trl_fused_head_s"] / out["rere_completion_only_s"]
    return out


# ---------------------------------------------------------------------------------------------
# worker: one model per process


def worker(spec: dict) -> dict:
    import torch
    from transformers import TrainerCallback

    import data
    import rl
    from decoding import sid_beam_search
    from sid_trie import SidTrie
    from modeling import load_causal_lm, load_tokenizer

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    cache = Path(spec["cache"])
    ckpt = ensure_sid_checkpoint(Path(spec["base_dir"]), cache / f"rl-ckpt-{spec['key']}")
    result = {"model": spec["name"], "checkpoint": str(ckpt), "torch_threads": torch.get_num_threads()}

    # --- 1) RL steps ----------------------------------------------------------------------------
    step_end = []

    class _StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not step_end:
                step_end.append(time.perf_counter())  # start of step 1

        def on_step_end(self, args, state, control, **kwargs):
            step_end.append(time.perf_counter())

    prompt_lengths = []

    class ClockedReReTrainer(rl.ReReTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(_StepClock())

        def _generate_single_turn(self, prompt_ids, *args, **kwargs):
            if self.model.training:
                prompt_lengths.append([len(p) for p in prompt_ids[::self.num_generations]])
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)

    rl.ReReTrainer = ClockedReReTrainer  # this process only
    out_dir = Path(tempfile.mkdtemp(prefix="rl-", dir=cache))
    load_start = loadavg()
    t0 = time.perf_counter()
    try:
        trainer = rl.train(
            model_path=str(ckpt), train_file=str(OFFICE / "train.csv"), eval_file=str(OFFICE / "valid.csv"),
            info_file=str(OFFICE / "info.txt"), sid_index_path=str(OFFICE / "index.json"),
            item_meta_path=str(OFFICE / "item.json"), category=CATEGORY, output_dir=str(out_dir),
            num_generations=spec["G"], train_batch_size=spec["train_batch_size"], eval_batch_size=spec["G"],
            beam_search=True, reward_type="ranking", beta=0.04, learning_rate=1e-6,
            max_steps=spec["steps"], logging_steps=1, eval_step=10**6, save_steps=10**6,
            sample_train=spec["sample_train"],
            rl_tasks=f"sid_history_to_sid,title_description_to_sid,title_history_to_sid:{spec['sample_train']}",
            test_during_training=False,  # measure the RL step alone (rl.py's default tests every batch)
            eval_sample=1,  # transformers evaluates once at the end of training: keep it to one prompt
            precision="fp32", seed=42,
            # 512 (the default) fails on Office: 134 description_to_sid prompts are longer (max ~2000)
            cutoff_len=spec["cutoff_len"],
        )
        total_s = time.perf_counter() - t0
        load_end = loadavg()
        n_params = sum(p.numel() for p in trainer.model.parameters())
        has_ref = trainer.ref_model is not None
        logs = [h for h in trainer.state.log_history if "time/policy_s_per_step" in h]
        result["scoring"] = scoring_diagnostic(trainer, spec)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    walls = [b - a for a, b in zip(step_end, step_end[1:])]
    steps = []
    for i, h in enumerate(logs):
        row = {p: h.get(f"time/{p}_s_per_step", 0.0) for p in PHASES}
        row["wall"] = walls[i] if i < len(walls) else None
        row["other"] = row["wall"] - sum(row[p] for p in PHASES) if row["wall"] is not None else None
        row["step"] = h.get("step")
        row["completion_length"] = h.get("completions/mean_length")
        row["prompt_tokens"] = prompt_lengths[i] if i < len(prompt_lengths) else None
        steps.append(row)
    later = steps[1:] or steps
    mean = {k: statistics.mean(s[k] for s in later) for k in (*PHASES, "wall", "other")}
    result["rl"] = {
        "parameters": n_params, "reference_model_loaded": has_ref, "G": spec["G"],
        "train_batch_size": spec["train_batch_size"], "prompts_per_step": spec["train_batch_size"] // spec["G"],
        "steps": len(steps), "per_step": steps, "first_step": steps[0] if steps else None,
        "mean_after_first": mean, "rl_train_call_s": total_s,
        "loadavg_start": load_start, "loadavg_end": load_end,
    }

    del trainer  # free the policy, reference and optimiser state before loading the decoder model
    import gc

    gc.collect()

    # --- 2) decoding: fast path vs HF generate + dict lookup -------------------------------------
    tokenizer = load_tokenizer(ckpt, padding_side="left")
    model = load_causal_lm(ckpt, dtype=torch.float32).eval()
    trie = SidTrie.from_info_file(OFFICE / "info.txt", tokenizer)
    ds = data.SidDataset(train_file=OFFICE / "train.csv", sample=spec["decode_prompts"], seed=42,
                         category=data.category_phrase(CATEGORY), tokenizer=tokenizer, max_len=512)
    prompts = [tokenizer(x["prompt"])["input_ids"] for x in ds]
    nb = spec["G"]
    table = prefix_dict(trie)
    pad = tokenizer.pad_token_id
    sid_beam_search(model, trie, prompts[:1], nb, pad)  # warm-up
    dict_beam_search(model, tokenizer, trie, table, prompts[:1], nb)
    dec_load_start = loadavg()
    fast_t, base_t = [], []
    for _ in range(spec["repeats"]):  # interleaved, so both see similar load
        t = time.perf_counter()
        fast = sid_beam_search(model, trie, prompts, nb, pad, batch_size=len(prompts), sort_by_length=False)
        fast_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        base = dict_beam_search(model, tokenizer, trie, table, prompts, nb)
        base_t.append(time.perf_counter() - t)
    sids = set(trie.sids)
    identical = sum(list(a) == list(b) for a, b in zip(fast.sids, base)) / len(prompts)
    overlap = statistics.mean(len(set(a) & set(b)) / nb for a, b in zip(fast.sids, base))
    f_med, b_med = statistics.median(fast_t), statistics.median(base_t)
    result["decoding"] = {
        "prompts": len(prompts), "num_beams": nb, "batch": len(prompts),
        "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts), "catalogue_sids": len(trie),
        "trie_depth": trie.depth, "repeats": spec["repeats"],
        "fast_s": fast_t, "dict_lookup_hf_s": base_t,
        "fast_median_s": f_med, "dict_lookup_hf_median_s": b_med,
        "fast_s_per_prompt": f_med / len(prompts), "dict_lookup_hf_s_per_prompt": b_med / len(prompts),
        "speedup": b_med / f_med, "target_speedup": 5.0, "meets_target": b_med / f_med >= 5.0,
        "baseline_invalid_sids": sum(s not in sids for row in base for s in row),
        "identical_ranked_lists": identical, "mean_top16_overlap": overlap,
        "loadavg_start": dec_load_start, "loadavg_end": loadavg(),
    }
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def run_worker(spec: dict) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        result_path = f.name
    log = Path(spec["cache"]) / f"bench_rl_{spec['key']}.log"  # the worker's own output
    cmd = [sys.executable, __file__, "--_spec", json.dumps(spec), "--_result", result_path]
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        if proc.returncode != 0:
            tail = "\n".join(log.read_text().splitlines()[-30:])
            raise RuntimeError(f"worker {spec['name']} failed ({proc.returncode}, log {log}):\n{tail}")
        return json.loads(Path(result_path).read_text())
    finally:
        os.unlink(result_path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="RL optimiser steps per model")
    p.add_argument("--G", type=int, default=16, help="num_generations (= beams)")
    p.add_argument("--train_batch_size", type=int, default=16, help="rollouts per step (a multiple of G)")
    p.add_argument("--sample_train", type=int, default=64, help="rows of each sequential RL task")
    p.add_argument("--decode_prompts", type=int, default=4, help="prompts in the decoding comparison batch")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each decoder (tiny)")
    p.add_argument("--smol_repeats", type=int, default=2, help="timed repeats of each decoder (SmolLM2)")
    p.add_argument("--cutoff_len", type=int, default=512,
                   help="rl.py --cutoff_len (its default; long Office descriptions are cut to fit)")
    p.add_argument("--tiny_only", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--_spec", help=argparse.SUPPRESS)
    p.add_argument("--_result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._spec:
        Path(args._result).write_text(json.dumps(worker(json.loads(args._spec))))
        return 0

    needed = [OFFICE / n for n in ("train.csv", "valid.csv", "index.json", "item.json", "info.txt")]
    if not all(f.is_file() for f in needed):
        print(f"skipped: the Office data is absent ({OFFICE} must hold train.csv, valid.csv, index.json, "
              "item.json, info.txt)")
        return 0
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.time()
    try:
        models = ensure_models(cache)
    except FileNotFoundError as e:
        print(f"skipped: {e}")
        return 0
    import torch

    report = {
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                    "torch_threads": args.threads or torch.get_num_threads(), "loadavg_start": loadavg(),
                    "note": "2 shared cores: other jobs run concurrently, timings are noisy"},
        "settings": {"G": args.G, "train_batch_size": args.train_batch_size, "beam_search": True,
                     "reward_type": "ranking", "beta": 0.04, "steps": args.steps, "precision": "fp32",
                     "sample_train": args.sample_train, "cutoff_len": args.cutoff_len, "decode_prompts": args.decode_prompts,
                     "repeats_tiny": args.repeats, "repeats_smollm2": args.smol_repeats},
        "models": [],
    }
    try:  # the code measured (read-only git query)
        report["code"] = {"head": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                                 capture_output=True, text=True).stdout.strip(),
                          "dirty_files": subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "-uno"],
                                                        capture_output=True, text=True).stdout.split("\n")[:20]}
    except OSError:
        pass
    todo = [("tiny", "tiny (hidden 128, 4 layers)", args.repeats)]
    if not args.tiny_only:
        todo.append(("smollm2", "SmolLM2-135M", args.smol_repeats))
    for key, name, repeats in todo:
        spec = dict(key=key, name=name, base_dir=str(models[key]), cache=str(cache), G=args.G,
                    train_batch_size=args.train_batch_size, steps=args.steps, sample_train=args.sample_train,
                    decode_prompts=args.decode_prompts, repeats=repeats, threads=args.threads,
                    cutoff_len=args.cutoff_len)
        print(f"{name}: {args.steps} RL steps + decoding comparison (load {loadavg()}) ...", flush=True)
        r = run_worker(spec)
        report["models"].append(r)
        m, d = r["rl"]["mean_after_first"], r["decoding"]
        print(f"  step {m['wall']:.2f} s (gen {m['generation']:.2f}, ref {m['reference']:.2f}, policy "
              f"{m['policy']:.2f}, rewards {m['rewards']:.3f}); decoding fast {d['fast_median_s']:.2f} s vs "
              f"dict-lookup HF {d['dict_lookup_hf_median_s']:.2f} s = {d['speedup']:.1f}x", flush=True)
    report["machine"]["loadavg_end"] = loadavg()
    report["total_seconds"] = time.time() - started

    print(f"\nRL seconds per step (G={args.G}, {args.train_batch_size} rollouts/step, beam search, ranking "
          f"reward, beta 0.04; mean of steps 2..{args.steps}; step 1 in brackets)")
    head = (f"{'model':28s} {'generation':>12s} {'reference':>12s} {'policy f+b':>12s} {'rewards':>12s} "
            f"{'other':>12s} {'wall':>12s}  load avg (1 min)")
    print(head)
    print("-" * len(head))
    for r in report["models"]:
        m, f = r["rl"]["mean_after_first"], r["rl"]["first_step"]
        cells = " ".join(f"{m[k]:6.2f} ({f[k]:4.1f})" if f[k] is not None else f"{m[k]:6.2f}"
                         for k in ("generation", "reference", "policy", "rewards", "other", "wall"))
        print(f"{r['model']:28s} {cells}  {r['rl']['loadavg_start'][0]:.2f} -> {r['rl']['loadavg_end'][0]:.2f}")
    print(f"\nRollout decoding, {args.G} beams, one batch of {args.decode_prompts} prompts (median of "
          f"{args.repeats} tiny / {args.smol_repeats} SmolLM2 runs)")
    head = (f"{'model':28s} {'fast s':>8s} {'dict+HF s':>10s} {'speedup':>8s} {'target>=5x':>10s} "
            f"{'same lists':>10s}  load avg (1 min)")
    print(head)
    print("-" * len(head))
    for r in report["models"]:
        d = r["decoding"]
        print(f"{r['model']:28s} {d['fast_median_s']:8.2f} {d['dict_lookup_hf_median_s']:10.2f} "
              f"{d['speedup']:7.1f}x {'met' if d['meets_target'] else 'NOT met':>10s} "
              f"{d['identical_ranked_lists']:10.0%}  {d['loadavg_start'][0]:.2f} -> {d['loadavg_end'][0]:.2f}")
    print("\nScoring one group (16 rows, no grad): TRL fused LM head (every position on CPU) vs "
          "ReReTrainer (logits for the completion only)")
    for r in report["models"]:
        c = r["scoring"]
        print(f"{r['model']:28s} prompt {c['prompt_tokens']} + {c['completion_tokens']} tokens: TRL "
              f"{c['trl_fused_head_s']:.2f} s, ReReTrainer {c['rere_completion_only_s']:.2f} s "
              f"({c['ratio']:.1f}x), max |logp diff| {c['max_abs_logp_diff']:.1e}")
    for r in report["models"]:
        print(f"{r['model']}: peak RSS {r['peak_rss_mb']:.0f} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out} ({report['total_seconds']:.0f} s, load {report['machine']['loadavg_end']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
