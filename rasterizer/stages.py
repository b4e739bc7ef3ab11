"""The render stages, in NumPy: the executable form of ``rendering.md``.

Every backend renders through the same five named stages, composed by
:func:`rasterizer.render.render`:

1. :func:`activate`     raw scene values → render-ready Gaussians (once per scene);
2. :func:`project`      3D Gaussian → 2D mean, conic, depth, pixel radius (or culled);
3. :func:`sh_colors`    SH coefficients + view direction → RGB;
4. :func:`bin_tiles`    duplicate one key per (tile, Gaussian), stable sort, tile ranges;
5. :func:`blend`        per pixel, front-to-back alpha compositing over its tile's list.

This module is the reference: plain, vectorised and float32 like gsplat 1.4.0's CUDA code.
The numba and CuPy backends implement the same stage functions with the same names and
arguments and are tested against these.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from .camera import Camera
from .sh import sh_basis

log = logging.getLogger(__name__)
f32 = np.float32
# The constants of rendering.md, defined here once. The numba backend imports them and the CUDA
# kernels receive them as compile-time defines (``rasterizer.backends.cuda.defines``).
TILE = 16                         # tile side in pixels
NEAR, FAR = 0.01, 1e10            # camera-space z outside [NEAR, FAR] is culled
FRUSTUM_CLAMP = 0.3               # the perspective Jacobian's position is clamped to (1 + this) x the frustum
EPS2D = 0.3                       # low-pass added to the 2D covariance ("classic": opacity unchanged)
LAMBDA_MIN = 0.01                 # floor of b^2 - det under the square root of the larger eigenvalue
RADIUS_SIGMAS = 3.0               # pixel radius = ceil(RADIUS_SIGMAS * sqrt(larger eigenvalue))
ALPHA_MIN = 1.0 / 255.0           # weaker contributions are skipped
ALPHA_MAX = 0.999
T_MIN = 1e-4                      # a pixel stops before the Gaussian that would take T to or below this


@dataclass
class Gaussians:
    """Activated Gaussians: what every stage consumes (arrays may live on a GPU)."""

    means: np.ndarray      # (N, 3) float32
    quats: np.ndarray      # (N, 4) float32 unit w, x, y, z
    scales: np.ndarray     # (N, 3) float32 exp(log scale)
    opacities: np.ndarray  # (N,)   float32 sigmoid(logit)
    sh: np.ndarray         # (N, K, 3) float32
    sh_degree: int

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def subset(self, index) -> Gaussians:
        """The Gaussians selected by a boolean mask or indices (host arrays)."""
        return Gaussians(self.means[index], self.quats[index], self.scales[index], self.opacities[index],
                         self.sh[index], self.sh_degree)


@dataclass
class Projection:
    """Per-Gaussian screen-space footprint. ``radii == 0`` marks a culled Gaussian."""

    means2d: np.ndarray    # (N, 2) float32 pixel coordinates
    conics: np.ndarray     # (N, 3) float32 inverse 2D covariance (a, b, c)
    depths: np.ndarray     # (N,)   float32 camera-space z
    radii: np.ndarray      # (N,)   int32


@dataclass
class TileBins:
    """Gaussian ids grouped by tile, front to back; tile ``t`` owns ``ids[offsets[t]:offsets[t+1]]``."""

    tiles_x: int
    tiles_y: int
    gaussian_ids: np.ndarray  # (M,) int32
    offsets: np.ndarray       # (tiles_x * tiles_y + 1,) int64


def tile_grid(camera: Camera) -> tuple[int, int]:
    return (camera.width + TILE - 1) // TILE, (camera.height + TILE - 1) // TILE


# --------------------------------------------------------------------------- 1. activate

def activate(scene) -> Gaussians:
    """exp scales, sigmoid opacities, unit quaternions; float32 like nerfstudio's tensors."""
    q = scene.quats.astype(f32)
    q = q / np.sqrt(np.einsum("ij,ij->i", q, q))[:, None]
    with np.errstate(over="ignore"):   # log-scale > 88.7 or logit < -88.7: inf scale, opacity 0, as torch
        scales = np.exp(scene.scales.astype(f32))
        opac = (f32(1) / (f32(1) + np.exp(-scene.opacities.astype(f32)))).astype(f32)
    return Gaussians(np.ascontiguousarray(scene.means, f32), q.astype(f32), scales.astype(f32), opac,
                     np.ascontiguousarray(scene.sh, f32), scene.sh_degree)


# --------------------------------------------------------------------------- 2. project

def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """(N, 4) unit w, x, y, z → (N, 3, 3) rotation matrices."""
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    one, two = f32(1), f32(2)
    return np.stack([
        np.stack([one - two * (y * y + z * z), two * (x * y - w * z), two * (x * z + w * y)], -1),
        np.stack([two * (x * y + w * z), one - two * (x * x + z * z), two * (y * z - w * x)], -1),
        np.stack([two * (x * z - w * y), two * (y * z + w * x), one - two * (x * x + y * y)], -1),
    ], axis=1)


def project(g: Gaussians, camera: Camera) -> Projection:
    """EWA splatting of each Gaussian into ``camera`` (rendering.md, "Projection").

    Pinhole cameras use the perspective Jacobian at a position clamped to 1.3x the frustum;
    orthographic ones (gsplat's ``camera_model="ortho"``) the constant ``[[fx, 0, 0], [0, fy, 0]]``
    and the mean ``(fx x + cx, fy y + cy)``. Near/far culling, low-pass and radius are shared.
    """
    W, H = camera.width, camera.height
    fx, fy, cx, cy = f32(camera.fx), f32(camera.fy), f32(camera.cx), f32(camera.cy)
    Rv = camera.world_to_camera[:3, :3].astype(f32)
    tv = camera.world_to_camera[:3, 3].astype(f32)

    t = g.means @ Rv.T + tv                                       # camera-space centres
    x, y, z = t[:, 0], t[:, 1], t[:, 2]
    in_depth = (z >= f32(NEAR)) & (z <= f32(FAR))
    z = np.where(in_depth, z, f32(1))                             # keep culled rows finite

    M = quat_to_rotmat(g.quats) * g.scales[:, None, :]            # R S
    cov_world = M @ M.transpose(0, 2, 1)                          # Σ = R S Sᵀ Rᵀ
    cov_cam = Rv @ cov_world @ Rv.T

    zero = np.zeros_like(z)
    if camera.is_ortho:
        # Orthographic: fx, fy are pixels per world unit and the Jacobian is constant.
        J = np.broadcast_to(np.array([[fx, 0, 0], [0, fy, 0]], f32), (len(z), 2, 3))
        mx, my = fx * x + cx, fy * y + cy
    else:
        # Jacobian of the perspective map at a position clamped to 1.3x the frustum.
        tan_fovx, tan_fovy = f32(0.5) * f32(W) / fx, f32(0.5) * f32(H) / fy
        clamp = f32(FRUSTUM_CLAMP)
        lim_x_pos, lim_x_neg = (f32(W) - cx) / fx + clamp * tan_fovx, cx / fx + clamp * tan_fovx
        lim_y_pos, lim_y_neg = (f32(H) - cy) / fy + clamp * tan_fovy, cy / fy + clamp * tan_fovy
        rz = f32(1) / z
        tx = z * np.clip(x * rz, -lim_x_neg, lim_x_pos)
        ty = z * np.clip(y * rz, -lim_y_neg, lim_y_pos)
        J = np.stack([np.stack([fx * rz, zero, -fx * tx * rz * rz], -1),
                      np.stack([zero, fy * rz, -fy * ty * rz * rz], -1)], axis=1)   # (N, 2, 3)
        mx, my = fx * x * rz + cx, fy * y * rz + cy                  # unclamped mean
    cov2d = J @ cov_cam @ J.transpose(0, 2, 1)

    a = cov2d[:, 0, 0] + f32(EPS2D)                                # low-pass filter
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + f32(EPS2D)
    det = a * c - b * b
    ok = in_depth & (det > 0)
    inv_det = f32(1) / np.where(ok, det, f32(1))
    conics = np.stack([c * inv_det, -b * inv_det, a * inv_det], -1)

    mid = f32(0.5) * (a + c)
    lam = mid + np.sqrt(np.maximum(f32(LAMBDA_MIN), mid * mid - det))
    radius = np.ceil(f32(RADIUS_SIGMAS) * np.sqrt(lam))
    ok &= radius > 0
    ok &= (mx + radius > 0) & (mx - radius < W) & (my + radius > 0) & (my - radius < H)
    radii = np.where(ok, radius, 0).astype(np.int32)
    return Projection(np.stack([mx, my], -1).astype(f32), conics.astype(f32), t[:, 2].astype(f32), radii)


# --------------------------------------------------------------------------- 3. colour

def sh_colors(g: Gaussians, camera: Camera) -> np.ndarray:
    """RGB per Gaussian seen from the camera centre: ``max(SH(dir) + 0.5, 0)``."""
    dirs = g.means - camera.center.astype(f32)
    norm = np.sqrt(np.einsum("ij,ij->i", dirs, dirs))
    dirs = dirs / np.where(norm > 0, norm, f32(1))[:, None]
    basis = sh_basis(dirs, g.sh_degree)                            # (N, K)
    rgb = np.einsum("nk,nkc->nc", basis, g.sh[:, : basis.shape[1]])
    return np.maximum(rgb + f32(0.5), f32(0)).astype(f32)


# --------------------------------------------------------------------------- 4. bin

def tile_rects(p: Projection, tiles_x: int, tiles_y: int):
    """Inclusive-exclusive tile rectangle ``[x0, x1) x [y0, y1)`` of each Gaussian's square."""
    r = p.radii.astype(f32) / f32(TILE)
    tx, ty = p.means2d[:, 0] / f32(TILE), p.means2d[:, 1] / f32(TILE)
    x0 = np.clip(np.floor(tx - r), 0, tiles_x).astype(np.int64)
    x1 = np.clip(np.ceil(tx + r), 0, tiles_x).astype(np.int64)
    y0 = np.clip(np.floor(ty - r), 0, tiles_y).astype(np.int64)
    y1 = np.clip(np.ceil(ty + r), 0, tiles_y).astype(np.int64)
    visible = p.radii > 0
    return x0, x1, y0, y1, np.where(visible, (x1 - x0) * (y1 - y0), 0)


def duplicate_keys(p: Projection, tiles_x: int, tiles_y: int):
    """One 64-bit key ``tile << 32 | float-bits(depth)`` per (Gaussian, touched tile)."""
    x0, x1, y0, _y1, counts = tile_rects(p, tiles_x, tiles_y)
    gid = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(gid.size, dtype=np.int64) - start               # index inside the rectangle
    width = (x1 - x0)[gid]
    tile = (y0[gid] + k // width) * tiles_x + (x0[gid] + k % width)
    depth_bits = p.depths.view(np.uint32)[gid].astype(np.uint64)   # positive floats sort as uints
    keys = (tile.astype(np.uint64) << np.uint64(32)) | depth_bits
    return keys, gid.astype(np.int32)


def sort_keys(keys: np.ndarray, gid: np.ndarray):
    """Stable sort: by tile, then depth, then Gaussian index (generation order)."""
    order = np.argsort(keys, kind="stable")
    return keys[order], gid[order]


def tile_ranges(sorted_keys: np.ndarray, n_tiles: int) -> np.ndarray:
    """Offsets of each tile's run in the sorted keys (length ``n_tiles + 1``)."""
    tiles = (sorted_keys >> np.uint64(32)).astype(np.int64)
    return np.searchsorted(tiles, np.arange(n_tiles + 1), side="left").astype(np.int64)


def bin_tiles(p: Projection, camera: Camera) -> TileBins:
    tiles_x, tiles_y = tile_grid(camera)
    keys, gid = duplicate_keys(p, tiles_x, tiles_y)
    keys, gid = sort_keys(keys, gid)
    return TileBins(tiles_x, tiles_y, gid, tile_ranges(keys, tiles_x * tiles_y))


# --------------------------------------------------------------------------- 5. blend

def blend(p: Projection, colors: np.ndarray, opacities: np.ndarray, bins: TileBins, camera: Camera,
          background, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Front-to-back compositing per pixel → (rgb (H, W, 3) clamped to [0, 1], alpha (H, W))."""
    W, H = camera.width, camera.height
    bg = np.asarray(background, f32)
    rgb = np.zeros((H, W, 3), f32)
    T_img = np.ones((H, W), f32)
    busy = np.flatnonzero(np.diff(bins.offsets))
    t_start = t_last = time.perf_counter()
    for done, tile in enumerate(busy):
        if time.perf_counter() - t_last > 2.0:                      # progress for slow renders
            t_last = time.perf_counter()
            log.info("numpy blend: %d/%d tiles (%.0f s)", done, busy.size, t_last - t_start)
        ys, xs, px, py = tile_pixels(int(tile), bins.tiles_x, W, H)
        ids = bins.gaussian_ids[bins.offsets[tile]:bins.offsets[tile + 1]]
        C, T, _ = blend_pixels(p, colors, opacities, ids, px, py, np.ones(px.size, f32),
                               np.zeros((px.size, 3), f32), batch)
        shape = (ys.stop - ys.start, xs.stop - xs.start)
        rgb[ys, xs] = C.reshape(*shape, 3)
        T_img[ys, xs] = T.reshape(shape)
    out = np.clip(rgb + T_img[..., None] * bg, f32(0), f32(1))
    return out.astype(f32), (f32(1) - T_img).astype(f32)


def tile_pixels(tile: int, tiles_x: int, W: int, H: int):
    """The image rows and columns of ``tile`` (slices, clipped to the image) and its pixel centres
    (px, py), row by row."""
    ty, tx = divmod(tile, tiles_x)
    ys, xs = slice(ty * TILE, min(ty * TILE + TILE, H)), slice(tx * TILE, min(tx * TILE + TILE, W))
    py, px = np.mgrid[ys, xs].astype(f32) + f32(0.5)
    return ys, xs, px.ravel(), py.ravel()


def blend_pixels(p: Projection, colors: np.ndarray, opacities: np.ndarray, ids: np.ndarray, px: np.ndarray,
                 py: np.ndarray, T: np.ndarray, C: np.ndarray, batch: int = 256):
    """The Gaussians ``ids``, in order, composited onto the pixel centres (px, py) that start with
    transmittance ``T`` and colour ``C``: ``(C, T, stopped)``, stopped where a Gaussian would have
    taken T to T_MIN or below (it and the rest are skipped)."""
    T, C = T.copy(), C.copy()
    stopped_any = np.zeros(px.size, bool)
    live = np.arange(px.size)                                       # pixels still accumulating
    for s in range(0, ids.size, batch):
        g = ids[s:s + batch]
        dx = p.means2d[g, 0][None, :] - px[live, None]              # d = mean - pixel centre
        dy = p.means2d[g, 1][None, :] - py[live, None]
        ca, cb, cc = p.conics[g, 0], p.conics[g, 1], p.conics[g, 2]
        sigma = f32(0.5) * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
        alpha = np.minimum(f32(ALPHA_MAX), opacities[g] * np.exp(-sigma))
        used = (sigma >= 0) & (alpha >= f32(ALPHA_MIN))
        alpha = np.where(used, alpha, f32(0))
        # T before and after each Gaussian, multiplied in order like the sequential loop
        Ts = np.cumprod(np.concatenate([T[live, None], f32(1) - alpha], axis=1), axis=1)
        stops = used & (Ts[:, 1:] <= f32(T_MIN))
        stopped = stops.any(axis=1)
        first = np.where(stopped, stops.argmax(axis=1), g.size)
        applied = np.arange(g.size)[None, :] < first[:, None]
        weight = np.where(applied, alpha * Ts[:, :-1], f32(0))
        C[live] += weight @ colors[g]
        T[live] = Ts[np.arange(live.size), first]                   # T before the stopping Gaussian
        stopped_any[live[stopped]] = True
        live = live[~stopped]
        if live.size == 0:
            break
    return C, T, stopped_any


# --------------------------------------------------------------------------- after 5: supersampling resolve

def downscale(rgb: np.ndarray, alpha: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Box filter of a view rendered at ``k`` times the size: each output pixel is the mean of its
    k x k block, summed block row by block row, then times ``float32(1 / k^2)`` (the GPU's kernel
    sums in the same order: the same bits)."""
    if k == 1:
        return rgb, alpha
    scale = f32(1.0 / (k * k))
    out_rgb = np.zeros((rgb.shape[0] // k, rgb.shape[1] // k, rgb.shape[2]), f32)
    out_alpha = np.zeros((alpha.shape[0] // k, alpha.shape[1] // k), f32)
    for i in range(k):
        for j in range(k):
            out_rgb += rgb[i::k, j::k][:out_rgb.shape[0], :out_rgb.shape[1]]
            out_alpha += alpha[i::k, j::k][:out_alpha.shape[0], :out_alpha.shape[1]]
    return out_rgb * scale, out_alpha * scale
