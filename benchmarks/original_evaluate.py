"""Run the original's evaluate.py as a process of its own, for benchmarks/bench_eval_process.py only.

    PYTHONPATH=../shared/upstream python benchmarks/original_evaluate.py --upstream ../shared/upstream \
        --dtype float32 -- \
        --base_model M --info_file I --category Office_Products --test_data_path T --result_json_data R ...

The original's file runs unchanged (its data.py and LogitProcessor.py come first on PYTHONPATH).
Two adjustments, neither touching its decoding:
- `bitsandbytes`, imported at its top and never used by evaluation, gets an empty module when absent
  (it is not in our requirements);
- `--dtype float32` makes its `from_pretrained(torch_dtype=torch.bfloat16)` load float32, the dtype our
  evaluate.py picks on a CPU without fast bf16; `--dtype bfloat16` keeps the original's own.
"""

from __future__ import annotations

import argparse
import importlib.util
import runpy
import sys
import types
from pathlib import Path

import torch
import transformers


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True, help="the original repository (also first on PYTHONPATH)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    p.add_argument("evaluate_args", nargs=argparse.REMAINDER, help="-- then the original evaluate.py's flags")
    args = p.parse_args()
    evaluate_py = Path(args.upstream, "evaluate.py").resolve()
    spec = importlib.util.find_spec("LogitProcessor")
    if spec is None or Path(spec.origin).resolve() != evaluate_py.with_name("LogitProcessor.py"):
        raise SystemExit(f"put {args.upstream} first on PYTHONPATH: its evaluate.py imports its own data.py and "
                         "LogitProcessor.py")
    if importlib.util.find_spec("bitsandbytes") is None:
        sys.modules["bitsandbytes"] = types.ModuleType("bitsandbytes")
    if args.dtype == "float32":
        load = transformers.AutoModelForCausalLM.from_pretrained

        def load_float32(*a, **kw):
            kw.pop("torch_dtype", None)
            return load(*a, dtype=torch.float32, **kw)

        transformers.AutoModelForCausalLM.from_pretrained = load_float32
    forwarded = args.evaluate_args[1:] if args.evaluate_args[:1] == ["--"] else args.evaluate_args
    sys.argv = [str(evaluate_py), *forwarded]
    runpy.run_path(str(evaluate_py), run_name="__main__")


if __name__ == "__main__":
    main()
