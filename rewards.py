"""RL rewards (rule, ranking, semantic, sasrec), as TRL reward functions.

TRL calls each with the completions of a batch and every dataset column as a keyword argument, so
each completion is scored against its own row (never a target looked up by prompt text):
- `target`: the row's answer text, a SID or, for the SID -> title tasks, a title;
- `answer_type`: "sid" or "title" (which catalogue the row's completions come from);
- `target_sid`, `history_item_ids`: the SID and CSV item ids the item rewards need.
Completions of one prompt are contiguous groups of `num_generations`, in rollout order (beam
order under beam search). Every function is vectorised over the batch.

Every reward is defined on every row type. `rule` and the ranking penalty compare texts, so they
work for SID and title answers alike. `semantic` and `sasrec` score items: on rows they cannot
score (a title answer; for `sasrec` also a row without a history, i.e. the title/description ->
SID tasks) they give the rule reward (1.0 on a hit, else 0.0).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from runtime import InputError

REWARD_TYPES = ("rule", "ranking", "ranking_only", "semantic", "sasrec")
SASREC_SCORES = ("logit", "prob", "pmi")


def _clean(text: str) -> str:
    return text.strip().strip('"')


def _hits(completions, target) -> torch.Tensor:
    return torch.tensor([_clean(c) == _clean(t) for c, t in zip(completions, target)])


def rule_reward(completions, target, **kwargs) -> list[float]:
    """1.0 when the completion is the row's target (SID or title), else 0.0."""
    return _hits(completions, target).float().tolist()


def ndcg_penalties(num_generations: int) -> torch.Tensor:
    """w_i = (1/log2(i+2)) / sum_j 1/log2(j+2) over beam positions i, j in [0, G)."""
    discounts = torch.tensor([1.0 / math.log2(i + 2) for i in range(num_generations)])
    return discounts / discounts.sum()


def make_ranking_reward(num_generations: int):
    """NDCG-aware penalty on beam order: within a group that contains the target, the wrong
    candidate at beam position i gets -w_i and the target 0; a group without the target gets 0."""
    penalties = ndcg_penalties(num_generations)

    def ranking_reward(completions, target, **kwargs) -> list[float]:
        hits = _hits(completions, target)
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
        self.item_of_sid = {}
        for item_id, tokens in index.items():
            self.item_of_sid.setdefault("".join(tokens), int(item_id))  # a shared SID: its first item
        self.max_item_id = max(self.item_of_sid.values())

    def items(self, sids) -> torch.Tensor:
        return torch.tensor([self.item_of_sid.get(_clean(s), -1) for s in sids], dtype=torch.long)


def _sid_rows(answer_type) -> torch.Tensor:
    return torch.tensor([kind == "sid" for kind in answer_type], dtype=torch.bool)


def make_semantic_reward(embeddings_path, index):
    """Cosine similarity of the item text embeddings of completion and target (rows of the .npy
    are item ids, as rq/ writes them). An invalid completion scores 0; a title-answer row gets the
    rule reward."""
    path = Path(embeddings_path)
    if not path.is_file():
        raise FileNotFoundError(f"--ada_path {path}: embeddings file not found (needed by --reward_type semantic)")
    try:
        array = np.load(path)
    except (ValueError, OSError):  # e.g. the original's pickled array: np.load refuses pickles
        raise InputError(f"--ada_path {path}: not a .npy array of item embeddings (rows = item ids); "
                         "save the embeddings with numpy.save") from None
    if array.ndim != 2:
        raise InputError(f"--ada_path {path}: a {array.ndim}-d array; expected [items, dimensions]")
    table = torch.from_numpy(array).float()
    table = torch.nn.functional.normalize(table, dim=1)
    lookup = SidLookup(index)
    if lookup.max_item_id >= table.shape[0]:
        raise InputError(f"--ada_path {path}: {table.shape[0]} rows, fewer than the index's item ids")

    def semantic_reward(completions, target, target_sid, answer_type, **kwargs) -> list[float]:
        predicted, wanted = lookup.items(completions), lookup.items(target_sid)
        valid = (predicted >= 0) & (wanted >= 0)
        cosine = (table[predicted.clamp(min=0)] * table[wanted.clamp(min=0)]).sum(dim=1)
        item_score = torch.where(valid, cosine, torch.zeros(()))
        return torch.where(_sid_rows(answer_type), item_score, _hits(completions, target).float()).tolist()

    return semantic_reward


def item_log_prior(train_file, num_items: int) -> torch.Tensor:
    """log of each item's share of the training targets (the `item_id` column of `train_file`),
    add-one smoothed so an item never seen as a target keeps a finite prior."""
    from data import read_split_csv

    targets = torch.tensor([row.item_id for row in read_split_csv(train_file)], dtype=torch.long)
    counts = 1.0 + torch.bincount(targets[targets < num_items], minlength=num_items).double()
    return (counts / counts.sum()).log().float()


def make_sasrec_reward(cf_path, index, score: str = "logit", train_file=""):
    """The SASRec model's score of the completion's item after the row's history: its raw logit
    (`score="logit"`, as the original cf_reward), its softmax probability over the catalogue
    (`"prob"`), or its pointwise mutual information with the history (`"pmi"`: log-probability
    minus the log of the item's share of `train_file`'s targets). `pmi` takes out the part of the
    score every history shares: the policy learnt each item's popularity in SFT already, and a
    reward that repeats it counts it twice (a product of two experts with one prior divides by
    that prior once). An invalid completion gets the row's lowest score over the catalogue. Rows
    with a title answer or without a history get the rule reward. `cf_path` is a sasrec.py
    checkpoint or an original MiniOneRec SASRec state dict."""
    import sasrec

    if score not in SASREC_SCORES:
        raise InputError(f"--sasrec_score {score!r}: choose one of {SASREC_SCORES}")
    if score == "pmi" and not train_file:
        raise InputError("--sasrec_score pmi needs --train_file (its targets give each item's prior)")
    if not Path(cf_path).exists():
        raise FileNotFoundError(f"--cf_path {cf_path}: SASRec checkpoint not found (needed by --reward_type sasrec)")
    try:
        model = sasrec.load_sasrec_checkpoint(cf_path)
    except InputError as error:
        raise InputError(f"--cf_path {error}") from None
    lookup = SidLookup(index)
    if lookup.max_item_id >= model.item_num:
        raise InputError(
            f"--cf_path {cf_path}: the SASRec model knows {model.item_num} items, fewer than the "
            f"index's item ids (up to {lookup.max_item_id}): it was trained on another catalogue"
        )
    log_prior = item_log_prior(train_file, model.item_num) if score == "pmi" else None

    @torch.no_grad()
    def sasrec_reward(completions, target, history_item_ids, answer_type, **kwargs) -> list[float]:
        rewards = _hits(completions, target).float()
        scored = (_sid_rows(answer_type) & torch.tensor([len(h) > 0 for h in history_item_ids])).nonzero().flatten()
        if len(scored):
            states, lengths = model.states_from_histories([history_item_ids[i] for i in scored.tolist()])
            scores = model.forward_eval(states, lengths).float()
            if score == "prob":
                scores = scores.softmax(dim=-1)
            elif score == "pmi":
                scores = scores.log_softmax(dim=-1) - log_prior
            predicted = lookup.items([completions[i] for i in scored.tolist()])
            picked = scores.gather(1, predicted.clamp(min=0)[:, None]).squeeze(1)
            rewards[scored] = torch.where(predicted >= 0, picked, scores.min(dim=1).values).cpu()
        return rewards.tolist()

    return sasrec_reward


def build_reward_funcs(reward_type, num_generations, index, beam_search, ada_path="", cf_path="",
                       sasrec_score="logit", train_file=""):
    """The reward functions of a --reward_type (TRL sums them)."""
    if reward_type not in REWARD_TYPES:
        raise InputError(f"--reward_type {reward_type!r}: choose one of {REWARD_TYPES}")
    if reward_type in ("ranking", "ranking_only") and not beam_search:
        raise InputError(
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
            raise InputError("--reward_type semantic needs --ada_path (item embeddings .npy)")
        return [make_semantic_reward(ada_path, index)]
    if not cf_path:
        raise InputError("--reward_type sasrec needs --cf_path (a SASRec checkpoint)")
    return [make_sasrec_reward(cf_path, index, sasrec_score, train_file)]
