"""Residual k-means (RQ-KMeans), plain and balanced: level l clusters what levels < l left
unexplained.

Level 0 clusters the item embeddings; every item's centroid is subtracted and level 1 clusters
those residuals, and so on. An item's codes are its cluster at each level.
  - `residual_kmeans`: faiss k-means per level (the original's rqkmeans_faiss.py trains a faiss
    ResidualQuantizer with beam size 1, which is this greedy level-by-level k-means).
  - `residual_kmeans_constrained`: k-means-constrained per level, every cluster holding between
    n//K - 1 and n//K + 1 items, 3 initialisations, seeds as the original's
    rqkmeans_constrained.py draws them.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from runtime import InputError

logger = logging.getLogger("rqkmeans")


def check_codebook_sizes(n_items: int, codebook_sizes: list[int]):
    """k-means needs at least as many points as clusters at every level."""
    if n_items == 0:
        raise InputError("empty catalogue: no item embeddings to quantise")
    too_big = [k for k in codebook_sizes if k > n_items]
    if too_big or min(codebook_sizes) < 1:
        raise InputError(
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


def _residual_levels(embeddings, codebook_sizes, cluster_level):
    """Shared loop: cluster_level(residual, level, k) -> (centroids, assignment). Returns (codes
    (n_items, levels) int64, codebooks, squared distances (n_items, last codebook size) of each
    item's last-level residual to every last-level code)."""
    check_codebook_sizes(len(embeddings), codebook_sizes)
    residual = np.ascontiguousarray(embeddings, dtype=np.float32).copy()
    codes, codebooks = [], []
    for level, k in enumerate(codebook_sizes):
        centroids, assignment = cluster_level(residual, level, k)
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        if level == len(codebook_sizes) - 1:
            last_distances = squared_distances(residual, centroids)
        residual -= centroids[assignment]
        codes.append(np.asarray(assignment, dtype=np.int64))
        codebooks.append(centroids)
        logger.info("level %d: %d codes, %d used, mean residual norm %.4f", level, k,
                    len(np.unique(assignment)), float(np.linalg.norm(residual, axis=1).mean()))
    return np.stack(codes, axis=1), codebooks, last_distances


def residual_kmeans(embeddings: np.ndarray, codebook_sizes: list[int], niter: int = 25,
                    seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Plain RQ-KMeans with faiss; see `_residual_levels` for what it returns."""
    return _residual_levels(embeddings, codebook_sizes,
                            lambda residual, level, k: kmeans(residual, k, niter, seed + level))


def balanced_size_bounds(n_items: int, k: int) -> tuple[int, int]:
    """The original's cluster size bounds: [max(1, n//K - 1), n//K + 1]."""
    return max(1, n_items // k - 1), n_items // k + 1


def residual_kmeans_constrained(embeddings: np.ndarray, codebook_sizes: list[int], max_iter: int = 100,
                                seed: int = 42, n_init: int = 3, tol: float = 1e-4,
                                n_jobs: int = 1) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Balanced RQ-KMeans with k-means-constrained (min-cost-flow assignment under size bounds);
    see `_residual_levels` for what it returns."""
    from k_means_constrained import KMeansConstrained

    def cluster_level(residual, level, k):
        size_min, size_max = balanced_size_bounds(len(residual), k)
        level_seed = int(np.random.RandomState(seed + level).randint(0, 2 ** 31 - 1))
        model = KMeansConstrained(n_clusters=k, size_min=size_min, size_max=size_max, max_iter=max_iter,
                                  tol=tol, n_init=n_init, random_state=level_seed, n_jobs=n_jobs)
        labels = model.fit_predict(residual)
        return model.cluster_centers_, labels

    return _residual_levels(embeddings, codebook_sizes, cluster_level)
