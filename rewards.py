"""RL rewards (DESIGN.md "Rewards"), as TRL reward functions.

TRL calls each with the completions of a batch and every dataset column as a keyword argument, so
each completion is scored against its own row's `target_sid` (never a target looked up by prompt
text). Completions of one prompt are contiguous groups of `num_generations`, in rollout order (beam
order under beam search). Every function is vectorised over the batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

REWARD_TYPES = ("rule", "ranking", "ranking_only", "semantic", "sasrec")


def _clean(text: str) -> str:
    return text.strip().strip('"')


def _hits(completions, target_sid) -> torch.Tensor:
    return torch.tensor([_clean(c) == _clean(t) for c, t in zip(completions, target_sid)])


def rule_reward(completions, target_sid, **kwargs) -> list[float]:
    """1.0 when the completion is the row's target SID, else 0.0."""
    return _hits(completions, target_sid).float().tolist()


def ndcg_penalties(num_generations: int) -> torch.Tensor:
    """w_i = (1/log2(i+2)) / sum_j 1/log2(j+2) over beam positions i, j in [0, G)."""
    discounts = torch.tensor([1.0 / math.log2(i + 2) for i in range(num_generations)])
    return discounts / discounts.sum()


def make_ranking_reward(num_generations: int):
    """NDCG-aware penalty on beam order: within a group that contains the target, the wrong
    candidate at beam position i gets -w_i and the target 0; a group without the target gets 0."""
    penalties = ndcg_penalties(num_generations)

    def ranking_reward(completions, target_sid, **kwargs) -> list[float]:
        hits = _hits(completions, target_sid)
        if hits.numel() % num_generations:
            raise ValueError(f"{hits.numel()} completions do not form groups of {num_generations}")
        hits = hits.view(-1, num_generations)
        group_hit = hits.any(dim=1, keepdim=True)
        rewards = torch.where(group_hit & ~hits, -penalties, torch.zeros(()))
        return rewards.flatten().tolist()

    ranking_reward.__name__ = "ranking_reward"
    return ranking_reward


class SidLookup:
    """SID string -> row of an item table (embeddings, SASRec item ids); unknown SIDs -> -1."""

    def __init__(self, index: dict[str, list[str]]):
        self.item_of_sid = {"".join(tokens): int(item_id) for item_id, tokens in index.items()}

    def items(self, sids) -> torch.Tensor:
        return torch.tensor([self.item_of_sid.get(_clean(s), -1) for s in sids], dtype=torch.long)


def make_semantic_reward(embeddings_path, index):
    """Cosine similarity of the item text embeddings of completion and target (rows of the .npy
    are item ids, as rq/ writes them). An invalid completion scores 0."""
    path = Path(embeddings_path)
    if not path.is_file():
        raise FileNotFoundError(f"--ada_path {path}: embeddings file not found (needed by --reward_type semantic)")
    table = torch.from_numpy(np.load(path)).float()
    table = torch.nn.functional.normalize(table, dim=1)
    lookup = SidLookup(index)
    if max(lookup.item_of_sid.values()) >= table.shape[0]:
        raise ValueError(f"--ada_path {path}: {table.shape[0]} rows, fewer than the index's item ids")

    def semantic_reward(completions, target_sid, **kwargs) -> list[float]:
        predicted, target = lookup.items(completions), lookup.items(target_sid)
        valid = (predicted >= 0) & (target >= 0)
        cosine = (table[predicted.clamp(min=0)] * table[target.clamp(min=0)]).sum(dim=1)
        return torch.where(valid, cosine, torch.zeros(())).tolist()

    return semantic_reward


def make_sasrec_reward(cf_path, index):
    """Probability the SASRec model (softmax over the catalogue) gives the completion's item after
    the row's history. An invalid completion scores 0."""
    import sasrec

    if not Path(cf_path).exists():
        raise FileNotFoundError(f"--cf_path {cf_path}: SASRec checkpoint not found (needed by --reward_type sasrec)")
    model = sasrec.load_sasrec_checkpoint(cf_path)
    lookup = SidLookup(index)

    @torch.no_grad()
    def sasrec_reward(completions, history_item_ids, **kwargs) -> list[float]:
        predicted = lookup.items(completions)
        states, lengths = model.states_from_histories(history_item_ids)
        probs = torch.softmax(model.forward_eval(states, lengths).float(), dim=-1)
        valid = (predicted >= 0) & (predicted < probs.shape[1])
        picked = probs.gather(1, predicted.clamp(0, probs.shape[1] - 1)[:, None]).squeeze(1)
        return torch.where(valid, picked, torch.zeros(())).tolist()

    return sasrec_reward


def build_reward_funcs(reward_type, num_generations, index, beam_search, ada_path="", cf_path=""):
    """The reward functions of a --reward_type (TRL sums them)."""
    if reward_type not in REWARD_TYPES:
        raise ValueError(f"--reward_type {reward_type!r}: choose one of {REWARD_TYPES}")
    if reward_type in ("ranking", "ranking_only") and not beam_search:
        raise ValueError(
            f"--reward_type {reward_type} is defined on beam order (the NDCG-aware penalty ranks the "
            "G candidates); run it with --beam_search True"
        )
    if reward_type == "rule":
        return [rule_reward]
    if reward_type == "ranking":
        return [rule_reward, make_ranking_reward(num_generations)]
    if reward_type == "ranking_only":
        return [make_ranking_reward(num_generations)]
    if reward_type == "semantic":
        if not ada_path:
            raise ValueError("--reward_type semantic needs --ada_path (item embeddings .npy)")
        return [make_semantic_reward(ada_path, index)]
    if not cf_path:
        raise ValueError("--reward_type sasrec needs --cf_path (a sasrec.py checkpoint)")
    return [make_sasrec_reward(cf_path, index)]
