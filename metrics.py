"""HR@K and NDCG@K, the one implementation every stage uses (calc.py, sasrec.py, rl.py).

rank = 0-based position of the target in a model's ranked list (or -1 / None when absent).
HR@K = mean(rank < K); NDCG@K = mean(1 / log2(rank + 2) if rank < K else 0).
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (1, 3, 5, 10, 20, 50)


def ks_up_to(list_length: int, ks=DEFAULT_KS) -> list[int]:
    """The cut-offs not above the length of the returned lists (the beam count)."""
    return [k for k in ks if k <= list_length]


def target_ranks(predictions, targets) -> np.ndarray:
    """Rank of each target in its prediction list; -1 when it is not there."""
    ranks = np.full(len(targets), -1, dtype=np.int64)
    for i, (preds, target) in enumerate(zip(predictions, targets)):
        for position, item in enumerate(preds):
            if item == target:
                ranks[i] = position
                break
    return ranks


def hr_ndcg(ranks, ks) -> dict[str, float]:
    """{'HR@K': ..., 'NDCG@K': ...} for 0-based ranks (negative = miss)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no ranks to score")
    hit = ranks >= 0
    gain = np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 0) + 2.0), 0.0)
    out = {}
    for k in ks:
        within = hit & (ranks < k)
        out[f"HR@{k}"] = float(within.mean())
        out[f"NDCG@{k}"] = float(np.where(within, gain, 0.0).mean())
    return out


def ranks_from_scores(scores, targets) -> np.ndarray:
    """0-based rank of each target under full ranking by score (ties count against the target)."""
    import torch

    scores = torch.as_tensor(scores)
    targets = torch.as_tensor(targets, dtype=torch.long)
    target_scores = scores.gather(1, targets[:, None])
    return (scores >= target_scores).sum(dim=1).sub(1).cpu().numpy()


def format_table(rows: dict[str, dict[str, float]], ks) -> str:
    """Markdown table, one row per model: HR@K columns then NDCG@K columns."""
    cols = [f"HR@{k}" for k in ks] + [f"NDCG@{k}" for k in ks]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, metrics in rows.items():
        cells = [f"{metrics[c]:.4f}" if c in metrics else "-" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
