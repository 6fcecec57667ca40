"""Start-of-run helpers shared by the training scripts (sft.py, rl.py)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import fire


class InputError(ValueError):
    """Bad input from the user (a flag, a file, a row): reported as one line naming the flag or
    file (and line, field) and what to do, exit status 1, no traceback. Anything else is a bug
    and keeps its traceback."""


def require_paths(**flags):
    """Fail before any work when a required path flag is empty or names nothing."""
    for flag, path in flags.items():
        if not path:
            raise ValueError(f"--{flag} is required")
        if not Path(path).exists():
            raise FileNotFoundError(f"--{flag} {path}: not found")


def report_to(wandb_project: str) -> str:
    """TrainingArguments.report_to: wandb only when a project is named, and then offline unless
    WANDB_MODE / WANDB_API_KEY say otherwise (no login prompt, no network by surprise)."""
    if not wandb_project:
        return "none"
    os.environ["WANDB_PROJECT"] = wandb_project
    if "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
    return "wandb"


def run_cli(train):
    """`python script.py --flag value ...` -> train(flag=value, ...). The returned Trainer is not
    printed; `--help` lists train's flags with its docstring (fire reads them through wraps)."""
    fire.Fire(functools.wraps(train)(lambda *args, **kwargs: train(*args, **kwargs) and None))
