"""Quantiser codes -> collision-free SIDs (index.json) and the report on how good they are.

Level l's code c becomes the token `<{letter_l}_{c}>`, letters a, b, c, ... Two items must never
share a SID, so collisions are resolved in two steps:
  1. last level: inside a group of items with equal codes, the first item (catalogue order) keeps
     them and each other item moves to its nearest last-level code that no item with the same
     prefix uses, so it keeps three tokens (upstream balances its last level with Sinkhorn for
     the same purpose);
  2. extra level: items that still collide (a prefix with more items than last-level codes) get one
     more token, `<d_0>`, `<d_1>`, ... after three levels, numbered in catalogue order.
Items with identical text therefore share every code but the last; no SID is a prefix of another
(a colliding group has no shorter SID); the SID vocabulary is exactly the tokens the index uses.
"""

from __future__ import annotations

import math
import string

import numpy as np

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


def sid_report(embeddings: np.ndarray, raw_codes: np.ndarray, codes: np.ndarray, suffixes: np.ndarray,
               index: dict[str, list[str]], codebook_sizes: list[int]) -> dict:
    """Collisions at each step, codebook use, and semantic coherence of level 0."""
    sid_strings = ["".join(tokens) for tokens in index.values()]
    within, overall = mean_pair_cosines(embeddings, codes[:, 0])
    return {
        "items": len(codes),
        "levels": codes.shape[1],
        "codebook_sizes": list(codebook_sizes),
        "codes_used_per_level": [int(len(np.unique(codes[:, level]))) for level in range(codes.shape[1])],
        "collisions_before": count_colliding(raw_codes),
        "items_moved_at_last_level": int((raw_codes[:, -1] != codes[:, -1]).sum()),
        "items_with_extra_level": int((suffixes >= 0).sum()),
        "extra_level_tokens": int(suffixes.max() + 1),
        "collisions_after": {"items": len(sid_strings) - len(set(sid_strings))},
        "sid_vocabulary_size": len({t for tokens in index.values() for t in tokens}),
        "mean_cosine_same_first_code": within,
        "mean_cosine_all_pairs": overall,
    }
