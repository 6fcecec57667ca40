"""What this machine's CPU does fast: its feature flags, and measured matmul throughput per dtype.

`--precision auto` (modeling.default_dtype) picks bf16 on a CPU only when both hold:
- the CPU has native bf16 instructions (`avx512_bf16` or `amx_bf16` in /proc/cpuinfo flags);
  without them PyTorch converts bf16 to fp32 around every kernel, which is slower than fp32;
- a measured bf16 `F.linear` at a transformer's shape beats fp32 by BF16_MIN_SPEEDUP
  (flags alone are not enough: a hypervisor may hide or emulate the instructions).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch
import torch.nn.functional as F

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_MIN_SPEEDUP = 1.1  # bf16 also costs precision: choose it only for a clear gain
# rows x in -> out of the probe: one MLP projection of a 0.1B-1B model over a batch of tokens
PROBE_SHAPE = (256, 1024, 2816)


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset:
    """The first processor's feature flags (empty where /proc/cpuinfo is absent)."""
    path = Path(cpuinfo)
    if not path.is_file():
        return frozenset()
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16_instructions() -> bool:
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def linear_gflops(dtype: torch.dtype, rows: int, in_features: int, out_features: int,
                  seconds: float = 0.3, threads: int | None = None) -> float:
    """Measured GFLOP/s of `F.linear` ([rows, in] @ [in, out]) at `dtype` on the CPU: calls repeated
    for about `seconds` after one warm-up call (a single call slower than `seconds` counts alone).
    `threads` sets torch's thread count for the measurement and restores it after."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(rows, in_features, generator=gen).to(dtype)
        w = torch.randn(out_features, in_features, generator=gen).to(dtype)
        with torch.inference_mode():
            F.linear(x, w)
            calls, start = 0, time.perf_counter()
            while True:
                F.linear(x, w)
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
    finally:
        torch.set_num_threads(previous)
    return 2.0 * rows * in_features * out_features * calls / elapsed / 1e9


@functools.cache
def cpu_bf16_speedup() -> float | None:
    """bf16 / fp32 throughput of `F.linear` at PROBE_SHAPE, measured once per process; None (not
    measured) when the CPU has no bf16 instructions."""
    if not cpu_has_bf16_instructions():
        return None
    fp32 = linear_gflops(torch.float32, *PROBE_SHAPE)
    bf16 = linear_gflops(torch.bfloat16, *PROBE_SHAPE)
    return bf16 / fp32


def cpu_prefers_bf16() -> bool:
    """True when bf16 is measured to be clearly faster than fp32 on this CPU."""
    speedup = cpu_bf16_speedup()
    return speedup is not None and speedup >= BF16_MIN_SPEEDUP


def describe() -> dict:
    """Facts for benchmark results: CPU flags that matter for matmul, torch's kernel level."""
    interesting = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "f16c")
    return {
        "cpu_flags": sorted(f for f in cpu_flags() if f in interesting),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_instructions": cpu_has_bf16_instructions(),
    }
