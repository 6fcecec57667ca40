"""HR@K and NDCG@K, the one implementation every stage uses (calc.py, evaluate.py, report.py,
sasrec.py, rl.py), and the metrics of a predictions file's rows.

rank = 0-based position of the target in a model's ranked list (or -1 / None when absent).
HR@K = mean(rank < K); NDCG@K = mean(1 / log2(rank + 2) if rank < K else 0).
"""

from __future__ import annotations

import numpy as np

from runtime import InputError

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


def clean_answer(sid) -> str:
    """A SID or title as a predictions file holds it (the original's may carry quotes, a trailing
    newline, or a one-element list) -> the bare text."""
    if isinstance(sid, (list, tuple)):
        sid = sid[0] if sid else ""
    return str(sid).strip().strip('"').strip()


def predicted_and_targets(predictions) -> tuple[list[list[str]], list[str]]:
    """(ranked answers, target) of each predictions row ({"output", "predict"}), cleaned."""
    predicted, targets = [], []
    for i, row in enumerate(predictions):
        if not isinstance(row, dict) or "predict" not in row or "output" not in row:
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise InputError(f"prediction row {i} has no 'predict' / 'output' field: {keys}")
        predicted.append([clean_answer(p) for p in row["predict"]])
        targets.append(clean_answer(row["output"]))
    return predicted, targets


def compute_metrics(predictions, valid_sids=None, ks=None) -> dict:
    """Metrics of a list of prediction rows ({"output", "predict"}).

    Returns {"HR@K": .., "NDCG@K": .. for each K, "ks", "n_rows", "num_beams",
    "invalid_predictions" (None without valid_sids), "duplicate_predictions"}."""
    if not predictions:
        raise InputError("no prediction rows")
    predicted, targets = predicted_and_targets(predictions)
    num_beams = min(len(p) for p in predicted)
    if num_beams == 0:
        raise InputError("a prediction row has an empty 'predict' list")
    ks = list(ks) if ks is not None else ks_up_to(num_beams)
    if not ks:
        raise InputError(f"no K in {DEFAULT_KS} is within the beam count {num_beams}")
    result = hr_ndcg(target_ranks(predicted, targets), ks)
    valid = set(valid_sids) if valid_sids is not None else None
    result.update(
        ks=ks,
        n_rows=len(predicted),
        num_beams=num_beams,
        invalid_predictions=None if valid is None else sum(p not in valid for row in predicted for p in row),
        duplicate_predictions=sum(len(row) - len(set(row)) for row in predicted),
    )
    return result
