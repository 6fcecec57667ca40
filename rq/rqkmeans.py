"""Residual k-means (RQ-KMeans): level l clusters what levels < l left unexplained.

Level 0 runs k-means on the item embeddings; every item's centroid is subtracted and level 1 runs
k-means on those residuals, and so on. An item's codes are its cluster at each level. Uses faiss
(faiss-cpu) k-means: fast, multi-threaded, seeded. Run it with `rq/build_sids.py --method rqkmeans`.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

logger = logging.getLogger("rqkmeans")


def check_codebook_sizes(n_items: int, codebook_sizes: list[int]):
    """k-means needs at least as many points as clusters at every level."""
    if n_items == 0:
        raise ValueError("empty catalogue: no item embeddings to quantise")
    too_big = [k for k in codebook_sizes if k > n_items]
    if too_big or min(codebook_sizes) < 1:
        raise ValueError(
            f"codebook sizes {codebook_sizes} do not fit a catalogue of {n_items} items: every "
            f"level needs 1 <= codebook size <= number of items (pass a smaller --codebook_size)"
        )


def kmeans(points: np.ndarray, k: int, niter: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids (k, d), assignment of each point)."""
    model = faiss.Kmeans(points.shape[1], k, niter=niter, seed=seed, verbose=False,
                         min_points_per_centroid=1, max_points_per_centroid=1 << 30)
    model.train(points)
    _, assignment = model.index.search(points, 1)
    return model.centroids, assignment[:, 0]


def squared_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return ((points ** 2).sum(1, keepdims=True) - 2 * points @ centroids.T + (centroids ** 2).sum(1)).clip(min=0)


def residual_kmeans(embeddings: np.ndarray, codebook_sizes: list[int], niter: int = 25,
                    seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(codes (n_items, levels) int64, codebook of each level, squared distances (n_items, last
    codebook size) of each item's last-level residual to every last-level code)."""
    check_codebook_sizes(len(embeddings), codebook_sizes)
    residual = np.ascontiguousarray(embeddings, dtype=np.float32).copy()
    codes, codebooks = [], []
    for level, k in enumerate(codebook_sizes):
        centroids, assignment = kmeans(residual, k, niter, seed + level)
        if level == len(codebook_sizes) - 1:
            last_distances = squared_distances(residual, centroids)
        residual -= centroids[assignment]
        codes.append(assignment.astype(np.int64))
        codebooks.append(centroids)
        logger.info("level %d: %d codes, %d used, mean residual norm %.4f", level, k,
                    len(np.unique(assignment)), float(np.linalg.norm(residual, axis=1).mean()))
    return np.stack(codes, axis=1), codebooks, last_distances
