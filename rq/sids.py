"""Quantiser codes -> collision-free SIDs (index.json) and the report on how good they are.

Level l's code c becomes the token `<{letter_l}_{c}>`, letters a, b, c, ... Two items must never
share a SID. Each method first applies its own repair (rq/build_sids.py), then what still collides
gets the extra level:
  - `reassign_last_level` (RQ-KMeans, which has none in the original): inside a group of items with
    equal codes, the first item (catalogue order) keeps them and each other item moves to its
    nearest last-level code that no item with the same prefix uses, so it keeps three tokens;
  - `rqvae.sinkhorn_repair` (RQ-VAE): the original's Sinkhorn re-assignment of the last level;
  - extra level (`collision_suffixes`, the original's ordinal de-duplication of constrained
    RQ-KMeans and RQ-KMeans+): every item of a group that still shares all codes gets one more
    token, `<d_0>`, `<d_1>`, ... after three levels, numbered in catalogue order.
No SID is a prefix of another (a colliding group has no shorter SID); the SID vocabulary is exactly
the tokens the index uses.
"""

from __future__ import annotations

import math
import string

import numpy as np

import data

LEVEL_LETTERS = string.ascii_lowercase
MAX_DEFAULT_CODEBOOK = 256  # the paper's 3 x 256


def default_codebook_size(n_items: int) -> int:
    """Power of two nearest sqrt(n_items), in [2, 256]: about sqrt(n) items per first-level code,
    so a small catalogue does not leave most codes empty (1.3k items -> 32, 3.5k -> 64, 65k+ -> 256)."""
    if n_items < 2:
        return 1
    return int(min(MAX_DEFAULT_CODEBOOK, max(2, 2 ** round(math.log2(math.sqrt(n_items))))))


def collision_suffixes(codes: np.ndarray) -> np.ndarray:
    """Per item, its rank among the items with the same code tuple when that tuple is shared,
    else -1 (no extra level needed)."""
    _, group, group_size = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    starts_sorted = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]
    run_lengths = np.diff(np.r_[starts_sorted, len(group)])
    rank = np.empty(len(group), dtype=np.int64)
    rank[order] = np.arange(len(group)) - np.repeat(starts_sorted, run_lengths)
    return np.where(group_size[group] > 1, rank, -1)


def reassign_last_level(codes: np.ndarray, last_distances: np.ndarray) -> np.ndarray:
    """Codes where every item that shared its codes with an earlier item has moved to its nearest
    free last-level code under the same prefix, when there is one (step 1 above)."""
    codes = codes.copy()
    movers = np.flatnonzero(collision_suffixes(codes) > 0)
    taken = set(map(tuple, codes.tolist()))
    preferences = np.argsort(last_distances[movers], axis=1, kind="stable")
    for item, preference in zip(movers.tolist(), preferences.tolist()):
        prefix = tuple(codes[item, :-1].tolist())
        free = next((code for code in preference if prefix + (code,) not in taken), None)
        if free is not None:
            codes[item, -1] = free
            taken.add(prefix + (free,))
    return codes


def build_index(item_ids: list[str], codes: np.ndarray, suffixes: np.ndarray) -> dict[str, list[str]]:
    """index.json content: item id -> its level tokens (+ the extra level when it collided)."""
    n_levels = codes.shape[1]
    if n_levels + 1 > len(LEVEL_LETTERS):
        raise ValueError(f"at most {len(LEVEL_LETTERS) - 1} levels are supported, got {n_levels}")
    letters = LEVEL_LETTERS[:n_levels]
    index = {}
    for item_id, item_codes, suffix in zip(item_ids, codes.tolist(), suffixes.tolist()):
        tokens = [f"<{letter}_{code}>" for letter, code in zip(letters, item_codes)]
        if suffix >= 0:
            tokens.append(f"<{LEVEL_LETTERS[n_levels]}_{suffix}>")
        index[str(item_id)] = tokens
    return index


def mean_pair_cosines(embeddings: np.ndarray, first_codes: np.ndarray) -> tuple[float | None, float | None]:
    """Mean cosine similarity over all pairs of items sharing a first-level code, and over all
    pairs of items, exactly: for unit vectors, the sum over pairs of a group is
    (||sum of the group||^2 - group size) / 2."""
    unit = embeddings / np.clip(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12, None)
    n = len(unit)
    group_sums = np.zeros((first_codes.max() + 1, unit.shape[1]))
    np.add.at(group_sums, first_codes, unit)
    group_sizes = np.bincount(first_codes).astype(np.float64)
    within_pairs = float((group_sizes * (group_sizes - 1)).sum())
    within = (float((group_sums ** 2).sum()) - n) / within_pairs if within_pairs else None
    all_pairs = float(n * (n - 1))
    overall = (float((unit.sum(0) ** 2).sum()) - n) / all_pairs if all_pairs else None
    return within, overall


def count_colliding(codes: np.ndarray) -> dict:
    """Items sharing their code tuple with another item, and how many tuples are shared."""
    _, counts = np.unique(codes, axis=0, return_counts=True)
    shared = counts[counts > 1]
    return {"items": int(shared.sum()), "shared_sids": int(len(shared)), "largest_group": int(counts.max())}


def perplexity(codes: np.ndarray) -> float:
    """exp(entropy) of the code distribution of one level: the number of equally used codes it is
    worth (the codebook size when use is uniform)."""
    p = np.bincount(codes) / len(codes)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def largest_prefix_groups(codes: np.ndarray) -> list[int]:
    """Per prefix depth d = 1..levels, the most items sharing their first d codes."""
    return [int(np.unique(codes[:, :depth], axis=0, return_counts=True)[1].max())
            for depth in range(1, codes.shape[1] + 1)]


def sid_report(embeddings: np.ndarray, raw_codes: np.ndarray, codes: np.ndarray, suffixes: np.ndarray,
               index: dict[str, list[str]], codebook_sizes: list[int]) -> dict:
    """Collisions before and after repair, codebook use, and semantic coherence of level 0.
    raw_codes: the quantiser's codes; codes: after the method's collision repair; suffixes: the
    extra level (-1 where none)."""
    sid_strings = ["".join(tokens) for tokens in index.values()]
    within, overall = mean_pair_cosines(embeddings, codes[:, 0])
    levels = range(codes.shape[1])
    return {
        "items": len(codes),
        "levels": codes.shape[1],
        "codebook_sizes": list(codebook_sizes),
        "codes_used_per_level": [int(len(np.unique(codes[:, level]))) for level in levels],
        "perplexity_per_level": [round(perplexity(codes[:, level]), 2) for level in levels],
        "largest_group_per_prefix_depth": largest_prefix_groups(codes),
        "collisions_before": count_colliding(raw_codes),
        "items_moved_by_repair": int((raw_codes != codes).any(axis=1).sum()),
        "items_with_extra_level": int((suffixes >= 0).sum()),
        "extra_level_tokens": int(suffixes.max() + 1),
        "collisions_after": {"items": len(sid_strings) - len(set(sid_strings))},
        "sid_vocabulary_size": len({t for tokens in index.values() for t in tokens}),
        "mean_cosine_same_first_code": within,
        "mean_cosine_all_pairs": overall,
    }


def write_row_index(codes: np.ndarray, path) -> dict:
    """The original scripts' index file: keys are embedding row numbers; items that still share
    all codes get the extra level. Returns collision counts before the extra level."""
    import data

    index = build_index([str(row) for row in range(len(codes))], codes, collision_suffixes(codes))
    data.write_index(index, path)
    return count_colliding(codes)
