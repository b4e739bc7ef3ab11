"""Deterministic k-means for the SOG spherical-harmonics palette, on NumPy or CuPy.

SOG stores SH bands 1-3 as a palette of up to 65,536 centroids of the 9/24/45 coefficients
and a 16-bit palette index per Gaussian (:mod:`rasterizer.sog`). A full Lloyd iteration over
1M points and 65,536 centroids is 3·10^12 multiply-adds: fine for a GPU, hours for two CPU
cores. So the clustering is hierarchical, the same on both devices. To fit ``k`` centroids to
``n`` points:

- if ``n·k`` is at most :data:`FLAT_BUDGET`, run Lloyd's algorithm on them;
- otherwise split them into ``k / CELL_CENTROIDS`` **cells**: a Lloyd k-means of that many
  centroids trained on a fixed random sample, every point assigned to its nearest one; give each
  cell a share of the ``k`` centroids proportional to its points (largest remainder, at least
  one each) and fit each cell the same way (a big cell is split again).

A point is only ever compared with the centroids of its own cell, which divides the work by the
number of cells. Each Lloyd run starts from distinct random points of its input, then alternates
assignment (nearest centroid by squared Euclidean distance; ties go to the lower index) and
update (each centroid becomes the mean of its points; an empty one is moved onto the point
farthest from its centroid). The labels returned are those of the last assignment, and every
centroid that has points is their mean.

Deterministic: the random choices come from NumPy generators seeded with ``seed`` (and the
cell's path in the hierarchy), sums are taken in a fixed order in float64. The same input on the same device
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
#: n·k up to which one plain Lloyd run is cheaper than splitting into cells
FLAT_BUDGET = 1 << 22
#: rows per distance block (bounds the n×k distance matrix held at once)
BLOCK_ROWS = 1 << 14
LOG_EVERY_S = 2.0


@dataclass
class KMeansResult:
    centroids: np.ndarray   # (k, d) float32
    labels: np.ndarray      # (n,) uint32, each < k
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
    """Cluster the rows of ``points`` (n, d) into ``k`` centroids (see the module docstring).

    ``points`` may be a strided view (rows need not be contiguous); it is not copied whole on
    the CPU.
    """
    t0 = time.perf_counter()
    xp, name = array_module(device)
    n, d = points.shape
    if k < 1 or iterations < 1:
        raise ValueError(f"k-means needs k >= 1 and iterations >= 1, got k={k}, iterations={iterations}")
    log.info("k-means (%s): %d points x %d dims -> %d centroids, %d iterations", name, n, d, k, iterations)
    x = xp.asarray(points, dtype=xp.float32)
    progress = _Progress(n, t0)
    centroids, labels = _fit(xp, x, k, iterations, (seed,), progress)
    seconds = time.perf_counter() - t0
    log.info("k-means (%s) done in %.2f s", name, seconds)
    return KMeansResult(centroids, labels.astype(np.uint32), name, seconds)


class _Progress:
    """Logs the share of points whose final cluster is known, every few seconds."""

    def __init__(self, total: int, t0: float):
        self.total, self.done, self.t0, self.last = total, 0, t0, t0

    def add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last > LOG_EVERY_S and self.done < self.total:
            self.last = now
            log.info("k-means: %d/%d points clustered (%.1f s)", self.done, self.total, now - self.t0)


def _fit(xp, x, k: int, iterations: int, key: tuple, progress: _Progress):
    """Centroids (k, d) and labels (n,) on the host for the rows of ``x``: Lloyd, or cells first."""
    n = x.shape[0]
    if k >= n:  # every point is its own centroid (extra entries repeat the last point)
        cent = _host(xp, x)
        progress.add(n)
        return np.concatenate([cent, np.repeat(cent[-1:], k - n, axis=0)]), np.arange(n)
    if n * k > FLAT_BUDGET:
        cells = max(2, k // CELL_CENTROIDS)
        rng = np.random.default_rng(key)
        sample = np.sort(rng.choice(n, size=min(n, CELL_SAMPLE * cells), replace=False))
        coarse, _ = _lloyd(xp, x[xp.asarray(sample)], cells, iterations, rng)
        cell_of = _host(xp, _nearest(xp, x, coarse)[0])
        counts = np.bincount(cell_of, minlength=cells)
        if counts.max() < n:  # the cells split the points: fit each with its share of k
            return _fit_cells(xp, x, k, iterations, key, progress, cell_of, counts)
    cent, labels = _lloyd(xp, x, k, iterations, np.random.default_rng(key))
    progress.add(n)
    return _host(xp, cent), _host(xp, labels)


def _fit_cells(xp, x, k, iterations, key, progress, cell_of, counts):
    order = np.argsort(cell_of, kind="stable")
    alloc = allocate(counts, k)
    starts = np.concatenate([[0], np.cumsum(counts)])
    offsets = np.concatenate([[0], np.cumsum(alloc)])
    centroids = np.empty((k, x.shape[1]), np.float32)
    labels = np.empty(x.shape[0], np.int64)
    for c in np.flatnonzero(counts):
        idx = order[starts[c]:starts[c + 1]]
        cent, lab = _fit(xp, x[xp.asarray(idx)], int(alloc[c]), iterations, key + (int(c),), progress)
        centroids[offsets[c]:offsets[c + 1]] = cent
        labels[idx] = lab + offsets[c]
    return centroids, labels


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


def _lloyd(xp, x, k: int, iterations: int, rng: np.random.Generator):
    """Lloyd's algorithm from ``k`` distinct random rows of ``x`` (k < n): (centroids, labels)."""
    n = x.shape[0]
    cent = x[xp.asarray(np.sort(rng.choice(n, size=k, replace=False)))]
    for _ in range(iterations):
        labels, dist = _nearest(xp, x, cent)
        cent = _means(xp, x, labels, dist, cent)
    return cent, labels


def _nearest(xp, x, cent):
    """Index of the nearest centroid of each row (lowest index on ties) and its squared distance."""
    n = x.shape[0]
    cc = (cent * cent).sum(axis=1)
    m2 = -2.0 * cent.T            # |x - c|² = |x|² - 2 x·c + |c|²; the -2 folded into the small side
    labels = xp.empty(n, xp.int64)
    dist = xp.empty(n, xp.float32)
    for s in range(0, n, BLOCK_ROWS):
        xb = x[s:s + BLOCK_ROWS]
        dm = xb @ m2
        dm += cc
        lab = dm.argmin(axis=1)
        labels[s:s + BLOCK_ROWS] = lab
        dist[s:s + BLOCK_ROWS] = dm[xp.arange(len(lab)), lab] + (xb * xb).sum(axis=1)
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
