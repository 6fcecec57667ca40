"""--precision auto: bf16 on a CPU only with bf16 instructions AND a measured speed-up."""

import pytest
import torch

import hardware
import modeling


@pytest.fixture(autouse=True)
def fresh_caches():
    hardware.cpu_flags.cache_clear()
    hardware.cpu_bf16_speedup.cache_clear()
    yield
    hardware.cpu_flags.cache_clear()
    hardware.cpu_bf16_speedup.cache_clear()


def fake_cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {' '.join(flags)}\n\nprocessor\t: 1\n")
    return str(path)


def test_cpu_flags_parses_the_first_processor(tmp_path):
    assert hardware.cpu_flags(fake_cpuinfo(tmp_path, ["fma", "avx2", "avx512_bf16"])) == {"fma", "avx2", "avx512_bf16"}
    assert hardware.cpu_flags(str(tmp_path / "absent")) == frozenset()


def test_linear_gflops_measures_and_restores_threads():
    threads = torch.get_num_threads()
    gflops = hardware.linear_gflops(torch.float32, 32, 64, 64, seconds=0.02, threads=1)
    assert 0.01 < gflops < 1e5
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("flags,measured,expected", [
    (["avx2", "fma"], None, torch.float32),              # no bf16 instructions: not even measured
    (["avx2", "avx512_bf16"], (10.0, 5.0), torch.float32),  # instructions, but measured slower
    (["avx2", "avx512_bf16"], (10.0, 10.5), torch.float32),  # not clearly faster
    (["avx2", "amx_bf16"], (10.0, 30.0), torch.bfloat16),    # measured 3x faster
])
def test_auto_precision_on_cpu(monkeypatch, flags, measured, expected):
    calls = []

    def fake_linear_gflops(dtype, *shape, **kwargs):
        calls.append(dtype)
        return measured[0] if dtype == torch.float32 else measured[1]

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(hardware, "linear_gflops", fake_linear_gflops)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert modeling.default_dtype("auto") == expected
    assert calls == ([] if measured is None else [torch.float32, torch.bfloat16])
    assert modeling.default_dtype("fp32") == torch.float32
    assert modeling.default_dtype("bf16") == torch.bfloat16


def test_auto_precision_on_this_machine_follows_the_measurement():
    """The real decision: without bf16 instructions fp32; with them, whatever was measured."""
    dtype = modeling.default_dtype("auto")
    if torch.cuda.is_available():
        pytest.skip("GPU machine: the CPU rule does not apply")
    if not hardware.cpu_has_bf16_instructions():
        assert dtype == torch.float32 and hardware.cpu_bf16_speedup() is None
    else:
        assert (dtype == torch.bfloat16) == (hardware.cpu_bf16_speedup() >= hardware.BF16_MIN_SPEEDUP)


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="precision must be"):
        modeling.default_dtype("fp16")
