"""The numba CPU backend: the stages of :mod:`rasterizer.stages` as parallel compiled loops.

Same stage names, arguments and results as the NumPy reference; the kernels are written
per Gaussian / per tile / per pixel in float32, in the order of operations of the
reference (and of gsplat 1.4.0). ``project`` and ``sh_colors`` run in parallel over
Gaussians, ``bin_tiles`` groups ids by tile with a counting pass and sorts the visible
Gaussians by depth once, ``blend`` runs in parallel over tiles with an early exit per pixel.
JIT results are cached on disk (``cache=True``), so only the first run on a machine pays; the
first ``upload`` of a process loads (or compiles) every kernel on a tiny scene and logs when that
is a compile, so that the wait is never silent.
"""
from __future__ import annotations

import logging
import math
import threading
import time

import numpy as np
from numba import njit, prange

from .. import stages
from ..camera import Camera
from ..sh import C0, C1, C2, C3
from ..stages import Gaussians, Projection, TileBins
from . import warm_up_view
from .numpy_ref import download8, downscale, subset  # noqa: F401  (the same on the host: the backend interface)

f32 = np.float32
_TILE = stages.TILE
_NEAR, _FAR = f32(stages.NEAR), f32(stages.FAR)
_EPS2D, _CLAMP = f32(stages.EPS2D), f32(stages.FRUSTUM_CLAMP)
_LAMBDA_MIN, _RADIUS_SIGMAS = f32(stages.LAMBDA_MIN), f32(stages.RADIUS_SIGMAS)
_ALPHA_MIN, _ALPHA_MAX, _T_MIN = f32(stages.ALPHA_MIN), f32(stages.ALPHA_MAX), f32(stages.T_MIN)
_C0, _C1 = f32(C0), f32(C1)                # the SH constants of rendering.md, from one place
_C2, _C3 = np.array(C2, np.float32), np.array(C3, np.float32)
_ZERO, _HALF, _ONE, _TWO, _THREE, _FOUR = f32(0), f32(0.5), f32(1), f32(2), f32(3), f32(4)
_LOG255 = f32(math.log(255.0))


def download(rgb, alpha):
    return rgb, alpha


# --------------------------------------------------------------------------- project

@njit(parallel=True, cache=True)
def _project(means, quats, scales, R, tv, fx, fy, cx, cy, W, H, ortho, means2d, conics, depths, radii):
    tan_fovx = _HALF * f32(W) / fx
    tan_fovy = _HALF * f32(H) / fy
    lim_x_pos = (f32(W) - cx) / fx + _CLAMP * tan_fovx
    lim_x_neg = cx / fx + _CLAMP * tan_fovx
    lim_y_pos = (f32(H) - cy) / fy + _CLAMP * tan_fovy
    lim_y_neg = cy / fy + _CLAMP * tan_fovy
    for i in prange(means.shape[0]):
        radii[i] = 0
        px, py, pz = means[i, 0], means[i, 1], means[i, 2]
        x = R[0, 0] * px + R[0, 1] * py + R[0, 2] * pz + tv[0]
        y = R[1, 0] * px + R[1, 1] * py + R[1, 2] * pz + tv[1]
        z = R[2, 0] * px + R[2, 1] * py + R[2, 2] * pz + tv[2]
        depths[i] = z
        if not (z >= _NEAR and z <= _FAR):
            continue
        # Σ = (R S)(R S)ᵀ from the unit quaternion and scales
        qw, qx, qy, qz = quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3]
        sx, sy, sz = scales[i, 0], scales[i, 1], scales[i, 2]
        m00 = (_ONE - _TWO * (qy * qy + qz * qz)) * sx
        m01 = (_TWO * (qx * qy - qw * qz)) * sy
        m02 = (_TWO * (qx * qz + qw * qy)) * sz
        m10 = (_TWO * (qx * qy + qw * qz)) * sx
        m11 = (_ONE - _TWO * (qx * qx + qz * qz)) * sy
        m12 = (_TWO * (qy * qz - qw * qx)) * sz
        m20 = (_TWO * (qx * qz - qw * qy)) * sx
        m21 = (_TWO * (qy * qz + qw * qx)) * sy
        m22 = (_ONE - _TWO * (qx * qx + qy * qy)) * sz
        s00 = m00 * m00 + m01 * m01 + m02 * m02
        s01 = m00 * m10 + m01 * m11 + m02 * m12
        s02 = m00 * m20 + m01 * m21 + m02 * m22
        s11 = m10 * m10 + m11 * m11 + m12 * m12
        s12 = m10 * m20 + m11 * m21 + m12 * m22
        s22 = m20 * m20 + m21 * m21 + m22 * m22
        # camera-space covariance Rv Σ Rvᵀ (A = Rv Σ, then A Rvᵀ)
        a00 = R[0, 0] * s00 + R[0, 1] * s01 + R[0, 2] * s02
        a01 = R[0, 0] * s01 + R[0, 1] * s11 + R[0, 2] * s12
        a02 = R[0, 0] * s02 + R[0, 1] * s12 + R[0, 2] * s22
        a10 = R[1, 0] * s00 + R[1, 1] * s01 + R[1, 2] * s02
        a11 = R[1, 0] * s01 + R[1, 1] * s11 + R[1, 2] * s12
        a12 = R[1, 0] * s02 + R[1, 1] * s12 + R[1, 2] * s22
        a20 = R[2, 0] * s00 + R[2, 1] * s01 + R[2, 2] * s02
        a21 = R[2, 0] * s01 + R[2, 1] * s11 + R[2, 2] * s12
        a22 = R[2, 0] * s02 + R[2, 1] * s12 + R[2, 2] * s22
        c00 = a00 * R[0, 0] + a01 * R[0, 1] + a02 * R[0, 2]
        c01 = a00 * R[1, 0] + a01 * R[1, 1] + a02 * R[1, 2]
        c02 = a00 * R[2, 0] + a01 * R[2, 1] + a02 * R[2, 2]
        c11 = a10 * R[1, 0] + a11 * R[1, 1] + a12 * R[1, 2]
        c12 = a10 * R[2, 0] + a11 * R[2, 1] + a12 * R[2, 2]
        c22 = a20 * R[2, 0] + a21 * R[2, 1] + a22 * R[2, 2]
        if ortho:
            # orthographic: constant Jacobian, fx and fy in pixels per world unit
            j00, j02, j11, j12 = fx, _ZERO, fy, _ZERO
            mx = fx * x + cx
            my = fy * y + cy
        else:
            # Jacobian at the position clamped to 1.3x the frustum
            rz = _ONE / z
            tx = z * min(lim_x_pos, max(-lim_x_neg, x * rz))
            ty = z * min(lim_y_pos, max(-lim_y_neg, y * rz))
            j00, j02 = fx * rz, -fx * tx * rz * rz
            j11, j12 = fy * rz, -fy * ty * rz * rz
            mx = fx * x * rz + cx                 # unclamped mean
            my = fy * y * rz + cy
        # Σ2D = J C Jᵀ with J = [[j00, 0, j02], [0, j11, j12]]
        a = j00 * (j00 * c00 + j02 * c02) + j02 * (j00 * c02 + j02 * c22) + _EPS2D
        b = j00 * (j11 * c01 + j12 * c02) + j02 * (j11 * c12 + j12 * c22)
        c = j11 * (j11 * c11 + j12 * c12) + j12 * (j11 * c12 + j12 * c22) + _EPS2D
        det = a * c - b * b
        if not det > _ZERO:
            continue
        inv_det = _ONE / det
        mid = _HALF * (a + c)
        lam = mid + math.sqrt(max(_LAMBDA_MIN, mid * mid - det))
        radius = math.ceil(_RADIUS_SIGMAS * math.sqrt(lam))
        if radius <= 0 or mx + radius <= 0 or mx - radius >= W or my + radius <= 0 or my - radius >= H:
            continue
        means2d[i, 0], means2d[i, 1] = mx, my
        conics[i, 0], conics[i, 1], conics[i, 2] = c * inv_det, -b * inv_det, a * inv_det
        radii[i] = np.int32(radius)


def project(g: Gaussians, camera: Camera) -> Projection:
    n = len(g)
    out = Projection(np.zeros((n, 2), f32), np.zeros((n, 3), f32), np.zeros(n, f32), np.zeros(n, np.int32))
    R = np.ascontiguousarray(camera.world_to_camera[:3, :3], f32)
    tv = np.ascontiguousarray(camera.world_to_camera[:3, 3], f32)
    _project(g.means, g.quats, g.scales, R, tv, f32(camera.fx), f32(camera.fy), f32(camera.cx),
             f32(camera.cy), camera.width, camera.height, camera.is_ortho, out.means2d, out.conics, out.depths,
             out.radii)
    return out


# --------------------------------------------------------------------------- colour

@njit(parallel=True, cache=True)
def _sh_colors(means, sh, degree, cam, out):
    for i in prange(means.shape[0]):
        x = means[i, 0] - cam[0]
        y = means[i, 1] - cam[1]
        z = means[i, 2] - cam[2]
        norm = math.sqrt(x * x + y * y + z * z)
        if norm > _ZERO:
            x, y, z = x / norm, y / norm, z / norm
        for ch in range(3):
            v = _C0 * sh[i, 0, ch]
            if degree >= 1:
                v += -_C1 * y * sh[i, 1, ch] + _C1 * z * sh[i, 2, ch] - _C1 * x * sh[i, 3, ch]
            if degree >= 2:
                xx, yy, zz = x * x, y * y, z * z
                v += (_C2[0] * (x * y) * sh[i, 4, ch] + _C2[1] * (y * z) * sh[i, 5, ch]
                      + _C2[2] * (_TWO * zz - xx - yy) * sh[i, 6, ch] + _C2[3] * (x * z) * sh[i, 7, ch]
                      + _C2[4] * (xx - yy) * sh[i, 8, ch])
                if degree >= 3:
                    v += (_C3[0] * y * (_THREE * xx - yy) * sh[i, 9, ch]
                          + _C3[1] * (x * y) * z * sh[i, 10, ch]
                          + _C3[2] * y * (_FOUR * zz - xx - yy) * sh[i, 11, ch]
                          + _C3[3] * z * (_TWO * zz - _THREE * xx - _THREE * yy) * sh[i, 12, ch]
                          + _C3[4] * x * (_FOUR * zz - xx - yy) * sh[i, 13, ch]
                          + _C3[5] * z * (xx - yy) * sh[i, 14, ch]
                          + _C3[6] * x * (xx - _THREE * yy) * sh[i, 15, ch])
            out[i, ch] = max(v + _HALF, _ZERO)


def sh_colors(g: Gaussians, camera: Camera) -> np.ndarray:
    out = np.empty((len(g), 3), f32)
    _sh_colors(g.means, g.sh, g.sh_degree, camera.center.astype(f32), out)
    return out


def project_and_color(g: Gaussians, camera: Camera) -> tuple[Projection, np.ndarray]:
    """Stages 2 and 3 for one camera, one after the other."""
    return project(g, camera), sh_colors(g, camera)


# --------------------------------------------------------------------------- bin

@njit(parallel=True, cache=True)
def _tile_rects(means2d, radii, tiles_x, tiles_y, rects, counts):
    for i in prange(radii.shape[0]):
        counts[i] = 0
        if radii[i] <= 0:
            continue
        r = f32(radii[i]) / f32(_TILE)
        tx, ty = means2d[i, 0] / f32(_TILE), means2d[i, 1] / f32(_TILE)
        x0 = min(max(0, math.floor(tx - r)), tiles_x)
        x1 = min(max(0, math.ceil(tx + r)), tiles_x)
        y0 = min(max(0, math.floor(ty - r)), tiles_y)
        y1 = min(max(0, math.ceil(ty + r)), tiles_y)
        rects[i, 0], rects[i, 1], rects[i, 2], rects[i, 3] = x0, x1, y0, y1
        counts[i] = (x1 - x0) * (y1 - y0)


@njit(parallel=True, cache=True)
def _group_by_tile(order, rects, n_tiles, tiles_x, n_chunks):
    """Counting sort of (Gaussian, tile) pairs by tile, keeping the order of ``order`` inside
    each tile (Gaussians by depth, then index: the stable sort of the contract).

    ``order`` is cut into ``n_chunks`` contiguous runs counted and scattered in parallel;
    chunk c writes after chunks < c inside every tile, so the result does not depend on the
    number of threads.
    """
    n = order.shape[0]
    size = (n + n_chunks - 1) // n_chunks
    hist = np.zeros((n_chunks, n_tiles), np.int64)
    for c in prange(n_chunks):
        for o in range(c * size, min(n, (c + 1) * size)):
            i = order[o]
            for ty in range(rects[i, 2], rects[i, 3]):
                for tx in range(rects[i, 0], rects[i, 1]):
                    hist[c, ty * tiles_x + tx] += 1
    offsets = np.zeros(n_tiles + 1, np.int64)
    for t in range(n_tiles):
        total = 0
        for c in range(n_chunks):
            total += hist[c, t]
        offsets[t + 1] = offsets[t] + total
    for t in prange(n_tiles):  # hist becomes each chunk's write cursor in each tile
        acc = offsets[t]
        for c in range(n_chunks):
            count = hist[c, t]
            hist[c, t] = acc
            acc += count
    ids = np.empty(offsets[n_tiles], np.int32)
    for c in prange(n_chunks):
        for o in range(c * size, min(n, (c + 1) * size)):
            i = order[o]
            for ty in range(rects[i, 2], rects[i, 3]):
                for tx in range(rects[i, 0], rects[i, 1]):
                    t = ty * tiles_x + tx
                    ids[hist[c, t]] = i
                    hist[c, t] += 1
    return ids, offsets


def bin_tiles(p: Projection, camera: Camera) -> TileBins:
    tiles_x, tiles_y = stages.tile_grid(camera)
    n = p.radii.shape[0]
    rects = np.zeros((n, 4), np.int64)
    counts = np.zeros(n, np.int64)
    _tile_rects(p.means2d, p.radii, tiles_x, tiles_y, rects, counts)
    # one stable depth sort of the visible Gaussians replaces a sort per tile
    visible = np.flatnonzero(counts > 0)
    order = visible[np.argsort(p.depths[visible], kind="stable")]
    ids, offsets = _group_by_tile(order, rects, tiles_x * tiles_y, tiles_x, 16)
    return TileBins(tiles_x, tiles_y, ids, offsets)


# --------------------------------------------------------------------------- blend

@njit(parallel=True, cache=True)
def _blend(means2d, conics, colors, opacities, ids, offsets, tiles_x, order, W, H, bg, rgb, T_out):
    for oi in prange(order.shape[0]):
        t = order[oi]
        s, e = offsets[t], offsets[t + 1]
        x0, y0 = (t % tiles_x) * _TILE, (t // tiles_x) * _TILE
        x1, y1 = min(x0 + _TILE, W), min(y0 + _TILE, H)
        # Gather this tile's Gaussians contiguously (the CPU's "shared memory"), with the box
        # around the ellipse sigma <= cut = log(255 o) (plus a rounding margin) outside of which
        # alpha < 1/255: pixels there would skip the Gaussian anyway, so the result is the
        # plain per-pixel loop's while the work shrinks to the pixels each Gaussian can reach.
        g = np.empty((e - s, 12), np.float32)
        n = 0
        for k in range(s, e):
            i = ids[k]
            op = opacities[i]
            if op * _ALPHA_MAX < _ALPHA_MIN * f32(0.999):
                continue                          # can never reach alpha 1/255
            a, b, c = conics[i, 0], conics[i, 1], conics[i, 2]
            # the ellipse sigma <= cut spans |dx| <= hx, |dy| <= hy; a conic that is not positive
            # definite in float32 gets no culling at all (infinite box and cut)
            cut = max(math.log(op) + _LOG255, _ZERO) * f32(1.001) + f32(1e-3)
            det = a * c - b * b
            hx, hy = f32(3e38), f32(3e38)
            if a > _ZERO and c > _ZERO and det > _ZERO:
                hx = math.sqrt(f32(2) * cut * c / det) * f32(1.001) + f32(1e-2)
                hy = math.sqrt(f32(2) * cut * a / det) * f32(1.001) + f32(1e-2)
            else:
                cut = f32(3e38)
            g[n, 0], g[n, 1], g[n, 2], g[n, 3], g[n, 4], g[n, 5] = means2d[i, 0], means2d[i, 1], a, b, c, op
            g[n, 6], g[n, 7], g[n, 8] = colors[i, 0], colors[i, 1], colors[i, 2]
            g[n, 9], g[n, 10], g[n, 11] = cut, hy, hx
            n += 1
        # Splat order: each Gaussian in turn visits the rows and pixels of the tile it can reach;
        # every pixel still sees the Gaussians front to back and keeps its own T, C and stop flag.
        nx, ny = x1 - x0, y1 - y0
        T = np.ones(_TILE * _TILE, np.float32)
        C = np.zeros((_TILE * _TILE, 3), np.float32)
        live = np.ones(_TILE * _TILE, np.bool_)
        row_live = np.full(_TILE, nx, np.int64)
        n_live = nx * ny
        for k in range(n):
            if n_live == 0:
                break
            gx, gy, ga, gb, gc, go, cut = g[k, 0], g[k, 1], g[k, 2], g[k, 3], g[k, 4], g[k, 5], g[k, 9]
            # the rows and columns of pixel centres inside the box around the ellipse sigma <= cut
            ry0 = max(y0, int(math.ceil(max(gy - g[k, 10] - _HALF, f32(y0 - 1)))))
            ry1 = min(y1, int(math.floor(min(gy + g[k, 10] - _HALF, f32(y1)))) + 1)
            rx0 = max(x0, int(math.ceil(max(gx - g[k, 11] - _HALF, f32(x0 - 1)))))
            rx1 = min(x1, int(math.floor(min(gx + g[k, 11] - _HALF, f32(x1)))) + 1)
            for py in range(ry0, ry1):
                if row_live[py - y0] == 0:
                    continue
                dy = gy - (f32(py) + _HALF)
                row = (py - y0) * _TILE - x0
                for px in range(rx0, rx1):
                    j = row + px
                    if not live[j]:
                        continue
                    dx = gx - (f32(px) + _HALF)
                    sigma = _HALF * (ga * dx * dx + gc * dy * dy) + gb * dx * dy
                    if sigma < _ZERO or sigma > cut:
                        continue
                    alpha = min(_ALPHA_MAX, go * math.exp(-sigma))
                    if alpha < _ALPHA_MIN:
                        continue
                    t = T[j]
                    next_T = t * (_ONE - alpha)
                    if next_T <= _T_MIN:
                        live[j] = False
                        row_live[py - y0] -= 1
                        n_live -= 1
                        continue
                    w = alpha * t
                    C[j, 0] += g[k, 6] * w
                    C[j, 1] += g[k, 7] * w
                    C[j, 2] += g[k, 8] * w
                    T[j] = next_T
        for py in range(y0, y1):
            for px in range(x0, x1):
                j = (py - y0) * _TILE + (px - x0)
                rgb[py, px, 0] = min(max(C[j, 0] + T[j] * bg[0], _ZERO), _ONE)
                rgb[py, px, 1] = min(max(C[j, 1] + T[j] * bg[1], _ZERO), _ONE)
                rgb[py, px, 2] = min(max(C[j, 2] + T[j] * bg[2], _ZERO), _ONE)
                T_out[py, px] = T[j]


def blend(p: Projection, colors, opacities, bins: TileBins, camera: Camera, background):
    W, H = camera.width, camera.height
    bg = np.asarray(background, f32)
    rgb = np.empty((H, W, 3), f32)
    rgb[:] = np.clip(bg, 0, 1)
    T = np.ones((H, W), f32)
    busy = np.flatnonzero(np.diff(bins.offsets)).astype(np.int64)
    # interleave tiles so that each thread's static share mixes dense and empty regions
    order = busy[np.random.default_rng(0).permutation(busy.size)] if busy.size else busy
    _blend(p.means2d, p.conics, colors, opacities, bins.gaussian_ids, bins.offsets, bins.tiles_x, order,
           W, H, bg, rgb, T)
    return rgb, (_ONE - T)


# --------------------------------------------------------------------------- first use

log = logging.getLogger(__name__)
_KERNELS = (_project, _sh_colors, _tile_rects, _group_by_tile, _blend)
#: a compile that is still running after this long is announced
_ANNOUNCE_AFTER_S = 1.0


def upload(scene) -> Gaussians:
    _load_kernels()
    return stages.activate(scene)


def warm_up() -> None:
    """Load (or compile) the kernels now rather than at the first upload."""
    _load_kernels()


def _load_kernels() -> None:
    """Load every kernel from numba's cache or compile it (about 20 s once after an install or an
    update), by rendering one Gaussian; a compile is announced before and reported after."""
    if all(k.signatures for k in _KERNELS):
        return
    t0 = time.perf_counter()
    announce = threading.Timer(_ANNOUNCE_AFTER_S, log.info, ("cpu backend: compiling the numba kernels, once "
                                                             "after an install or an update (about 20 s) ...",))
    announce.daemon = True
    announce.start()
    try:
        one, cam = warm_up_view()
        g = stages.activate(one)
        p = project(g, cam)
        blend(p, sh_colors(g, cam), g.opacities, bin_tiles(p, cam), cam, (0.0, 0.0, 0.0))
    finally:
        announce.cancel()
    compiled = sum(sum(k.stats.cache_misses.values()) for k in _KERNELS)
    if compiled:
        log.info("cpu backend: %d numba kernels compiled in %.1f s and cached for the next runs", compiled,
                 time.perf_counter() - t0)
    else:
        log.debug("cpu backend: numba kernels loaded from the cache in %.2f s", time.perf_counter() - t0)
