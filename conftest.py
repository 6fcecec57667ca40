"""pytest: the repository root is importable (flat research scripts), tests run offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # one thread: the models under test are tiny, and two threads on two shared cores were ~10x
    # slower here (subprocess tests set OMP_NUM_THREADS=1 themselves)
    import torch

    torch.set_num_threads(1)
