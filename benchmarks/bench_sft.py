"""SFT throughput, padding and memory on the Office data, plus the time to build the SFT datasets.

    python benchmarks/bench_sft.py                      # tiny from-scratch + SmolLM2-135M
    python benchmarks/bench_sft.py --tiny_only --steps 10

For each model x {random batches, group_by_length}, runs `sft.train(..., max_steps=N)` on a sample
of the Office training rows (--sample rows per task) and records what the Trainer really processed:
every micro-batch handed to `training_step` (already collated: padded to a multiple of 8) is
counted (non-padding tokens = attention_mask.sum(), processed = numel). Throughput is non-padding
tokens per second between the end of optimiser step 1 (warm-up excluded) and the end of step N.
The padding fraction is also given over one full epoch of the Trainer's own train dataloader
(`trainer.get_train_dataloader()` replayed after training), because group_by_length puts the
longest mega-batch first, so the first steps are not representative of a whole epoch.
Each configuration runs in its own process, so peak memory (ru_maxrss) is per configuration.

Dataset build: the five SFT datasets of `sft.build_train_data` over the whole Office train.csv with
the SmolLM2 tokenizer (+ SID tokens), timed per dataset (issue target: < 60 s in total).

Models: "tiny" is the convert_gguf.py `--small_dir` config (SmolLM2 tokenizer, hidden 128, 4
layers, random init); "smollm2" is SmolLM2-135M-Instruct de-quantised from the installed GGUF.
Both are converted once into --cache (default /tmp/minionerec-bench) and reused.
Writes benchmarks/results/bench_sft.json. Timings on a shared machine are noisy: the load average
is recorded next to every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
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
OUT = REPO / "benchmarks" / "results" / "bench_sft.json"


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def ensure_models(cache: Path) -> dict:
    """SmolLM2-135M HF folder and the small from-scratch folder (convert_gguf.py), cached."""
    big, small = cache / "SmolLM2-135M", cache / "smol-tiny"
    if not (big / "config.json").is_file() or not (small / "config.json").is_file():
        print(f"converting the SmolLM2 GGUF into {cache} (once, ~40 s)", flush=True)
        import convert_gguf

        convert_gguf.convert(output_dir=str(big), small_dir=str(small))
    return {"smollm2": big, "tiny": small}


# ---------------------------------------------------------------------------------------------
# workers (one configuration per process)


def worker_train(spec: dict) -> dict:
    import torch
    from transformers import TrainerCallback

    import sft

    record = {"micro_batches": [], "step_end": []}

    class _StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            record["step_end"].append(time.perf_counter())

    # the Trainer class sft.train instantiates (a subclass of transformers' Trainer)
    trainer_attr = next((name for name in ("ResponseOnlyTrainer", "Trainer") if hasattr(sft, name)))
    trainer_cls = getattr(sft, trainer_attr)

    class RecordingTrainer(trainer_cls):
        """The project's Trainer, counting every collated micro-batch it trains on."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(_StepClock())

        def training_step(self, model, inputs, num_items_in_batch=None):
            mask = inputs["attention_mask"]
            labels = inputs["labels"]
            record["micro_batches"].append({
                "shape": list(inputs["input_ids"].shape),
                "processed": int(mask.numel()),
                "real": int(mask.sum()),
                "label_tokens": int((labels != -100).sum()),
            })
            return super().training_step(model, inputs, num_items_in_batch)

    setattr(sft, trainer_attr, RecordingTrainer)  # this process only
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    out_dir = Path(tempfile.mkdtemp(prefix="sft-", dir=spec["cache"]))
    load_start = loadavg()
    start = time.perf_counter()
    try:
        trainer = sft.train(
            base_model=spec["model_dir"], train_file=str(OFFICE / "train.csv"),
            eval_file=str(OFFICE / "valid.csv"), output_dir=str(out_dir),
            sid_index_path=str(OFFICE / "index.json"), item_meta_path=str(OFFICE / "item.json"),
            category=CATEGORY, sample=spec["sample"], eval_sample=8, seed=42,
            batch_size=spec["batch_size"], micro_batch_size=spec["micro_batch_size"],
            max_steps=spec["steps"], cutoff_len=spec["cutoff_len"], learning_rate=1e-4,
            group_by_length=spec["group_by_length"], train_from_scratch=spec["from_scratch"],
            precision="fp32", logging_steps=10**6,
            eval_per_epoch=1e-6,  # no evaluation / checkpoint inside the measured steps
        )
        total_s = time.perf_counter() - start
        load_end = loadavg()
        n_train = len(trainer.train_dataset)
        # replay one full epoch of the Trainer's own dataloader (same sampler + collator)
        replay_real = replay_processed = replay_batches = 0
        for batch in trainer.get_train_dataloader():
            replay_real += int(batch["attention_mask"].sum())
            replay_processed += int(batch["attention_mask"].numel())
            replay_batches += 1
        n_params = sum(p.numel() for p in trainer.model.parameters())
        train_runtime = next((h["train_runtime"] for h in trainer.state.log_history if "train_runtime" in h), None)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)

    mbs, ends = record["micro_batches"], record["step_end"]
    if not mbs:
        raise RuntimeError(f"no micro-batch recorded: sft.train did not use sft.{trainer_attr}")
    steps = len(ends)
    per_step = len(mbs) // max(1, steps)
    real = sum(m["real"] for m in mbs)
    processed = sum(m["processed"] for m in mbs)
    # throughput after warm-up: steps 2..N
    warm = mbs[per_step:]
    steady_s = ends[-1] - ends[0] if steps > 1 else float("nan")
    steady_real = sum(m["real"] for m in warm)
    steady_processed = sum(m["processed"] for m in warm)
    return {
        "model": spec["name"], "group_by_length": spec["group_by_length"], "parameters": n_params,
        "trainer_class": trainer_cls.__name__,
        "train_examples": n_train, "steps": steps, "micro_batches": len(mbs),
        "batch_size": spec["batch_size"], "micro_batch_size": spec["micro_batch_size"],
        "tokens_real": real, "tokens_processed": processed,
        "padding_fraction": 1 - real / processed,
        "label_tokens": sum(m["label_tokens"] for m in mbs),
        "mean_batch_width": sum(m["shape"][1] for m in mbs) / len(mbs),
        "steady_seconds": steady_s,
        "steady_real_tokens_per_s": steady_real / steady_s,
        "steady_processed_tokens_per_s": steady_processed / steady_s,
        "seconds_per_step": steady_s / (steps - 1) if steps > 1 else float("nan"),
        "first_step_seconds": ends[0] - start if ends else None,
        "train_runtime_s": train_runtime,
        "total_call_s": total_s,
        "epoch_replay": {"batches": replay_batches, "tokens_real": replay_real,
                         "tokens_processed": replay_processed,
                         "padding_fraction": 1 - replay_real / replay_processed},
        "peak_rss_mb": peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": load_start, "loadavg_end": load_end,
    }


def worker_datasets(spec: dict) -> dict:
    import data
    import sft
    from modeling import load_tokenizer

    tokenizer = load_tokenizer(spec["model_dir"], padding_side="right")
    data.add_sid_tokens(tokenizer, data.read_index(OFFICE / "index.json"))
    timings = {}
    for name in ("SidSFTDataset", "SidItemFeatDataset", "FusionSeqRecDataset", "SFTData",
                 "TitleHistory2SidSFTDataset"):
        cls = getattr(data, name)

        def timed_init(self, *args, _orig=cls.__init__, _name=name, **kwargs):
            t0 = time.perf_counter()
            _orig(self, *args, **kwargs)
            timings[_name] = {"seconds": time.perf_counter() - t0, "examples": len(self.items)}

        setattr(data, name, type(name, (cls,), {"__init__": timed_init}))  # this process only
    data.SFT_TASKS = {task: getattr(data, cls.__name__) for task, cls in data.SFT_TASKS.items()}
    load_start = loadavg()
    t0 = time.perf_counter()
    # all rows of all five tasks, built by sft.py's own step
    catalogue = data.Catalogue(OFFICE / "index.json", OFFICE / "item.json", category=CATEGORY)
    hf = sft.build_train_data(catalogue, str(OFFICE / "train.csv"), tokenizer, spec["cutoff_len"],
                              sft.parse_tasks("", -1), 42)
    total = time.perf_counter() - t0
    lengths = hf["length"]
    return {"train_rows": sum(1 for _ in open(OFFICE / "train.csv")) - 1, "examples": len(hf),
            "seconds_total": total, "per_dataset": timings,
            "to_hf_seconds": total - sum(t["seconds"] for t in timings.values()),
            "mean_length": sum(lengths) / len(lengths), "max_length": max(lengths),
            "cutoff_len": spec["cutoff_len"], "target_seconds": 60, "meets_target": total < 60,
            "peak_rss_mb": peak_rss_mb(), "loadavg_start": load_start, "loadavg_end": loadavg()}


def run_worker(kind: str, spec: dict) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        result_path = f.name
    cmd = [sys.executable, __file__, "--_worker", kind, "--_spec", json.dumps(spec), "--_result", result_path]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-30:])
            raise RuntimeError(f"worker {kind} {spec.get('name', '')} failed ({proc.returncode}):\n{tail}")
        return json.loads(Path(result_path).read_text())
    finally:
        os.unlink(result_path)


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", type=int, default=256, help="training rows sampled per task")
    p.add_argument("--steps", type=int, default=5, help="optimiser steps per configuration (SmolLM2)")
    p.add_argument("--tiny_steps", type=int, default=12, help="optimiser steps per configuration (tiny)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--micro_batch_size", type=int, default=8)
    p.add_argument("--cutoff_len", type=int, default=512)
    p.add_argument("--tiny_only", action="store_true")
    p.add_argument("--skip_datasets", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    p.add_argument("--_spec", help=argparse.SUPPRESS)
    p.add_argument("--_result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._worker:
        spec = json.loads(args._spec)
        result = {"train": worker_train, "datasets": worker_datasets}[args._worker](spec)
        Path(args._result).write_text(json.dumps(result))
        return 0

    needed = [OFFICE / n for n in ("train.csv", "valid.csv", "index.json", "item.json")]
    if not all(f.is_file() for f in needed):
        print(f"skipped: the Office data is absent ({OFFICE} must hold train.csv, valid.csv, index.json, item.json)")
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
        "settings": {"sample_rows_per_task": args.sample, "batch_size": args.batch_size,
                     "micro_batch_size": args.micro_batch_size, "cutoff_len": args.cutoff_len,
                     "pad_to_multiple_of": 8, "precision": "fp32", "steps_smollm2": args.steps,
                     "steps_tiny": args.tiny_steps},
        "padding_target_with_group_by_length": 0.15,
        "training": [],
    }
    configs = [("tiny", models["tiny"], True, args.tiny_steps)]
    if not args.tiny_only:
        configs.append(("smollm2-135m", models["smollm2"], False, args.steps))
    for name, folder, scratch, steps in configs:
        for gbl in (False, True):
            spec = dict(name=name, model_dir=str(folder), from_scratch=scratch, steps=steps, group_by_length=gbl,
                        sample=args.sample, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                        cutoff_len=args.cutoff_len, threads=args.threads, cache=str(cache))
            print(f"training {name} group_by_length={gbl} for {steps} steps (load {loadavg()}) ...", flush=True)
            r = run_worker("train", spec)
            report["training"].append(r)
            print(f"  {r['steady_real_tokens_per_s']:.0f} real tok/s, padding {r['padding_fraction']:.1%} "
                  f"(epoch replay {r['epoch_replay']['padding_fraction']:.1%}), {r['seconds_per_step']:.2f} s/step, "
                  f"peak {r['peak_rss_mb']:.0f} MB, load {r['loadavg_start']} -> {r['loadavg_end']}", flush=True)
    if not args.skip_datasets:
        print(f"building the five SFT datasets on the full train.csv (load {loadavg()}) ...", flush=True)
        report["dataset_build"] = run_worker("datasets", dict(model_dir=str(models["smollm2"]),
                                                              cutoff_len=args.cutoff_len))
    report["machine"]["loadavg_end"] = loadavg()
    report["total_seconds"] = time.time() - started

    # --- table ---------------------------------------------------------------------------------
    print("\nSFT training (non-padding tokens/s after step 1; padding = pad tokens / processed tokens)")
    head = (f"{'model':14s} {'group_by_len':>12s} {'steps':>5s} {'s/step':>7s} {'real tok/s':>10s} "
            f"{'padding':>8s} {'pad/epoch':>9s} {'peak MB':>8s}  load avg (1 min) start->end")
    print(head)
    print("-" * len(head))
    for r in report["training"]:
        print(f"{r['model']:14s} {str(r['group_by_length']):>12s} {r['steps']:5d} {r['seconds_per_step']:7.2f} "
              f"{r['steady_real_tokens_per_s']:10.0f} {r['padding_fraction']:8.1%} "
              f"{r['epoch_replay']['padding_fraction']:9.1%} {r['peak_rss_mb']:8.0f}  "
              f"{r['loadavg_start'][0]:.2f} -> {r['loadavg_end'][0]:.2f}")
    for r in report["training"]:
        if r["group_by_length"]:
            ok = r["epoch_replay"]["padding_fraction"] < report["padding_target_with_group_by_length"]
            print(f"{r['model']}: group_by_length padding over an epoch {r['epoch_replay']['padding_fraction']:.1%} "
                  f"-> target < 15%: {'met' if ok else 'NOT met'}")
    if "dataset_build" in report:
        d = report["dataset_build"]
        print(f"\nDataset build, full train.csv ({d['train_rows']} rows -> {d['examples']} examples), "
              f"SmolLM2 tokenizer: {d['seconds_total']:.1f} s (target < 60 s: {'met' if d['meets_target'] else 'NOT met'}), "
              f"peak {d['peak_rss_mb']:.0f} MB, load {d['loadavg_start'][0]:.2f} -> {d['loadavg_end'][0]:.2f}")
        for name, t in d["per_dataset"].items():
            print(f"  {name:28s} {t['examples']:6d} examples {t['seconds']:6.1f} s")
        print(f"  {'to HF Dataset':28s} {'':6s}          {d['to_hf_seconds']:6.1f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out} ({report['total_seconds']:.0f} s, load {report['machine']['loadavg_end']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
