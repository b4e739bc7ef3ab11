"""Deterministic k-means for the SOG spherical-harmonics palette, on the CPU (NumPy + numba) or the GPU (CuPy).

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
   all leaves at once: a numba loop on the CPU, one CUDA block per leaf on the GPU. The draws come
   from a counter-based generator (splitmix64 of the seed, the leaf and the step).
3. **Lloyd** — per leaf, ``iterations`` rounds of assignment (nearest centroid by squared
   Euclidean distance, ties to the lower index) and update (each centroid moves to the mean of its
   points; an empty one moves onto the point farthest from its centroid). The labels returned are
   those of the last assignment; every centroid that has points is their mean.

A point is only compared with the centroids of its own leaf, which divides the work by the number
of leaves; k-means++ seeding more than makes up for the leaves' borders (it is what the reference
tool, plain Lloyd from random points, lacks). Leaves are larger on the GPU (more centroids each:
better, and fewer kernel launches) than on the CPU (:data:`CELL_CENTROIDS`).

Deterministic: the random choices come from the seed (NumPy generators seeded with it and the
cell's path, the counter-based draws), sums over points are taken in a fixed order in float64.
The same input on the same device gives the same palette on every run; the CPU and the GPU differ.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

log = logging.getLogger(__name__)

#: centroids per partition cell (the average k of a leaf) on each device
CELL_CENTROIDS = {"cpu": 128, "gpu": 1024}
#: sample points per centroid used to train a partition's cells
CELL_SAMPLE = 64
#: n·k up to which a set of points is one leaf on each device
FLAT_BUDGET = {"cpu": 1 << 22, "gpu": 1 << 26}
#: rows per distance block (bounds the n×k distance matrix held at once)
BLOCK_ROWS = 1 << 14
#: threads per leaf of the GPU seeding kernel
SEED_THREADS = 256
LOG_EVERY_S = 2.0


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


def kmeans(points: np.ndarray, k: int, iterations: int = 10, seed: int = 0,
           device: str = "auto") -> KMeansResult:
    """Cluster the rows of ``points`` (n, d) into ``k`` centroids (see the module docstring).

    ``points`` may be a strided view (rows need not be contiguous); on the CPU it is not copied whole.
    """
    t0 = time.perf_counter()
    xp, name = array_module(device)
    n, d = points.shape
    if k < 1 or iterations < 1:
        raise ValueError(f"k-means needs k >= 1 and iterations >= 1, got k={k}, iterations={iterations}")
    x = xp.asarray(points, dtype=xp.float32)
    leaves: list[tuple[np.ndarray | None, int]] = []
    _partition(xp, name, x, None, k, iterations, (seed,), leaves)
    log.info("k-means (%s): %d points x %d dims -> %d centroids in %d leaves, %d iterations (%.2f s)",
             name, n, d, k, len(leaves), iterations, time.perf_counter() - t0)

    order = np.concatenate([np.arange(n) if idx is None else idx for idx, _ in leaves])
    sizes = np.array([n if idx is None else len(idx) for idx, _ in leaves], np.int64)
    ks = np.array([kl for _, kl in leaves], np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    offsets = np.concatenate([[0], np.cumsum(ks)])
    seeds = _host(xp, kmeans_pp(xp, x, order, starts, ks, np.random.default_rng([seed, 1]).integers(1 << 62)))
    log.info("k-means: k-means++ seeds drawn (%.2f s)", time.perf_counter() - t0)

    centroids = np.empty((k, d), np.float32)
    labels = np.empty(n, np.int64)
    last = time.perf_counter()
    for i, (idx, kl) in enumerate(leaves):
        sel = slice(None) if idx is None else xp.asarray(idx)
        xl = x[sel]
        init = seeds[offsets[i]:offsets[i + 1]]
        if kl >= len(xl):   # every point is its own centroid (extra ones repeat the last point)
            cent, lab = _host(xp, xl), np.arange(len(xl))
            cent = np.concatenate([cent, np.repeat(cent[-1:], kl - len(xl), axis=0)])
        else:
            cent, lab = _lloyd(xp, xl, xp.asarray(init), iterations)
            cent, lab = _host(xp, cent), _host(xp, lab)
        centroids[offsets[i]:offsets[i + 1]] = cent
        labels[slice(None) if idx is None else idx] = lab + offsets[i]
        now = time.perf_counter()
        if now - last > LOG_EVERY_S:
            last = now
            log.info("k-means: %d/%d leaves (%.1f s)", i + 1, len(leaves), now - t0)
    seconds = time.perf_counter() - t0
    log.info("k-means (%s) done in %.2f s", name, seconds)
    return KMeansResult(centroids, labels.astype(np.uint32), len(leaves), name, seconds)


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


def _partition(xp, name, x, idx, k, iterations, key, leaves) -> None:
    """Append the leaves ``(point indices or None for all, centroids)`` covering ``idx``."""
    n = x.shape[0] if idx is None else len(idx)
    if k >= n or n * k <= FLAT_BUDGET[name]:
        leaves.append((idx, k))
        return
    cells = max(2, k // CELL_CENTROIDS[name])
    rng = np.random.default_rng(key)
    sample = np.sort(rng.choice(n, size=min(n, CELL_SAMPLE * cells), replace=False))
    xs = x[xp.asarray(sample if idx is None else idx[sample])]
    init = kmeans_pp(xp, xs, np.arange(len(xs)), np.array([0, len(xs)]), np.array([cells]),
                     rng.integers(1 << 62))
    coarse, _ = _lloyd(xp, xs, init, iterations)
    cell_of = _host(xp, _nearest(xp, x if idx is None else x[xp.asarray(idx)], coarse)[0])
    counts = np.bincount(cell_of, minlength=cells)
    if counts.max() == n:   # no split (e.g. all points equal): one leaf after all
        leaves.append((idx, k))
        return
    order = np.argsort(cell_of, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    alloc = allocate(counts, k)
    for c in np.flatnonzero(counts):
        members = order[starts[c]:starts[c + 1]]
        _partition(xp, name, x, members if idx is None else idx[members], int(alloc[c]), iterations,
                   key + (int(c),), leaves)


def _lloyd(xp, x, cent, iterations: int):
    """Lloyd's algorithm on the rows of ``x`` from the centroids ``cent``: (centroids, labels)."""
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
    order = _stable_argsort(xp, labels)
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
        far = _stable_argsort(xp, -dist)
        new[xp.flatnonzero(empty)] = x[far[:n_empty]]
    return new


def _stable_argsort(xp, a):
    return np.argsort(a, kind="stable") if xp is np else a.argsort()   # CuPy's sort is stable


def _host(xp, a) -> np.ndarray:
    return a if xp is np else xp.asnumpy(a)


# --------------------------------------------------------------------------- k-means++ seeding

def kmeans_pp(xp, x, order: np.ndarray, starts: np.ndarray, ks: np.ndarray, seed: int):
    """k-means++ seeds of every leaf: leaf ``i`` is the rows ``x[order[starts[i]:starts[i + 1]]]``
    and gets ``ks[i]`` seeds; returns them stacked leaf after leaf, (Σ ks, d) float32."""
    order = np.asarray(order, np.int64)
    starts = np.asarray(starts, np.int64)
    ks = np.asarray(ks, np.int64)
    offsets = np.concatenate([[0], np.cumsum(ks)])
    if xp is np:
        return _kmeans_pp_cpu(x, order, starts, ks, offsets, np.uint64(seed))
    return _kmeans_pp_gpu(xp, x, order, starts, ks, offsets, seed)


_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@njit(cache=True, nogil=True)
def _uniform(seed, leaf, step):  # pragma: no cover - compiled
    """A uniform double in [0, 1) from (seed, leaf, step): splitmix64, as the GPU kernel computes it."""
    z = seed ^ (np.uint64(leaf) * _M1) ^ (np.uint64(step) * _M2)
    z = (z ^ (z >> np.uint64(30))) * _M2
    z = (z ^ (z >> np.uint64(27))) * _M3
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, parallel=True, fastmath=True)
def _kmeans_pp_cpu(x, order, starts, ks, offsets, seed):  # pragma: no cover - compiled
    d = x.shape[1]
    out = np.empty((offsets[-1], d), np.float32)
    for leaf in prange(len(ks)):
        s, n, k, off = starts[leaf], starts[leaf + 1] - starts[leaf], ks[leaf], offsets[leaf]
        dist = np.full(n, np.inf, np.float32)
        chosen = min(n - 1, np.int64(_uniform(seed, leaf, 0) * n))
        for i in range(k):
            c = order[s + chosen]
            for j in range(d):
                out[off + i, j] = x[c, j]
            if i + 1 == k:
                break
            total = 0.0
            for p in range(n):
                r = order[s + p]
                acc = np.float32(0.0)
                for j in range(d):
                    diff = x[r, j] - out[off + i, j]
                    acc += diff * diff
                dist[p] = min(dist[p], acc)
                total += dist[p]
            u = _uniform(seed, leaf, i + 1)
            if total > 0.0:
                target = u * total
                acc64 = 0.0
                chosen = n - 1
                for p in range(n):
                    acc64 += dist[p]
                    if acc64 > target:
                        chosen = p
                        break
            else:
                chosen = min(n - 1, np.int64(u * n))
    return out


_KMEANS_PP_CUDA = r"""
__device__ double uniform01(unsigned long long seed, unsigned long long leaf, unsigned long long step) {
    unsigned long long z = seed ^ (leaf * 0x9E3779B97F4A7C15ull) ^ (step * 0xBF58476D1CE4E5B9ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

// One block per leaf: k-means++ over the leaf's points x[order[s..s+n)], seeds into out[off..off+k).
extern "C" __global__ void kmeans_pp(const float* __restrict__ x, const int d,
                                     const long long* __restrict__ order, const long long* __restrict__ starts,
                                     const long long* __restrict__ ks, const long long* __restrict__ offsets,
                                     float* __restrict__ dist, float* __restrict__ out,
                                     const unsigned long long seed) {
    __shared__ double part[SEED_THREADS];
    __shared__ long long chosen;
    const long long leaf = blockIdx.x, s = starts[leaf], n = starts[leaf + 1] - s, k = ks[leaf];
    const long long off = offsets[leaf], per = (n + blockDim.x - 1) / blockDim.x;
    const long long lo = min(n, per * threadIdx.x), hi = min(n, lo + per);
    for (long long p = lo; p < hi; ++p) dist[s + p] = __int_as_float(0x7f800000);  // +inf
    if (threadIdx.x == 0) chosen = min(n - 1, (long long)(uniform01(seed, leaf, 0) * n));
    __syncthreads();
    for (long long i = 0; i < k; ++i) {
        const float* c = x + order[s + chosen] * d;
        float* o = out + (off + i) * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) o[j] = c[j];
        if (i + 1 == k) break;
        double sum = 0.0;
        for (long long p = lo; p < hi; ++p) {
            const float* r = x + order[s + p] * d;
            float acc = 0.0f;
            for (int j = 0; j < d; ++j) { float diff = r[j] - c[j]; acc += diff * diff; }
            float dp = fminf(dist[s + p], acc);
            dist[s + p] = dp;
            sum += dp;
        }
        part[threadIdx.x] = sum;
        __syncthreads();
        if (threadIdx.x == 0) {
            double total = 0.0;
            for (int t = 0; t < blockDim.x; ++t) total += part[t];
            double u = uniform01(seed, leaf, i + 1);
            long long pick = min(n - 1, (long long)(u * n));
            if (total > 0.0) {
                double target = u * total, acc = 0.0;
                int t = 0;
                while (t + 1 < (int)blockDim.x && acc + part[t] <= target) acc += part[t++];
                long long a = min(n, per * t), b = min(n, a + per);
                pick = b - 1;
                for (long long p = a; p < b; ++p) {
                    acc += dist[s + p];
                    if (acc > target) { pick = p; break; }
                }
            }
            chosen = pick;
        }
        __syncthreads();
    }
}
"""
_kernel = None


def _kmeans_pp_gpu(cp, x, order, starts, ks, offsets, seed):
    global _kernel
    if _kernel is None:
        _kernel = cp.RawKernel(_KMEANS_PP_CUDA.replace("SEED_THREADS", str(SEED_THREADS)), "kmeans_pp")
    x = cp.ascontiguousarray(x, dtype=cp.float32)
    out = cp.empty((int(offsets[-1]), x.shape[1]), cp.float32)
    dist = cp.empty(len(order), cp.float32)
    args = (x, np.int32(x.shape[1]), cp.asarray(order), cp.asarray(starts), cp.asarray(ks),
            cp.asarray(offsets), dist, out, np.uint64(seed))
    _kernel((len(ks),), (SEED_THREADS,), args)
    return out
