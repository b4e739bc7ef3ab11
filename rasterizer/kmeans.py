"""Deterministic k-means for the SOG spherical-harmonics palette, on NumPy or CuPy.

SOG stores SH bands 1-3 as a palette of up to 65,536 centroids of the 9/24/45 coefficients
and a 16-bit palette index per Gaussian (:mod:`rasterizer.sog`). A full Lloyd iteration over
1M points and 65,536 centroids is 3·10^12 multiply-adds: fine for a GPU, hours for two CPU
cores. So the clustering is two-level, the same on both devices:

1. **coarse cells** — a Lloyd k-means with ``k / CELL_CENTROIDS`` centroids trained on a fixed
   random sample, then every point assigned to its nearest coarse centroid;
2. **fine palette** — each cell gets a share of the ``k`` palette entries proportional to its
   number of points (largest remainder, at least one each), and Lloyd runs inside the cell.

A point is only ever compared with the centroids of its own cell, which cuts the work by the
number of cells; small problems (``n·k`` up to :data:`FLAT_BUDGET`) skip the coarse level and
run plain Lloyd over all points. Each Lloyd run starts from distinct random points of its
input, then alternates assignment (nearest centroid by squared Euclidean distance; ties go to
the lower index) and update (each centroid becomes the mean of its points; an empty one is
moved onto the point farthest from its centroid). The labels returned are those of the last
assignment and every centroid is the mean of the points labelled with it.

Deterministic: the random choices come from NumPy generators seeded with ``seed`` (and the
cell number), sums are taken in a fixed order in float64. The same input on the same device
gives the same palette on every run; the CPU and the GPU may differ in the last bits of the
distances and so pick different centroids for near-ties.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: palette entries per coarse cell (the fine level's k inside one cell, on average)
CELL_CENTROIDS = 128
#: sample points per coarse centroid used to train the coarse level
CELL_SAMPLE = 64
#: n·k up to which one flat Lloyd run is cheaper than the two levels
FLAT_BUDGET = 1 << 26
#: rows per distance block (bounds the n×k distance matrix held at once)
BLOCK_ROWS = 1 << 14
LOG_EVERY_S = 2.0


@dataclass
class KMeansResult:
    centroids: np.ndarray   # (k, d) float32
    labels: np.ndarray      # (n,) uint32, each < k
    cells: int              # coarse cells used (1: flat)
    device: str             # "cpu" or "gpu"
    seconds: float


def array_module(device: str = "auto"):
    """``(xp, name)``: NumPy for ``cpu``, CuPy for ``gpu``; ``auto`` takes the GPU when CuPy sees one."""
    from .backends import gpu_unavailable_reason
    from .errors import BackendUnavailable

    if device not in ("auto", "cpu", "gpu"):
        raise BackendUnavailable(f"unknown k-means device {device!r} (choose cpu, gpu or auto)")
    if device == "cpu":
        return np, "cpu"
    reason = gpu_unavailable_reason()
    if reason is None:
        import cupy
        return cupy, "gpu"
    if device == "gpu":
        raise BackendUnavailable(f"k-means on the gpu is not available: {reason}")
    return np, "cpu"


def kmeans(points: np.ndarray, k: int, iterations: int = 10, seed: int = 0,
           device: str = "auto") -> KMeansResult:
    """Cluster the rows of ``points`` (n, d) into ``k`` centroids (see the module docstring)."""
    t0 = time.perf_counter()
    xp, name = array_module(device)
    points = np.ascontiguousarray(points, dtype=np.float32)
    n, d = points.shape
    if not (1 <= k) or iterations < 1:
        raise ValueError(f"k-means needs k >= 1 and iterations >= 1, got k={k}, iterations={iterations}")
    if k >= n:  # every point is its own centroid (extra entries repeat the last point)
        centroids = np.concatenate([points, np.repeat(points[-1:], k - n, axis=0)])
        return KMeansResult(centroids, np.arange(n, dtype=np.uint32), 1, name, time.perf_counter() - t0)

    x = xp.asarray(points)
    cells = 1 if n * k <= FLAT_BUDGET else max(1, k // CELL_CENTROIDS)
    if cells == 1:
        log.info("k-means (%s): %d points x %d dims -> %d centroids, %d iterations", name, n, d, k, iterations)
        cent, lab = _lloyd(xp, x, k, iterations, np.random.default_rng([seed, 0]), progress=True)
        centroids, labels = _host(xp, cent), _host(xp, lab).astype(np.uint32)
        return KMeansResult(centroids, labels, 1, name, time.perf_counter() - t0)

    log.info("k-means (%s): %d points x %d dims -> %d centroids in %d cells, %d iterations",
             name, n, d, k, cells, iterations)
    rng = np.random.default_rng([seed, 0])
    sample = np.sort(rng.choice(n, size=min(n, CELL_SAMPLE * cells), replace=False))
    coarse, _ = _lloyd(xp, x[xp.asarray(sample)], cells, iterations, rng)
    cell_of, _ = _nearest(xp, x, coarse)
    cell_of = _host(xp, cell_of)
    order = np.argsort(cell_of, kind="stable")
    counts = np.bincount(cell_of, minlength=cells)
    alloc = allocate(counts, k)
    starts = np.concatenate([[0], np.cumsum(counts)])
    offsets = np.concatenate([[0], np.cumsum(alloc)])
    log.info("k-means: coarse level done (%.2f s); cells hold %d..%d points",
             time.perf_counter() - t0, counts[counts > 0].min(), counts.max())

    centroids = np.empty((k, d), np.float32)
    labels = np.empty(n, np.uint32)
    last = time.perf_counter()
    for c in range(cells):
        if counts[c] == 0:
            continue
        idx = order[starts[c]:starts[c + 1]]
        cent, lab = _lloyd(xp, x[xp.asarray(idx)], int(alloc[c]), iterations,
                           np.random.default_rng([seed, c + 1]))
        centroids[offsets[c]:offsets[c + 1]] = _host(xp, cent)
        labels[idx] = _host(xp, lab).astype(np.uint32) + np.uint32(offsets[c])
        now = time.perf_counter()
        if now - last > LOG_EVERY_S:
            log.info("k-means: %d/%d cells (%.1f s)", c + 1, cells, now - t0)
            last = now
    seconds = time.perf_counter() - t0
    log.info("k-means (%s) done in %.2f s", name, seconds)
    return KMeansResult(centroids, labels, cells, name, seconds)


def allocate(counts: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` palette entries over cells in proportion to ``counts``.

    Largest remainder (ties to the lower cell), then every non-empty cell gets at least one
    entry, taken back one at a time from the cells with the most entries (lower cell first).
    Never more entries than points in a cell, as long as ``k <= counts.sum()``.
    """
    counts = np.asarray(counts, np.int64)
    n = int(counts.sum())
    exact = counts * k
    alloc = exact // n
    remainder = exact - alloc * n
    short = k - int(alloc.sum())
    if short:
        alloc[np.lexsort((np.arange(len(counts)), -remainder))[:short]] += 1
    need = (counts > 0) & (alloc == 0)
    for c in np.flatnonzero(need):
        donor = int(np.argmax(alloc))  # the first of the largest
        alloc[donor] -= 1
        alloc[c] = 1
    return alloc


def _lloyd(xp, x, k: int, iterations: int, rng: np.random.Generator, progress: bool = False):
    """Lloyd's algorithm from ``k`` distinct random rows of ``x``: (centroids, labels)."""
    n = x.shape[0]
    if k >= n:
        return x.copy(), xp.arange(n)
    cent = x[xp.asarray(np.sort(rng.choice(n, size=k, replace=False)))].copy()
    t0 = last = time.perf_counter()
    for it in range(iterations):
        labels, dist = _nearest(xp, x, cent)
        cent = _means(xp, x, labels, dist, cent)
        if progress and (time.perf_counter() - last > LOG_EVERY_S or it + 1 == iterations):
            last = time.perf_counter()
            log.info("k-means: iteration %d/%d (%.1f s)", it + 1, iterations, last - t0)
    return cent, labels


def _nearest(xp, x, cent):
    """Index of the nearest centroid of each row (lowest index on ties) and its squared distance."""
    n = x.shape[0]
    cc = (cent * cent).sum(axis=1)
    labels = xp.empty(n, xp.int64)
    dist = xp.empty(n, xp.float32)
    for s in range(0, n, BLOCK_ROWS):
        xb = x[s:s + BLOCK_ROWS]
        dm = xb @ cent.T
        dm *= -2.0
        dm += cc
        lab = dm.argmin(axis=1)
        labels[s:s + BLOCK_ROWS] = lab
        dist[s:s + BLOCK_ROWS] = xp.take_along_axis(dm, lab[:, None], axis=1)[:, 0] + (xb * xb).sum(axis=1)
    return labels, dist


def _means(xp, x, labels, dist, cent):
    """Each centroid moved to the mean of its rows; empty ones onto the farthest rows."""
    k = cent.shape[0]
    counts = xp.bincount(labels, minlength=k)
    order = xp.argsort(labels, kind="stable")
    # segment sums as differences of float64 cumulative sums over the rows sorted by label:
    # a fixed order of additions on either device, unlike scatter-adds
    csum = xp.cumsum(x[order].astype(xp.float64), axis=0)
    ends = xp.cumsum(counts)
    csum = xp.concatenate([xp.zeros((1, x.shape[1]), xp.float64), csum])
    sums = csum[ends] - csum[ends - counts]
    new = (sums / xp.maximum(counts, 1)[:, None]).astype(xp.float32)
    empty = counts == 0
    n_empty = int(empty.sum())
    if n_empty:
        far = xp.argsort(-dist, kind="stable")
        new[xp.flatnonzero(empty)] = x[far[:n_empty]]
    return new


def _host(xp, a) -> np.ndarray:
    return a if xp is np else xp.asnumpy(a)
