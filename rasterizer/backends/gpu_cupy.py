"""The CuPy GPU backend: the stages of :mod:`rasterizer.stages` as CUDA kernels.

The kernels live in :mod:`rasterizer.backends.cuda`, one file per stage as in gsplat
(``project.cu``, ``bin.cu`` + ``sort.cu``, ``blend.cu``, with the shared ``reach.cuh``, ``sh.cuh``
and ``scan.cuh``), and are
compiled by CuPy (NVRTC) on first use with every constant of the rendering contract handed over
as a compile-time define generated from :mod:`rasterizer.stages` and :mod:`rasterizer.sh`
(:func:`rasterizer.backends.cuda.defines`); nothing of the contract is restated in CUDA. Same
stages, same gsplat-1.4.0 "classic" semantics (``rendering.md``), pinhole and orthographic cameras:

``project_and_color``  one thread per Gaussian: EWA projection in gsplat's order of operations,
               fused with the SH colour and the number of tiles the Gaussian can reach. This is
               the backend's stages 2 + 3 in one pass (``project`` and ``sh_colors`` alone also
               exist, for tests and other callers);
``bin_tiles``  one global depth sort of the Gaussians (32-bit keys), the running sums of their tile
               counts in that order, one (tile, Gaussian) pair per intersection written in depth
               order, then a stable radix sort on the tile id alone (only the bits the view's tile
               count needs: 2 passes up to 65536 tiles) and a tile-range kernel. Sorting by depth
               first, then stably by tile, gives exactly the order of gsplat's 64-bit
               ``tile << 32 | depth`` sort. The sorts and sums are our own (``sort.cu``: a
               "onesweep" radix sort, one kernel per 8-bit digit after one histogram kernel, int32
               values; the running sums in one pass; no thrust, no host sync but the one that
               sizes the pair buffers). Small views sort in one block
               each (bitonic sorts of index-unique keys in shared memory: the same order; sizes in
               :mod:`rasterizer.backends.cuda`);
``blend``      one 256-thread block per 16x16 tile, Gaussians staged through shared memory in
               batches of 256, the whole tile leaving as soon as every pixel is saturated
               (``__syncthreads_count``), ``__expf`` like gsplat. Each warp owns an 8x4 block
               of pixels and walks, in order, only the batch entries whose alpha >= 1/255
               ellipse reaches its pixels (a per-Gaussian warp mask made while staging, then a
               ballot).

Exact work skipping (the image is the one of gsplat's full lists, not an approximation): a
Gaussian is only listed in the tiles of gsplat's rectangle where some pixel centre can see
``alpha >= 1/255``, i.e. ``sigma <= ln(255 * opacity)`` (plus a safety margin); Gaussians with
``opacity < 1/255`` reach no pixel at all. In ``blend`` each warp (an 8x4 block of pixels) skips
the Gaussians whose ``alpha >= 1/255`` ellipse misses its pixels. Everything skipped is something
the per-pixel rule would have skipped anyway.

Chunks: when a view has more tile intersections than ``max_intersections()`` (default 2**24,
bounding memory; ``SPLATTER_GPU_MAX_ISECT`` overrides it, and it never exceeds 2**31 - 1, the
int32 index limit), the depth-ordered Gaussians are cut into runs under the limit, each binned
and blended on its own, front to back, carrying each pixel's colour, transmittance and "stopped"
flag from run to run. Each pixel then sees the same Gaussians in the same order as in one pass,
so the chunked image is bit-identical to the unchunked one.

CuPy caches the compiled kernels on disk (``~/.cupy/kernel_cache`` or ``$CUPY_CACHE_DIR``), keyed
on the source (headers inlined) and the defines: a second process does not compile again.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass, field

import cupy as cp
import numpy as np

from .. import stages
from ..camera import Camera
from ..imageio import U8_MAX
from ..stages import Gaussians, Projection, TileBins
from . import cuda, warm_up_view

log = logging.getLogger(__name__)
f32 = np.float32
BLOCK = stages.TILE * stages.TILE     # threads per block: blend runs one per pixel of a tile
INT32_LIMIT = 2**31 - 1
DEFAULT_MAX_ISECT = 2**24
BIG_BLOCKS_PER_SM = 8                 # blocks sharing out the Gaussians that reach many tiles
REC_FLOATS = 4 * cuda.REC             # a projection record: geo, con, rch, rgb (+ radius bits), float4 each

_modules: dict = {}
_functions: dict = {}


def _module(stem: str):
    mod = _modules.get(stem)
    if mod is None:
        t0 = time.perf_counter()
        mod = _modules[stem] = cp.RawModule(code=cuda.source(stem), options=("-std=c++17", *cuda.defines()),
                                            name_expressions=[k for k in cuda.KERNELS[stem] if "<" in k] or None)
        mod.compile()
        log.debug("gpu: %s.cu compiled or loaded from CuPy's cache (%.3f s)", stem, time.perf_counter() - t0)
    return mod


def _kernel(name: str):
    """A kernel by name, its module compiled on first use (CuPy caches the binary on disk)."""
    fn = _functions.get(name)
    if fn is None:
        stem = next(s for s, names in cuda.KERNELS.items() if name in names)
        fn = _functions[name] = _module(stem).get_function(name)
    return fn


def load_kernels() -> None:
    """Compile (or load from CuPy's disk cache) every kernel now rather than at the first frame."""
    for names in cuda.KERNELS.values():
        for name in names:
            _kernel(name)


def warm_up() -> None:
    """Load the kernels and render one tiny frame (at twice its size, resolved): the CUDA context, our
    modules and CuPy's own copy kernels come up now, not in the first real frame."""
    load_kernels()
    one, cam = warm_up_view()
    g = upload(one)
    p, colors = project_and_color(g, cam)
    rgb, alpha = blend(p, colors, g.opacities, bin_tiles(p, cam), cam, (0.0, 0.0, 0.0))
    rgb, alpha = downscale(rgb, alpha, 2)
    download(rgb, alpha)
    download8(rgb)


@functools.cache
def _sm_count() -> int:
    return int(cp.cuda.Device().attributes["MultiProcessorCount"])


def _grid(n: int) -> tuple[int]:
    return ((n + BLOCK - 1) // BLOCK,)


def max_intersections() -> int:
    """Tile intersections binned at once (``$SPLATTER_GPU_MAX_ISECT``, default 2**24, at most 2**31 - 1)."""
    raw = os.environ.get("SPLATTER_GPU_MAX_ISECT")
    limit = int(raw) if raw else DEFAULT_MAX_ISECT
    return max(1, min(limit, INT32_LIMIT))


# --------------------------------------------------------------------------- data

@dataclass
class GpuProjection(Projection):
    """:class:`Projection` plus the packed arrays the GPU kernels read.

    ``rec`` holds one 64-byte record per Gaussian, (n, REC_FLOATS) float32, which the binning and
    blending kernels gather by Gaussian id (two 32-byte sectors instead of five separate arrays):
    ``geo`` (x, y, and the half-widths of the box outside of which alpha < 1/255), ``con`` (a, b, c,
    opacity), ``rch`` (the constants of the Gaussian's tile reach) and ``rgb`` (its colour, then its
    radius as int32 bits) are column views into it; ``means2d`` and ``conics`` views into those; the
    colours :func:`project_and_color` returns are ``rgb[:, :3]``. ``counts`` is the number of tiles
    each Gaussian reaches (0: culled, or too faint to reach 1/255 anywhere) and ``depth_keys`` its
    depth bits (all ones when it reaches no tile), the key of the global depth sort. Rows with
    ``radii == 0`` hold no meaningful ``means2d``/``conics`` (the kernel skips writing them).
    """

    rec: object = None
    geo: object = None
    con: object = None
    rch: object = None
    rgb: object = None
    counts: object = None
    depth_keys: object = None


@dataclass
class GpuTileBins(TileBins):
    """:class:`TileBins` of one view. When the view needs several depth chunks, ``chunks`` holds
    the bins of each (front to back) and the base fields are those of the first."""

    chunks: list = field(default_factory=list)


# --------------------------------------------------------------------------- upload / download

def to_device(a: np.ndarray):
    """A host array on the GPU, copied straight from its (pageable) memory. ``cp.asarray`` would first
    copy it into pinned staging memory that it allocates, which costs more than the copy itself
    (0.32 s against 0.05 s for a 1M-Gaussian SH-3 scene)."""
    a = np.ascontiguousarray(a)
    out = cp.empty(a.shape, a.dtype)
    out.set(a)
    return out


def upload(scene) -> Gaussians:
    """The activated scene on the GPU. The SH coefficients are stored channel-major across Gaussians,
    (3 K, N) — coefficient k's channel c of every Gaussian in a row — so that the projection's
    threads, one per Gaussian, read consecutive floats; ``Gaussians.sh`` is the (N, K, 3) view of it."""
    g = stages.activate(scene)
    return Gaussians(to_device(g.means), to_device(g.quats), to_device(g.scales), to_device(g.opacities),
                     _sh_view(_channel_major(to_device(g.sh))), g.sh_degree)


def _channel_major(sh):
    """(N, K, 3) SH on the device as the (3 K, N) array :func:`upload` stores (no copy when ``sh`` is
    already a view of one)."""
    n, k = sh.shape[:2]
    return cp.ascontiguousarray(sh.reshape(n, 3 * k).T)


def _sh_view(channel_major):
    """The (N, K, 3) view of a (3 K, N) channel-major SH array."""
    rows, n = channel_major.shape
    return channel_major.T.reshape(n, rows // 3, 3)


def subset(g: Gaussians, index) -> Gaussians:
    """The Gaussians selected by a boolean mask or indices (host or device), gathered on the device,
    the SH kept channel-major: the arrays :func:`upload` makes of the same Gaussians."""
    index = cp.asarray(index)
    if index.dtype == bool:
        index = cp.flatnonzero(index)
    return Gaussians(g.means[index], g.quats[index], g.scales[index], g.opacities[index],
                     _sh_view(_channel_major(g.sh)[:, index]), g.sh_degree)


def _sh_layout(sh):
    """``(sh, row, step)`` for the kernels: Gaussian i's coefficient k, channel c at
    ``sh[i * row + (3 k + c) * step]`` (floats); copies ``sh`` when it is neither layout."""
    s_n, s_k, s_c = (v // 4 for v in sh.strides)
    k_apart = sh.shape[1] > 1 and s_k != 3 * s_c     # a single coefficient's stride is never used
    if sh.dtype != f32 or k_apart or min(sh.strides) < 0 or any(v % 4 for v in sh.strides):
        sh = cp.ascontiguousarray(sh, dtype=f32)
        s_n, s_c = 3 * sh.shape[1], 1
    return sh, np.int64(s_n), np.int64(s_c)


def download(rgb, alpha):
    return cp.asnumpy(rgb), cp.asnumpy(alpha)


def download8(rgb) -> np.ndarray:
    """8-bit RGB on the host (:func:`rasterizer.imageio.to_uint8`, the same bytes), converted before the
    download: a quarter of the bytes cross the bus."""
    x = cp.ascontiguousarray(rgb, f32)
    out = cp.empty(x.shape, np.uint8)
    n = x.size
    if n:
        _kernel("to_uint8_kernel")(((n + BLOCK - 1) // BLOCK,), (BLOCK,), (np.int64(n), f32(U8_MAX), x, out))
    return cp.asnumpy(out)


def downscale(rgb, alpha, k: int):
    """:func:`rasterizer.stages.downscale` on the device (the same sums in the same order)."""
    if k == 1:
        return rgb, alpha
    h, w = rgb.shape[0] // k, rgb.shape[1] // k
    rgb, alpha = cp.ascontiguousarray(rgb, f32), cp.ascontiguousarray(alpha, f32)
    out_rgb, out_alpha = cp.empty((h, w, 3), f32), cp.empty((h, w), f32)
    if h * w:
        _kernel("downscale_kernel")(_grid(h * w), (BLOCK,), (np.int32(w), np.int32(h), np.int32(rgb.shape[1]),
                                                           np.int32(k), f32(1.0 / (k * k)), rgb, alpha, out_rgb,
                                                           out_alpha))
    return out_rgb, out_alpha


# --------------------------------------------------------------------------- 2 + 3. project and colour

def project_and_color(g: Gaussians, camera: Camera) -> tuple[GpuProjection, object]:
    """Stages 2 and 3 in one kernel: the projection and the RGB of every Gaussian that reaches a
    pixel (0 for the others, which no pixel uses)."""
    n = len(g)
    tiles_x, tiles_y = stages.tile_grid(camera)
    rec = cp.empty((n, REC_FLOATS), f32)
    geo, con, rch, rgb = (rec[:, k:k + 4] for k in range(0, REC_FLOATS, 4))
    out = GpuProjection(geo[:, :2], con[:, :3], cp.empty(n, f32), cp.empty(n, np.int32), rec=rec, geo=geo, con=con,
                        rch=rch, rgb=rgb, counts=cp.empty(n, np.int32), depth_keys=cp.empty(n, np.uint32))
    colors = rgb[:, :3]
    if n:
        R = camera.world_to_camera[:3, :3]
        t = camera.world_to_camera[:3, 3]
        c = camera.center
        _kernel("project_kernel")(_grid(n), (BLOCK,), (
            np.int32(n), g.means, g.quats, g.scales, g.opacities, *_sh_layout(g.sh), np.int32(g.sh.shape[1]),
            np.int32(g.sh_degree), *[f32(v) for v in R.ravel()], *[f32(v) for v in t],
            f32(camera.fx), f32(camera.fy), f32(camera.cx), f32(camera.cy), np.int32(camera.is_ortho),
            *[f32(v) for v in c], np.int32(camera.width), np.int32(camera.height), np.int32(tiles_x),
            np.int32(tiles_y), rec, out.depths, out.radii, out.counts, out.depth_keys))
    return out, colors


def project(g: Gaussians, camera: Camera) -> GpuProjection:
    return project_and_color(g, camera)[0]


def sh_colors(g: Gaussians, camera: Camera):
    """RGB of every Gaussian seen from the camera centre (the SH kernel alone)."""
    n = len(g)
    out = cp.empty((n, 3), f32)
    if n:
        c = camera.center
        _kernel("sh_kernel")(_grid(n), (BLOCK,), (np.int32(n), np.int32(g.sh.shape[1]), np.int32(g.sh_degree),
                                                  g.means, *_sh_layout(g.sh), f32(c[0]), f32(c[1]), f32(c[2]),
                                                  out))
    return out


# --------------------------------------------------------------------------- 4. bin

def _duplicate(p: GpuProjection, order, ends, first: int, last: int, base: int, keys, gids, tiles_x: int,
               tiles_y: int, height: int) -> None:
    """Write the (tile, Gaussian) pairs of depth ranks [first, last) into ``keys``/``gids`` (their
    pairs start at ``base``): one thread per Gaussian, then the Gaussians that reach more than a few
    tiles spread over the whole GPU, one per block."""
    key = f"unsigned {'int' if keys.dtype == np.uint32 else 'short'}"
    big = cp.empty(last - first, np.int32)
    n_big = cp.zeros(1, np.int32)
    common = (order, ends, np.int64(base), p.rec, np.int32(tiles_x), np.int32(tiles_y), np.int32(height), keys,
              gids, big, n_big)
    _kernel(f"duplicate_kernel<{key}>")(_grid(last - first), (BLOCK,), (np.int32(first), np.int32(last), *common))
    blocks = min(last - first, BIG_BLOCKS_PER_SM * _sm_count())
    _kernel(f"duplicate_big_kernel<{key}>")((blocks,), (BLOCK,), common)


def _bins_for(p: GpuProjection, order, ends, first: int, last: int, base: int, m: int,
              tiles_x: int, tiles_y: int, height: int) -> TileBins:
    """Bin the Gaussians of depth ranks [first, last), whose ``m`` intersections start at ``base``."""
    n_tiles = tiles_x * tiles_y
    if m == 0:
        return TileBins(tiles_x, tiles_y, cp.empty(0, np.int32), cp.zeros(n_tiles + 1, np.int32))
    wide = n_tiles > 65536
    key = f"unsigned {'int' if wide else 'short'}"
    keys = cp.empty(m, np.uint32 if wide else np.uint16)
    gids = cp.empty(m, np.int32)
    _duplicate(p, order, ends, first, last, base, keys, gids, tiles_x, tiles_y, height)
    offsets = cp.empty(n_tiles + 1, np.int32)
    if m <= cuda.SMALL_PAIRS and n_tiles < cuda.SMALL_TILES:  # one block (bin.cu, "Small views")
        ids = cp.empty(m, np.int32)
        _kernel(f"small_tile_sort_kernel<{key}>")((1,), (cuda.SMALL_THREADS,), (
            np.int32(m), np.int32(n_tiles), keys, gids, ids, offsets))
        return TileBins(tiles_x, tiles_y, ids, offsets)
    keys, ids = radix_sort(keys, tile_key_bits(n_tiles), gids)      # stable by tile id
    _kernel(f"ranges_kernel<{key}>")(_grid(m), (BLOCK,), (np.int32(m), np.int32(n_tiles), keys, offsets))
    return TileBins(tiles_x, tiles_y, ids, offsets)


_KEY_TYPES = {np.dtype(np.uint16): "unsigned short", np.dtype(np.uint32): "unsigned int"}


def tile_key_bits(n_tiles: int) -> int:
    """The bits of tile id the tile sort orders by: only those the view's tiles need (2 radix passes up
    to 65536 tiles)."""
    return max(1, (n_tiles - 1).bit_length())


def radix_sort(keys, bits: int, values=None, keys_out: bool = True):
    """Stable sort of ``keys`` (uint16 or uint32) by their low ``bits`` bits, carrying int32 ``values``
    (``None``: the indices 0..n-1, i.e. an argsort). Returns ``(sorted keys or None, values)``; the inputs
    are left as they are. sort.cu: one histogram kernel, then one kernel per ``RADIX_BITS`` of ``bits``;
    no host sync. Sizes up to 2**31 - 1."""
    n = int(keys.size)
    passes = max(1, -(-bits // cuda.RADIX_BITS))
    kt = _KEY_TYPES[keys.dtype]
    if n <= 1:
        vals = cp.arange(n, dtype=np.int32) if values is None else values.astype(np.int32, copy=True)
        return (keys.copy() if keys_out else None), vals
    tiles = -(-n // cuda.SORT_TILE)
    work = cp.zeros(passes * (cuda.RADIX + tiles * cuda.RADIX + 1), np.uint32)   # laid out as radix_pass_kernel's
    _kernel(f"radix_histogram_kernel<{kt}>")((min(tiles, 4 * _sm_count()),), (cuda.SORT_THREADS,), (
        np.int32(n), keys, np.int32(passes), work))
    bufs = [(cp.empty(n, keys.dtype), cp.empty(n, np.int32)) for _ in range(min(passes, 2))]
    src_k, src_v = keys, values
    for q in range(passes):
        last = q == passes - 1
        first = q == 0 and values is None
        dst_k, dst_v = bufs[q % 2]
        write_keys = keys_out or not last
        _kernel(f"radix_pass_kernel<{kt}, {str(first).lower()}, {str(write_keys).lower()}>")(
            (tiles,), (cuda.SORT_THREADS,), (
                np.int32(n), np.int32(q), np.int32(passes), src_k, dst_v if first else src_v, dst_k, dst_v, work))
        src_k, src_v = dst_k, dst_v
    return (src_k if keys_out else None), src_v


def running_sums(order, counts):
    """``ends[r] = counts[order[0]] + ... + counts[order[r]]`` as int64 (sort.cu, one pass, no host sync)."""
    n = int(order.size)
    tiles = -(-n // cuda.SORT_TILE)
    ends = cp.empty(n, np.int64)
    if n:
        status = cp.zeros(tiles + 1, np.uint64)                      # look-back words, then the ticket
        _kernel("running_sums_kernel")((tiles,), (cuda.SORT_THREADS,), (np.int32(n), order, counts, ends, status))
    return ends


def bin_tiles(p: GpuProjection, camera: Camera) -> GpuTileBins:
    tiles_x, tiles_y = stages.tile_grid(camera)
    n = int(p.radii.shape[0])
    n_tiles = tiles_x * tiles_y
    if n == 0:
        empty = TileBins(tiles_x, tiles_y, cp.empty(0, np.int32), cp.zeros(n_tiles + 1, np.int32))
        return GpuTileBins(tiles_x, tiles_y, empty.gaussian_ids, empty.offsets, chunks=[empty])
    if n <= cuda.SMALL_DEPTH_N:                          # one block (bin.cu, "Small views")
        order, ends = cp.empty(n, np.int32), cp.empty(n, np.int64)
        _kernel("small_depth_order_kernel")((1,), (cuda.SMALL_THREADS,), (np.int32(n), p.depth_keys, p.counts, order,
                                                                     ends))
    else:
        order = radix_sort(p.depth_keys, 32, keys_out=False)[1]   # front to back; ties keep index order
        ends = running_sums(order, p.counts)        # int64: a view may hold more than 2**31 pairs
    total = int(ends[-1])                           # the one host sync: sizes the pair buffers
    limit = max_intersections()
    if total <= limit:
        chunks = [_bins_for(p, order, ends, 0, n, 0, total, tiles_x, tiles_y, camera.height)]
    else:
        # Too many pairs for one pass: cut the depth-ordered Gaussians into runs that fit.
        chunks, first, base = [], 0, 0
        while base < total:
            last = int(cp.searchsorted(ends, cp.asarray([base + limit], np.int64), side="right")[0])
            last = max(last, first + 1)             # one Gaussian alone may exceed a tiny limit
            end = int(ends[last - 1])
            chunks.append(_bins_for(p, order, ends, first, last, base, end - base, tiles_x, tiles_y,
                                    camera.height))
            first, base = last, end
        log.info("gpu: %d tile intersections exceed %d: binning and blending in %d depth chunks",
                 total, limit, len(chunks))
    return GpuTileBins(tiles_x, tiles_y, chunks[0].gaussian_ids, chunks[0].offsets, chunks=chunks)


# --------------------------------------------------------------------------- 5. blend

def blend(p: GpuProjection, colors, opacities, bins: TileBins, camera: Camera, background):
    """Front-to-back compositing of every depth chunk of ``bins``; (rgb, alpha) on the device."""
    W, H = camera.width, camera.height
    rgb = cp.empty((H, W, 3), f32)
    alpha = cp.empty((H, W), f32)
    chunks = getattr(bins, "chunks", None) or [bins]
    multi = len(chunks) > 1
    state_c = cp.empty((H, W, 3), f32) if multi else rgb
    state_t = cp.empty((H, W), f32) if multi else alpha
    state_done = cp.empty((H, W), np.uint8) if multi else cp.empty(1, np.uint8)
    colors = cp.asarray(colors, dtype=f32)
    if colors.strides[1] != 4 or colors.strides[0] % 4:   # rows of three floats, any (float) row stride
        colors = cp.ascontiguousarray(colors)
    opacities = cp.ascontiguousarray(opacities, dtype=f32)
    bg = [f32(v) for v in background]
    for k, b in enumerate(chunks):
        _kernel("blend_kernel")((b.tiles_x * b.tiles_y,), (BLOCK,), (
            b.offsets, b.gaussian_ids, p.rec, colors, np.int64(colors.strides[0] // 4), opacities, np.int32(W),
            np.int32(H),
            np.int32(b.tiles_x), np.int32(k == 0), np.int32(k == len(chunks) - 1), *bg, state_c, state_t,
            state_done, rgb, alpha))
    return rgb, alpha
