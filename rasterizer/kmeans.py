"""Deterministic k-means for the SOG spherical-harmonics palette, on the CPU (NumPy) or the GPU (CuPy),
and the 1-D codebooks of SOG's scales and colours (:func:`quantize_1d`). Plain NumPy on the CPU, not
numba: the writer's peak memory is measured against the PLY, and numba's compiler libraries alone are
0.4× a 1M-Gaussian SH-3 PLY of resident pages.

SOG stores SH bands 1-3 as a palette of up to 65,536 centroids of the 9/24/45 coefficients and a
16-bit palette index per Gaussian (:mod:`rasterizer.sog`). A full Lloyd iteration over 1M points
and 65,536 centroids is 3·10^12 multiply-adds: fine for a GPU, hours for two CPU cores. So the
points are first split into **leaves** and each leaf is clustered on its own, the same way on both
devices:

1. **partition** — ``n`` points needing ``k`` centroids form one leaf when ``n·k`` is at most
   :data:`FLAT_BUDGET` (or ``k >= n``). Otherwise they are split into ``k / cell_centroids``
   cells: a k-means of that many centroids trained on a fixed random sample, each point going to
   its nearest one; each cell gets a share of the ``k`` centroids proportional to its points
   (largest remainder, at least one each) and is partitioned the same way.
2. **seeding** — every leaf draws its first centroids by k-means++ (D² sampling: each next seed is
   a point drawn with probability proportional to its squared distance to the nearest seed so far),
   one leaf after the other on the CPU (a matrix-vector product per seed), one CUDA block per leaf
   on the GPU. The draws come from a counter-based generator (splitmix64 of the seed, the leaf and
   the step).
3. **Lloyd** — per leaf, ``iterations`` rounds of assignment (nearest centroid by squared
   Euclidean distance, ties to the lower index) and update (each centroid moves to the mean of its
   points; an empty one moves onto the point farthest from its centroid). The labels returned are
   those of the last assignment; every centroid that has points is their mean.

Points may carry weights (the SOG writer weighs each Gaussian by how much of the image it can
cover): centroids are then weighted means and seeds are drawn with probability ∝ weight × D².

A point is only compared with the centroids of its own leaf, which divides the work by the number
of leaves; k-means++ seeding more than makes up for the leaves' borders (it is what the reference
tool, plain Lloyd from random points, lacks). Leaves are larger on the GPU than on the CPU
(:data:`CELL_CENTROIDS`). On 1M SH-3 rows into 65,536 centroids (H200), the weighted error of
512-centroid cells is 1.4 % above that of 1024-centroid cells and 3.8 % below 256's, while the
seeding, whose time goes with the largest leaf's n·k (one block draws a leaf's seeds one after
the other), takes 0.27 s instead of 0.71 s: the GPU uses 512 and caps a leaf at n·k = 2**25.

Deterministic: the random choices come from the seed (NumPy generators seeded with it and the
cell's path, the counter-based draws), sums over points are taken in a fixed order in float64.
The same input on the same device gives the same palette on every run; the CPU and the GPU differ.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: centroids per partition cell (the average k of a leaf) on each device
CELL_CENTROIDS = {"cpu": 128, "gpu": 512}
#: sample points per centroid used to train a partition's cells
CELL_SAMPLE = 64
#: n·k up to which a set of points is one leaf on each device
FLAT_BUDGET = {"cpu": 1 << 22, "gpu": 1 << 25}
#: rows per distance block (bounds the n×k distance matrix held at once)
BLOCK_ROWS = 1 << 11
#: smallest weight, relative to the largest: cluster sums are differences of running sums over
#: up to n points, so a cluster's weight must stay well above n·1e-16 of the total
WEIGHT_FLOOR = 1e-5
#: threads per leaf of the GPU seeding kernel
SEED_THREADS = 512
LOG_EVERY_S = 2.0
#: rows per block of the upload to the GPU
UPLOAD_ROWS = 1 << 16
#: values per chunk of quantize_1d's binning; rows per block of its dynamic programme
CHUNK_1D = 1 << 20
DP_ROWS = 128


@dataclass
class KMeansResult:
    centroids: np.ndarray   # (k, d) float32
    labels: np.ndarray      # (n,) uint32, each < k
    leaves: int             # leaves the points were split into (1: plain k-means)
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


def warm_up(device: str = "auto", dims: tuple[int, ...] = ()) -> threading.Thread | None:
    """Start CuPy, the CUDA context and the kernels for rows of each of ``dims`` floats in a
    background thread, so that they come up while the caller reads its input. None where the
    k-means will not run on the GPU; a failure there is left for the k-means itself to report."""
    if device == "cpu":
        return None

    def run():
        try:
            xp, name = array_module(device)
            if name == "gpu":
                xp.zeros(1)
                for d in dims:
                    _module(xp, d).get_function("assign")
        except Exception as e:   # noqa: BLE001 - reported by the k-means when it runs
            log.debug("k-means warm-up: %s", e)

    t = threading.Thread(target=run, name="kmeans-warm-up", daemon=True)
    t.start()
    return t


def kmeans(points: np.ndarray, k: int, iterations: int = 10, seed: int = 0, device: str = "auto",
           weights: np.ndarray | None = None) -> KMeansResult:
    """Cluster the rows of ``points`` (n, d) into ``k`` centroids (see the module docstring).

    ``weights`` (n,), positive, make it a weighted k-means: a centroid is the weighted mean of its
    points, and a point's chance to be a seed is its weight times its squared distance (default: 1
    each). ``points`` may be a strided view (rows need not be contiguous); on the CPU it is not
    copied whole.
    """
    t0 = time.perf_counter()
    n, d = points.shape
    if k < 1 or iterations < 1:
        raise ValueError(f"k-means needs k >= 1 and iterations >= 1, got k={k}, iterations={iterations}")
    if weights is not None:
        wh = np.asarray(weights, np.float64)
        if not (np.isfinite(wh).all() and (wh > 0).all()):
            raise ValueError("k-means weights must be finite and positive")
    xp, name = array_module(device)
    x = _on_device(xp, points)
    first, inverse = distinct_rows(x)
    if len(first) <= n // 2:
        # Equal rows (e.g. Gaussians whose SH bands were never trained: all zero) are one point of
        # their summed weight: a seed or a centroid spent on a copy would be wasted, and the
        # k-means++ draws and Lloyd's distances would run over every copy. Only where that at least
        # halves the points: the distinct rows are a copy, which for a few duplicates among a
        # million rows would cost more memory (a second 180 MB) than it saves work.
        log.info("k-means: %d points, %d distinct", n, len(first))
        w1 = np.ones(n) if weights is None else np.asarray(weights, np.float64)
        x = None
        res = kmeans(np.asarray(points)[first], k, iterations, seed, device,
                     np.bincount(inverse, weights=w1, minlength=len(first)))
        return KMeansResult(res.centroids, res.labels[inverse], res.leaves, res.device, time.perf_counter() - t0)
    del first, inverse
    if k >= n:   # every point is its own centroid (extra ones repeat the last point)
        cent = np.asarray(points, np.float32)
        cent = np.concatenate([cent, np.repeat(cent[-1:], k - n, axis=0)])
        return KMeansResult(cent, np.arange(n, dtype=np.uint32), 1, name, time.perf_counter() - t0)
    if weights is None:
        w = xp.ones(n, xp.float32)
    else:   # scaled to a maximum of 1 and floored, so that per-cluster sums keep their precision
        w = xp.asarray(np.maximum(wh / wh.max(), WEIGHT_FLOOR).astype(np.float32))
    leaves: list[tuple[np.ndarray | None, int]] = []
    _partition(xp, name, x, w, None, k, iterations, (seed,), leaves)
    log.info("k-means (%s): %d points x %d dims -> %d centroids in %d leaves, %d iterations (%.2f s)",
             name, n, d, k, len(leaves), iterations, time.perf_counter() - t0)

    ks = np.array([kl for _, kl in leaves], np.int64)
    seed_draws = int(np.random.default_rng([seed, 1]).integers(1 << 62))
    if xp is np:
        centroids, labels = _leaves_cpu(x, w, leaves, ks, iterations, seed_draws, t0)
    else:
        order = np.concatenate([np.arange(n) if idx is None else idx for idx, _ in leaves])
        sizes = np.array([n if idx is None else len(idx) for idx, _ in leaves], np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        centroids, labels = _leaves_gpu(xp, x, w, order, starts, ks, iterations, seed_draws, t0)
    seconds = time.perf_counter() - t0
    log.info("k-means (%s) done in %.2f s", name, seconds)
    return KMeansResult(centroids, labels.astype(np.uint32), len(leaves), name, seconds)


def _on_device(xp, points):
    """``points`` as float32 on the k-means's device: on the CPU strided rows stay a view; to the GPU
    they go a block of rows at a time (a strided array would otherwise be copied whole on the host
    first: 180 MB for 1M SH-3 rows)."""
    if xp is np:
        return np.asarray(points, np.float32)
    out = xp.empty(points.shape, xp.float32)
    for a in range(0, points.shape[0], UPLOAD_ROWS):
        out[a:a + UPLOAD_ROWS].set(np.ascontiguousarray(points[a:a + UPLOAD_ROWS], np.float32))
    return out


def distinct_rows(points) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)``: the index of the first of each group of bit-equal rows, in row order,
    and each row's group, so that ``points[first][inverse]`` equals ``points``. Rows are hashed
    (64-bit FNV-1a over their float bits), grouped by hash and checked against their group's first
    row: on a hash collision (never seen, but possible) every row is its own group. ``points`` on
    the GPU (a CuPy float32 array) are hashed and checked there; the result is on the host."""
    if not hasattr(points, "__cuda_array_interface__"):
        x = np.asarray(points)
        x = (x if x.dtype == np.float32 else x.astype(np.float32)).view(np.uint32)   # strided rows stay a view
        h = _row_hashes(x)
        _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        equal = _groups_equal(x, first, inverse)
    else:
        first, inverse, equal = _distinct_rows_gpu(points)
    if not equal:
        return np.arange(len(inverse)), np.arange(len(inverse))
    # renumber the groups in the order of their first rows (deterministic, independent of the hash)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse]


def _distinct_rows_gpu(x) -> tuple[np.ndarray, np.ndarray, bool]:
    """:func:`distinct_rows`' groups of the rows of a CuPy float32 array: the same hash, the same check."""
    import cupy as cp

    x = cp.ascontiguousarray(x, dtype=cp.float32)
    n, d = x.shape
    mod = _module(cp, d)
    h = cp.empty(n, cp.uint64)
    grid = ((n + 255) // 256,)
    mod.get_function("row_hash")(grid, (256,), (x, np.int64(n), h))
    _, first, inverse = cp.unique(h, return_index=True, return_inverse=True)
    first, inverse = first.astype(cp.int64), inverse.ravel().astype(cp.int64)
    differ = cp.zeros(1, cp.int32)
    mod.get_function("rows_differ")(grid, (256,), (x, np.int64(n), first, inverse, differ))
    return cp.asnumpy(first), cp.asnumpy(inverse), not bool(differ.get()[0])


_FNV_OFFSET, _FNV_PRIME = np.uint64(14695981039346656037), np.uint64(1099511628211)


def _row_hashes(x: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a of each row's 32-bit words, a block of rows at a time (the block stays in cache
    while its columns are folded in)."""
    out = np.empty(x.shape[0], np.uint64)
    for a in range(0, x.shape[0], BLOCK_ROWS):
        block = x[a:a + BLOCK_ROWS]
        h = np.full(len(block), _FNV_OFFSET)
        for j in range(x.shape[1]):
            h ^= block[:, j]
            h *= _FNV_PRIME
        out[a:a + BLOCK_ROWS] = h
    return out


def _groups_equal(x: np.ndarray, first: np.ndarray, inverse: np.ndarray) -> bool:
    """Whether every row equals the first row of its group, a block of rows at a time."""
    for a in range(0, x.shape[0], BLOCK_ROWS):
        if not np.array_equal(x[a:a + BLOCK_ROWS], x[first[inverse[a:a + BLOCK_ROWS]]]):
            return False
    return True


def _leaves_cpu(x, w, leaves, ks, iterations, seed_draws, t0):
    """Leaf after leaf: gather its rows once, draw its k-means++ seeds, run Lloyd (BLAS distances)."""
    offsets = np.concatenate([[0], np.cumsum(ks)])
    centroids = np.empty((int(offsets[-1]), x.shape[1]), np.float32)
    labels = np.empty(x.shape[0], np.int64)
    last = time.perf_counter()
    for i, (idx, kl) in enumerate(leaves):
        xl, wl = (x, w) if idx is None else (x[idx], w[idx])
        if kl >= len(xl):   # every point is its own centroid (extra ones repeat the last point)
            cent, lab = np.concatenate([xl, np.repeat(xl[-1:], kl - len(xl), axis=0)]), np.arange(len(xl))
        else:
            seeds = _kmeans_pp_leaf(np.asarray(xl, np.float32), wl, kl, seed_draws, i)
            cent, lab = _lloyd(np, xl, wl, seeds, iterations)
        centroids[offsets[i]:offsets[i + 1]] = cent
        labels[slice(None) if idx is None else idx] = lab + offsets[i]
        now = time.perf_counter()
        if now - last > LOG_EVERY_S:
            last = now
            log.info("k-means: %d/%d leaves (%.1f s)", i + 1, len(leaves), now - t0)
    return centroids, labels


def _leaves_gpu(cp, x, w, order, starts, ks, iterations, seed_draws, t0):
    """Seed every leaf, then Lloyd on all leaves at once: each point against its own leaf's centroids."""
    offsets = np.concatenate([[0], np.cumsum(ks)])
    order_d = cp.asarray(order)
    xs, ws = x[order_d], w[order_d]                 # the points leaf after leaf
    point_leaf = cp.asarray(np.repeat(np.arange(len(ks), dtype=np.int32), np.diff(starts)))
    cent_leaf = cp.asarray(np.repeat(np.arange(len(ks), dtype=np.int32), ks))
    xt = _columns(cp, xs)
    cent = _kmeans_pp_gpu(cp, None, ws, starts, ks, offsets, seed_draws, xt)
    log.info("k-means: k-means++ seeds drawn (%.2f s)", time.perf_counter() - t0)
    offsets_d, starts_d = cp.asarray(offsets), cp.asarray(starts)
    for _ in range(iterations):
        labels, dist = _assign_gpu(cp, xt, point_leaf, offsets_d, cent)
        cent = _means(cp, xs, ws, labels, dist, cent, (point_leaf, cent_leaf, starts_d))
    out = np.empty(len(order), np.int64)
    out[order] = cp.asnumpy(labels)
    return cp.asnumpy(cent), out


def allocate(counts: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` centroids over cells in proportion to ``counts``.

    Largest remainder (ties to the lower cell), then every non-empty cell gets at least one,
    taken back one at a time from the cells with the most (the lower cell first). Never more
    centroids than points in a cell, as long as ``k <= counts.sum()``.
    """
    counts = np.asarray(counts, np.int64)
    n = int(counts.sum())
    exact = counts * k
    alloc = exact // n
    remainder = exact - alloc * n
    short = k - int(alloc.sum())
    if short:
        alloc[np.lexsort((np.arange(len(counts)), -remainder))[:short]] += 1
    for c in np.flatnonzero((counts > 0) & (alloc == 0)):
        donor = int(np.argmax(alloc))
        alloc[donor] -= 1
        alloc[c] = 1
    return alloc


def _partition(xp, name, x, w, idx, k, iterations, key, leaves) -> None:
    """Append the leaves ``(point indices or None for all, centroids)`` covering ``idx``."""
    n = x.shape[0] if idx is None else len(idx)
    if k >= n or n * k <= FLAT_BUDGET[name]:
        leaves.append((idx, k))
        return
    cells = max(2, k // CELL_CENTROIDS[name])
    rng = np.random.default_rng(key)
    sample = np.sort(rng.choice(n, size=min(n, CELL_SAMPLE * cells), replace=False))
    pick = xp.asarray(sample if idx is None else idx[sample])
    xs, ws = x[pick], w[pick]
    init = kmeans_pp(xp, xs, ws, None, np.array([0, len(xs)]), np.array([cells]), int(rng.integers(1 << 62)))
    coarse, _ = _lloyd(xp, xs, ws, init, iterations)
    cell_of = _host(xp, _nearest(xp, x if idx is None else x[xp.asarray(idx)], coarse)[0])
    counts = np.bincount(cell_of, minlength=cells)
    if counts.max() == n:   # no split (e.g. all points equal): one leaf after all
        leaves.append((idx, k))
        return
    order = np.argsort(cell_of, kind="stable")
    if len(key) == 1:   # the top split: the first progress line of a long k-means
        log.info("k-means: %d points split into %d cells of about %d centroids each", n, cells, k // cells)
    starts = np.concatenate([[0], np.cumsum(counts)])
    alloc = allocate(counts, k)
    for c in np.flatnonzero(counts):
        members = order[starts[c]:starts[c + 1]]
        _partition(xp, name, x, w, members if idx is None else idx[members], int(alloc[c]), iterations,
                   key + (int(c),), leaves)


def _lloyd(xp, x, w, cent, iterations: int):
    """Lloyd's algorithm on the rows of ``x`` (weights ``w``) from the centroids ``cent``: (centroids, labels)."""
    for _ in range(iterations):
        labels, dist = _nearest(xp, x, cent)
        cent = _means(xp, x, w, labels, dist, cent)
    return cent, labels


def _nearest(xp, x, cent):
    """Index of the nearest centroid of each row (lowest index on ties) and its squared distance."""
    n = x.shape[0]
    if xp is not np:   # the assignment kernel with one leaf (no cuBLAS: its start-up costs more than this)
        return _assign_gpu(xp, _columns(xp, x), xp.zeros(n, xp.int32),
                           xp.asarray([0, cent.shape[0]], xp.int64), xp.ascontiguousarray(cent, dtype=xp.float32))
    labels = xp.empty(n, xp.int64)
    dist = xp.empty(n, xp.float32)
    with np.errstate(over="ignore", invalid="ignore"):   # absurd (finite) inputs overflow: garbage in, no noise
        _nearest_blocks(xp, x, cent, labels, dist)
    return labels, dist


def _nearest_blocks(xp, x, cent, labels, dist) -> None:
    n = x.shape[0]
    cc = (cent * cent).sum(axis=1)
    m2 = -2.0 * cent.T            # |x - c|² = |x|² - 2 x·c + |c|²; the -2 folded into the small side
    for s in range(0, n, BLOCK_ROWS):
        xb = x[s:s + BLOCK_ROWS]
        dm = xb @ m2
        dm += cc
        lab = dm.argmin(axis=1)
        labels[s:s + BLOCK_ROWS] = lab
        dist[s:s + BLOCK_ROWS] = dm[xp.arange(len(lab)), lab] + (xb * xb).sum(axis=1)


def _means(xp, x, w, labels, dist, cent, groups=None):
    """Each centroid moved to the weighted mean of its rows; empty ones onto the rows that cost most
    (weight × squared distance to their centroid).

    With ``groups = (point_group, centroid_group, group_starts)`` (rows sorted by group) an empty
    centroid takes a row of its own group, as if each group were clustered alone.
    """
    k = cent.shape[0]
    counts = xp.bincount(labels, minlength=k)
    order = _stable_argsort(xp, labels)
    ends = xp.cumsum(counts)
    if xp is np:
        # segment sums as differences of float64 running sums over the rows sorted by label (a fixed
        # order of additions, unlike scatter-adds; a leaf is small, so the differences keep precision)
        wo = w[order].astype(np.float64)
        csum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x[order] * wo[:, None], axis=0)])
        wsum = np.concatenate([np.zeros(1), np.cumsum(wo)])
        sums, wsums = csum[ends] - csum[ends - counts], wsum[ends] - wsum[ends - counts]
    else:   # one GPU thread per (centroid, column) adds its rows in sorted order, in float64
        sums, wsums = _segment_sums_gpu(xp, x, w, order, ends - counts, ends)
    new = (sums / xp.where(counts > 0, wsums, 1.0)[:, None]).astype(xp.float32)
    empty = counts == 0
    n_empty = int(empty.sum())
    if n_empty:
        far = _stable_argsort(xp, -(dist * w))         # costliest first
        if groups is None:
            take = far[:n_empty]
        else:
            point_group, cent_group, group_starts = groups
            far = far[_stable_argsort(xp, point_group[far])]     # by group, farthest first in each
            rank = xp.arange(len(far)) - group_starts[point_group[far]]
            wanted = xp.bincount(cent_group[empty], minlength=len(group_starts) - 1)
            take = far[rank < wanted[point_group[far]]]
        new[xp.flatnonzero(empty)] = x[take]
    return new


def _stable_argsort(xp, a):
    return np.argsort(a, kind="stable") if xp is np else a.argsort()   # CuPy's sort is stable


def _host(xp, a) -> np.ndarray:
    return a if xp is np else xp.asnumpy(a)


# --------------------------------------------------------------------------- k-means++ seeding

def kmeans_pp(xp, x, w, order, starts: np.ndarray, ks: np.ndarray, seed: int):
    """k-means++ seeds of every leaf: leaf ``i`` is the rows ``x[order[starts[i]:starts[i + 1]]]``
    (``order`` None: the rows are leaf after leaf already) and gets ``ks[i]`` seeds, each drawn with
    probability ∝ weight × squared distance to the nearest seed so far; returns them stacked leaf
    after leaf, (Σ ks, d) float32."""
    starts = np.asarray(starts, np.int64)
    ks = np.asarray(ks, np.int64)
    offsets = np.concatenate([[0], np.cumsum(ks)])
    if xp is np:
        out = np.empty((int(offsets[-1]), x.shape[1]), np.float32)
        for leaf in range(len(ks)):
            rows = slice(starts[leaf], starts[leaf + 1]) if order is None else order[starts[leaf]:starts[leaf + 1]]
            out[offsets[leaf]:offsets[leaf + 1]] = _kmeans_pp_leaf(np.asarray(x[rows], np.float32), w[rows],
                                                                   int(ks[leaf]), seed, leaf)
        return out
    if order is not None:
        x, w = x[xp.asarray(order)], w[xp.asarray(order)]
    return _kmeans_pp_gpu(xp, x, w, starts, ks, offsets, seed)


_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _uniform(seed: int, leaf: int, steps: np.ndarray) -> np.ndarray:
    """Uniform doubles in [0, 1), one per step, from (seed, leaf, step): splitmix64, as the GPU kernel
    computes it (uint64 arithmetic wraps, as C's)."""
    z = np.full(len(steps), np.uint64(seed) ^ (np.array([leaf], np.uint64) * _M1)[0], np.uint64)
    z ^= np.asarray(steps, np.uint64) * _M2
    z = (z ^ (z >> np.uint64(30))) * _M2
    z = (z ^ (z >> np.uint64(27))) * _M3
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _kmeans_pp_leaf(x: np.ndarray, w: np.ndarray, k: int, seed: int, leaf: int) -> np.ndarray:
    """k-means++ seeds (k, d) of one leaf's rows ``x`` (weights ``w``), on the CPU.

    Seed 0 is row ``floor(u_0·n)``; each next one is the first row whose running sum of
    weight × D² exceeds ``u_i`` times the total (D²: squared distance to the nearest seed so far,
    |x|² - 2x·c + |c|² in float64, a matrix-vector product per seed; a drawn row's own is set to 0,
    so it is never drawn again); with a zero total, row ``floor(u_i·n)``.
    """
    n, d = x.shape
    u = _uniform(seed, leaf, np.arange(k))
    out = np.empty((k, d), np.float32)
    x64 = x.astype(np.float64)
    xx = np.einsum("ij,ij->i", x64, x64)
    w64 = np.asarray(w, np.float64)
    dist = np.full(n, np.inf)
    chosen = min(n - 1, int(u[0] * n))
    for i in range(k):
        out[i] = x[chosen]
        if i + 1 == k:
            break
        c = x64[chosen]
        d2 = x64 @ (-2.0 * c)
        d2 += xx
        d2 += c @ c
        d2[chosen] = 0.0
        np.minimum(dist, d2, out=dist)
        run = np.cumsum(dist * w64)
        total = run[-1]
        pick = np.searchsorted(run, u[i + 1] * total, side="right") if total > 0.0 else u[i + 1] * n
        chosen = min(n - 1, int(pick))
    return out


_CUDA = r"""
__device__ double uniform01(unsigned long long seed, unsigned long long leaf, unsigned long long step) {
    unsigned long long z = seed ^ (leaf * 0x9E3779B97F4A7C15ull) ^ (step * 0xBF58476D1CE4E5B9ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

// One block per leaf: k-means++ over the leaf's rows s..s+n (weights w), seeds into out[off..off+k).
// The points are column-major, xt[j * N + r] (N rows in all), so that the threads of a warp, which
// own consecutive rows, read consecutive floats. Thread t owns rows t, t + T, t + 2T, ...; the
// draw walks the threads in order (warp by warp, lane by lane), then the chosen thread's rows.
extern "C" __global__ void kmeans_pp(const float* __restrict__ xt, const long long N, const float* __restrict__ w,
                                     const long long* __restrict__ starts,
                                     const long long* __restrict__ ks, const long long* __restrict__ offsets,
                                     float* __restrict__ dist, float* __restrict__ out,
                                     const unsigned long long seed) {
    constexpr int WARPS = THREADS / 32;
    __shared__ float c[D];
    __shared__ double warp_sum[WARPS];
    __shared__ long long chosen;
    __shared__ int pick_warp;
    __shared__ double pick_base, pick_target;
    const long long leaf = blockIdx.x, s = starts[leaf], n = starts[leaf + 1] - s, k = ks[leaf];
    const long long off = offsets[leaf];
    const int t0 = threadIdx.x, lane = t0 & 31, warp = t0 >> 5;
    for (long long p = t0; p < n; p += THREADS) dist[s + p] = __int_as_float(0x7f800000);  // +inf
    if (t0 == 0) chosen = min(n - 1, (long long)(uniform01(seed, leaf, 0) * n));
    __syncthreads();
    for (long long i = 0; i < k; ++i) {
        for (int j = t0; j < D; j += THREADS) {
            c[j] = xt[j * N + s + chosen];
            out[(off + i) * D + j] = c[j];
        }
        __syncthreads();
        if (i + 1 == k) break;
        double sum = 0.0;
        for (long long p = t0; p < n; p += THREADS) {
            float acc = 0.0f;
            #pragma unroll
            for (int j = 0; j < D; ++j) { const float diff = xt[j * N + s + p] - c[j]; acc += diff * diff; }
            const float dp = fminf(dist[s + p], acc);
            dist[s + p] = dp;
            sum += (double)dp * w[s + p];
        }
        double incl = sum;                                    // inclusive sum over the lanes of the warp
        for (int o = 1; o < 32; o <<= 1) {
            const double v = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += v;
        }
        if (lane == 31) warp_sum[warp] = incl;
        __syncthreads();
        const double u = uniform01(seed, leaf, i + 1);
        if (warp == 0) {                                      // which warp the draw falls in
            const double ws = lane < WARPS ? warp_sum[lane] : 0.0;
            double wincl = ws;
            for (int o = 1; o < 32; o <<= 1) {
                const double v = __shfl_up_sync(0xffffffffu, wincl, o);
                if (lane >= o) wincl += v;
            }
            const double total = __shfl_sync(0xffffffffu, wincl, 31);
            const double target = u * total;
            const unsigned over = __ballot_sync(0xffffffffu, lane < WARPS && wincl > target);
            const unsigned some = __ballot_sync(0xffffffffu, ws > 0.0);   // rounding: the last warp with weight
            const int fw = over ? __ffs(over) - 1 : (some ? 31 - __clz(some) : WARPS - 1);
            const double base = __shfl_sync(0xffffffffu, wincl - ws, fw);
            if (lane == 0) {
                pick_warp = total > 0.0 ? fw : -1;
                pick_base = base;
                pick_target = target;
                if (total <= 0.0) chosen = min(n - 1, (long long)(u * n));
            }
        }
        __syncthreads();
        if (warp == pick_warp) {                              // which lane, then which of its rows
            const double target = pick_target;
            const unsigned over = __ballot_sync(0xffffffffu, pick_base + incl > target);
            const unsigned some = __ballot_sync(0xffffffffu, sum > 0.0);
            const int fl = over ? __ffs(over) - 1 : (some ? 31 - __clz(some) : 31);
            if (lane == fl) {
                double acc = pick_base + (incl - sum);
                long long pick = n - 1;
                for (long long p = t0; p < n; p += THREADS) {
                    pick = p;
                    acc += (double)dist[s + p] * w[s + p];
                    if (acc > target) break;
                }
                chosen = pick;
            }
        }
        __syncthreads();
    }
}

// distinct_rows: each row's 64-bit FNV-1a hash over its float bits (the CPU's _row_hashes), then
// whether any row differs from the first row of its hash group (a collision).
extern "C" __global__ void row_hash(const unsigned* __restrict__ x, const long long n,
                                    unsigned long long* __restrict__ h) {
    const long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (p >= n) return;
    unsigned long long v = 14695981039346656037ull;
    for (int j = 0; j < D; ++j) v = (v ^ (unsigned long long)x[p * D + j]) * 1099511628211ull;
    h[p] = v;
}

extern "C" __global__ void rows_differ(const unsigned* __restrict__ x, const long long n,
                                       const long long* __restrict__ first, const long long* __restrict__ inverse,
                                       int* __restrict__ differ) {
    const long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (p >= n) return;
    const long long r = first[inverse[p]];
    for (int j = 0; j < D; ++j)
        if (x[p * D + j] != x[r * D + j]) { *differ = 1; return; }
}

// Weighted row sums of each centroid's rows x[order[a[c]..b[c])], column D being the weight sum; one
// thread per (centroid, column), adding in that order in double.
extern "C" __global__ void segment_sums(const float* __restrict__ x, const float* __restrict__ w,
                                        const long long* __restrict__ order, const long long* __restrict__ a,
                                        const long long* __restrict__ b, const long long k,
                                        double* __restrict__ sums, double* __restrict__ wsums) {
    const long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (t >= k * (D + 1)) return;
    const long long c = t / (D + 1);
    const int j = (int)(t % (D + 1));
    double acc = 0.0;
    for (long long p = a[c]; p < b[c]; ++p) {
        const long long r = order[p];
        acc += (double)w[r] * (j < D ? (double)x[r * D + j] : 1.0);
    }
    if (j < D) sums[c * D + j] = acc; else wsums[c] = acc;
}

// One thread per row: the nearest centroid among its leaf's (lowest index on ties) and the distance.
// Rows are read from the column-major copy (xt[j * n + p]: a warp reads consecutive floats).
extern "C" __global__ void assign(const float* __restrict__ xt, const long long n,
                                  const int* __restrict__ point_leaf, const long long* __restrict__ offsets,
                                  const float* __restrict__ cent, long long* __restrict__ labels,
                                  float* __restrict__ dist) {
    const long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (p >= n) return;
    float r[D];
    #pragma unroll
    for (int j = 0; j < D; ++j) r[j] = xt[j * n + p];
    const int leaf = point_leaf[p];
    long long best = offsets[leaf];
    float bd = __int_as_float(0x7f800000);
    for (long long c = offsets[leaf]; c < offsets[leaf + 1]; ++c) {
        const float* cc = cent + c * D;
        float acc = 0.0f;
        #pragma unroll
        for (int j = 0; j < D; ++j) { float diff = r[j] - cc[j]; acc += diff * diff; }
        if (acc < bd) { bd = acc; best = c; }
    }
    labels[p] = best;
    dist[p] = bd;
}
"""
_modules: dict[int, object] = {}


def _module(cp, d: int):
    """The CUDA kernels compiled for rows of ``d`` floats (loops unrolled), once per process."""
    if d not in _modules:
        _modules[d] = cp.RawModule(code=f"#define D {d}\n#define THREADS {SEED_THREADS}\n" + _CUDA)
    return _modules[d]


def _columns(cp, xs):
    """The rows of ``xs`` column-major (d, n): the kernels' threads own rows and read them coalesced."""
    return cp.ascontiguousarray(cp.asarray(xs, dtype=cp.float32).T)


def _kmeans_pp_gpu(cp, xs, ws, starts, ks, offsets, seed, xt=None):
    xt = _columns(cp, xs) if xt is None else xt
    ws = cp.ascontiguousarray(ws, dtype=cp.float32)
    out = cp.empty((int(offsets[-1]), xt.shape[0]), cp.float32)
    dist = cp.empty(xt.shape[1], cp.float32)
    kernel = _module(cp, xt.shape[0]).get_function("kmeans_pp")
    kernel((len(ks),), (SEED_THREADS,), (xt, np.int64(xt.shape[1]), ws, cp.asarray(starts), cp.asarray(ks),
                                         cp.asarray(offsets), dist, out, np.uint64(seed)))
    return out


def _segment_sums_gpu(cp, x, w, order, a, b):
    k, d = len(a), x.shape[1]
    sums = cp.empty((k, d), cp.float64)
    wsums = cp.empty(k, cp.float64)
    kernel = _module(cp, d).get_function("segment_sums")
    threads = k * (d + 1)
    kernel(((threads + 255) // 256,), (256,), (cp.ascontiguousarray(x), cp.ascontiguousarray(w), order,
                                               a, b, np.int64(k), sums, wsums))
    return sums, wsums


def _assign_gpu(cp, xt, point_leaf, offsets, cent):
    n = xt.shape[1]
    labels = cp.empty(n, cp.int64)
    dist = cp.empty(n, cp.float32)
    kernel = _module(cp, xt.shape[0]).get_function("assign")
    kernel(((n + 255) // 256,), (256,), (xt, np.int64(n), point_leaf, offsets, cent, labels, dist))
    return labels, dist


# ----------------------------------------------------------- 1-D codebooks (SOG's scales, colours, palette)

def quantize_1d(values: np.ndarray, k: int, alpha: float = 0.5):
    """A ``k``-entry codebook (ascending float32) for ``values`` and each value's nearest entry (uint8).

    splat-transform's quantiser: the sorted values go into ``min(1024, N)`` bins placed by a blend of
    rank and value (the blend leans to rank when outliers stretch the range), each bin weighs
    ``count^alpha``, and a dynamic programme splits the bins into at most ``k`` runs of least
    weighted squared error; each run's weighted mean is an entry, the last repeated to fill ``k``.
    A value's label is the entry whose midpoints with its neighbours enclose it.
    """
    data = np.asarray(values, np.float32).ravel()
    nval = len(data)
    srt = np.sort(data)               # float32: every step below widens one value at a time to float64
    vmin, vmax = float(srt[0]), float(srt[-1])
    vrange = vmax - vmin
    if vrange < 1e-20:
        return np.full(k, data[0], np.float32), np.zeros(nval, np.uint8)
    bins_n = min(1024, nval)
    iqr = float(srt[math.floor(nval * 0.75)]) - float(srt[math.floor(nval * 0.25)])
    beta = max(0.5, min(0.999, 1.0 - iqr / vrange))
    # bin = min(H - 1, floor(H·(β·i/N + (1 - β)·(v - min)/range))); per bin the count and the sum
    # of its values in order, in float64
    counts, sums = _bin_sums(srt, nval, beta, vmin, vrange, bins_n)
    del srt
    with np.errstate(invalid="ignore", divide="ignore"):
        centers = np.where(counts > 0, sums / counts, vmin + (np.arange(bins_n) + 0.5) / bins_n * vrange)
    weights = np.where(counts > 0, np.power(counts, alpha), 0.0)
    zero = np.zeros(1)
    pw = np.concatenate([zero, np.cumsum(weights)])
    pwx = np.concatenate([zero, np.cumsum(weights * centers)])
    pwxx = np.concatenate([zero, np.cumsum(weights * centers * centers)])
    eff_k = min(k, int(np.count_nonzero(counts)))
    entries = np.sort(_split_bins(pw, pwx, pwxx, centers, eff_k).astype(np.float32))
    codebook = np.empty(k, np.float32)
    codebook[:eff_k] = entries
    codebook[eff_k:] = entries[-1]
    mid = (codebook[:-1].astype(np.float64) + codebook[1:]) * 0.5
    labels = np.empty(nval, np.uint8)
    for a in range(0, nval, 1 << 20):   # in chunks: int64 indices of every value at once are big
        labels[a:a + (1 << 20)] = np.searchsorted(mid, data[a:a + (1 << 20)].astype(np.float64), side="right")
    return codebook, labels


def _bin_sums(srt: np.ndarray, nval: int, beta: float, vmin: float, vrange: float, bins_n: int,
              chunk: int = CHUNK_1D):
    """Count and float64 sum of the sorted values in each of quantize_1d's bins, the values added one
    after the other in order (``np.bincount`` adds in index order), a chunk at a time. A value's bin
    only grows along the sorted values, so a bin runs across a chunk boundary at most at the chunk's
    first bin: that bin's sum so far goes in front of the chunk, as the first term of its sum."""
    counts = np.zeros(bins_n, np.float64)
    sums = np.zeros(bins_n, np.float64)
    for a in range(0, nval, chunk):
        v = srt[a:a + chunk].astype(np.float64)
        pos = np.arange(a, a + len(v), dtype=np.float64) / nval   # each step as one float64 rounding
        pos *= beta
        uni = v - vmin
        uni /= vrange
        uni *= 1.0 - beta
        pos += uni
        pos *= bins_n
        b = np.minimum(np.floor(pos), bins_n - 1).astype(np.int64)
        lo, hi = int(b[0]), int(b[-1]) + 1
        counts += np.bincount(b, minlength=bins_n)
        part = np.bincount(np.concatenate([[lo], b]), weights=np.concatenate([[sums[lo]], v]), minlength=bins_n)
        sums[lo:hi] = part[lo:hi]
    return counts, sums


#: cost of no split in quantize_1d's dynamic programme (as the reference's)
_NO_SPLIT = 1e30


def _split_bins(pw: np.ndarray, pwx: np.ndarray, pwxx: np.ndarray, centers: np.ndarray, k: int,
                rows: int = DP_ROWS) -> np.ndarray:
    """Weighted means of the ``k`` runs of bins with least total weighted squared error.

    The dynamic programme over the bins: ``cost_m[j]``, the least error of bins 0..j in ``m`` runs,
    is the least over ``s`` of ``cost_{m-1}[s] + err(s+1..j)``; the first best ``s`` wins ties. The
    errors of every run are one matrix (bins × bins, from prefix sums); each ``m`` is a minimum over
    the rows of that matrix plus the previous costs, a block of rows at a time over the ``s < j`` part.
    """
    nb = len(centers)
    j = np.arange(nb)[:, None]
    a = np.minimum(np.arange(nb)[None, :] + 1, nb)     # run s+1..j, as column s of row j
    w = pw[j + 1] - pw[a]
    wx = pwx[j + 1] - pwx[a]
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(w <= 0, 0.0, (pwxx[j + 1] - pwxx[a]) - (wx * wx) / w)
        w0, wx0 = pw[1:] - pw[0], pwx[1:] - pwx[0]
        prev = np.where(w0 <= 0, 0.0, (pwxx[1:] - pwxx[0]) - (wx0 * wx0) / w0)   # one run: bins 0..j
    err[np.arange(nb)[None, :] >= j] = np.inf           # s >= j: no run
    del w, wx, a
    split = np.zeros((k + 1, nb), np.int64)
    cur = np.empty(nb)
    for m in range(2, k + 1):
        cur[:] = _NO_SPLIT
        split[m] = m - 2
        lo = m - 2
        for r0 in range(m - 1, nb, rows):
            r1 = min(nb, r0 + rows)
            t = err[r0:r1, lo:r1 - 1] + prev[lo:r1 - 1]
            best_s = t.argmin(axis=1)
            best = t[np.arange(r1 - r0), best_s]
            ok = best < _NO_SPLIT
            cur[r0:r1] = np.where(ok, best, _NO_SPLIT)
            split[m, r0:r1] = np.where(ok, best_s + lo, m - 2)
        prev, cur = cur, prev
    out = np.empty(k)
    jj = nb - 1
    for m in range(k, 0, -1):
        s = int(split[m, jj]) if m > 1 else -1
        wr = pw[jj + 1] - pw[s + 1]
        out[m - 1] = (centers[s + 1] + centers[jj]) * 0.5 if wr <= 0 else (pwx[jj + 1] - pwx[s + 1]) / wr
        jj = s
    return out
