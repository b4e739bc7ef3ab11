"""The CuPy GPU backend: the stages of :mod:`rasterizer.stages` as CUDA RawKernels.

One kernel per stage: ``project`` (one thread per Gaussian), ``sh_colors`` (one thread per
Gaussian), ``bin_tiles`` (count tiles per Gaussian, prefix sum, duplicate one 64-bit
``tile << 32 | depth-bits`` key per intersection, stable radix sort, tile ranges) and ``blend``
(one 256-thread block per 16x16 tile, Gaussians staged through shared memory in batches,
the whole tile leaving early once every pixel is saturated). Kernels are compiled by CuPy at
first use and cached on disk by CuPy, so a second process does not pay the compile again.

When a view has more tile intersections than ``max_intersections`` (default 2**31 - 1, the
int32 limit; ``SPLATTER_GPU_MAX_ISECT`` overrides it, e.g. to test), the Gaussians are split
by depth into chunks under the limit and blended chunk after chunk, front to back, carrying
each pixel's colour, transmittance and "stopped" flag: every tile sees the same list in the
same order, so the chunked image is bit-identical to the unchunked one.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import cupy as cp
import numpy as np

from .. import stages
from ..camera import Camera
from ..stages import Gaussians, Projection, TileBins

log = logging.getLogger(__name__)
f32 = np.float32
BLOCK = 256
INT32_LIMIT = 2**31 - 1

_SOURCE = r"""
#define TILE 16
extern "C" {

__global__ void project_kernel(const int n, const float* __restrict__ means, const float* __restrict__ quats,
    const float* __restrict__ scales,
    const float r00, const float r01, const float r02, const float r10, const float r11, const float r12,
    const float r20, const float r21, const float r22, const float t0, const float t1, const float t2,
    const float fx, const float fy, const float cx, const float cy, const int W, const int H,
    float* __restrict__ means2d, float* __restrict__ conics, float* __restrict__ depths, int* __restrict__ radii)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    radii[i] = 0;
    const float px = means[3 * i], py = means[3 * i + 1], pz = means[3 * i + 2];
    const float x = r00 * px + r01 * py + r02 * pz + t0;
    const float y = r10 * px + r11 * py + r12 * pz + t1;
    const float z = r20 * px + r21 * py + r22 * pz + t2;
    depths[i] = z;
    if (!(z >= 0.01f && z <= 1e10f)) return;
    const float qw = quats[4 * i], qx = quats[4 * i + 1], qy = quats[4 * i + 2], qz = quats[4 * i + 3];
    const float sx = scales[3 * i], sy = scales[3 * i + 1], sz = scales[3 * i + 2];
    const float m00 = (1.f - 2.f * (qy * qy + qz * qz)) * sx, m01 = (2.f * (qx * qy - qw * qz)) * sy;
    const float m02 = (2.f * (qx * qz + qw * qy)) * sz, m10 = (2.f * (qx * qy + qw * qz)) * sx;
    const float m11 = (1.f - 2.f * (qx * qx + qz * qz)) * sy, m12 = (2.f * (qy * qz - qw * qx)) * sz;
    const float m20 = (2.f * (qx * qz - qw * qy)) * sx, m21 = (2.f * (qy * qz + qw * qx)) * sy;
    const float m22 = (1.f - 2.f * (qx * qx + qy * qy)) * sz;
    const float s00 = m00 * m00 + m01 * m01 + m02 * m02, s01 = m00 * m10 + m01 * m11 + m02 * m12;
    const float s02 = m00 * m20 + m01 * m21 + m02 * m22, s11 = m10 * m10 + m11 * m11 + m12 * m12;
    const float s12 = m10 * m20 + m11 * m21 + m12 * m22, s22 = m20 * m20 + m21 * m21 + m22 * m22;
    const float a00 = r00 * s00 + r01 * s01 + r02 * s02, a01 = r00 * s01 + r01 * s11 + r02 * s12;
    const float a02 = r00 * s02 + r01 * s12 + r02 * s22, a10 = r10 * s00 + r11 * s01 + r12 * s02;
    const float a11 = r10 * s01 + r11 * s11 + r12 * s12, a12 = r10 * s02 + r11 * s12 + r12 * s22;
    const float a20 = r20 * s00 + r21 * s01 + r22 * s02, a21 = r20 * s01 + r21 * s11 + r22 * s12;
    const float a22 = r20 * s02 + r21 * s12 + r22 * s22;
    const float c00 = a00 * r00 + a01 * r01 + a02 * r02, c01 = a00 * r10 + a01 * r11 + a02 * r12;
    const float c02 = a00 * r20 + a01 * r21 + a02 * r22, c11 = a10 * r10 + a11 * r11 + a12 * r12;
    const float c12 = a10 * r20 + a11 * r21 + a12 * r22, c22 = a20 * r20 + a21 * r21 + a22 * r22;
    const float tan_fovx = 0.5f * (float)W / fx, tan_fovy = 0.5f * (float)H / fy;
    const float lim_x_pos = ((float)W - cx) / fx + 0.3f * tan_fovx, lim_x_neg = cx / fx + 0.3f * tan_fovx;
    const float lim_y_pos = ((float)H - cy) / fy + 0.3f * tan_fovy, lim_y_neg = cy / fy + 0.3f * tan_fovy;
    const float rz = 1.f / z;
    const float tx = z * fminf(lim_x_pos, fmaxf(-lim_x_neg, x * rz));
    const float ty = z * fminf(lim_y_pos, fmaxf(-lim_y_neg, y * rz));
    const float j00 = fx * rz, j02 = -fx * tx * rz * rz, j11 = fy * rz, j12 = -fy * ty * rz * rz;
    const float a = j00 * (j00 * c00 + j02 * c02) + j02 * (j00 * c02 + j02 * c22) + 0.3f;
    const float b = j00 * (j11 * c01 + j12 * c02) + j02 * (j11 * c12 + j12 * c22);
    const float c = j11 * (j11 * c11 + j12 * c12) + j12 * (j11 * c12 + j12 * c22) + 0.3f;
    const float det = a * c - b * b;
    if (!(det > 0.f)) return;
    const float inv_det = 1.f / det;
    const float mid = 0.5f * (a + c);
    const float lam = mid + sqrtf(fmaxf(0.01f, mid * mid - det));
    const float radius = ceilf(3.f * sqrtf(lam));
    const float mx = fx * x * rz + cx, my = fy * y * rz + cy;
    if (radius <= 0.f || mx + radius <= 0.f || mx - radius >= (float)W || my + radius <= 0.f
        || my - radius >= (float)H) return;
    means2d[2 * i] = mx; means2d[2 * i + 1] = my;
    conics[3 * i] = c * inv_det; conics[3 * i + 1] = -b * inv_det; conics[3 * i + 2] = a * inv_det;
    radii[i] = (int)radius;
}

__global__ void sh_kernel(const int n, const int K, const int degree, const float* __restrict__ means,
    const float* __restrict__ sh, const float camx, const float camy, const float camz, float* __restrict__ out)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = means[3 * i] - camx, y = means[3 * i + 1] - camy, z = means[3 * i + 2] - camz;
    const float norm = sqrtf(x * x + y * y + z * z);
    if (norm > 0.f) { x = x / norm; y = y / norm; z = z / norm; }
    const float xx = x * x, yy = y * y, zz = z * z;
    const float* s = sh + (size_t)i * K * 3;
    for (int ch = 0; ch < 3; ++ch) {
        float v = 0.28209479177387814f * s[ch];
        if (degree >= 1)
            v += -0.4886025119029199f * y * s[3 + ch] + 0.4886025119029199f * z * s[6 + ch]
                 - 0.4886025119029199f * x * s[9 + ch];
        if (degree >= 2)
            v += 1.0925484305920792f * (x * y) * s[12 + ch] + -1.0925484305920792f * (y * z) * s[15 + ch]
                 + 0.31539156525252005f * (2.f * zz - xx - yy) * s[18 + ch]
                 + -1.0925484305920792f * (x * z) * s[21 + ch] + 0.5462742152960396f * (xx - yy) * s[24 + ch];
        if (degree >= 3)
            v += -0.5900435899266435f * y * (3.f * xx - yy) * s[27 + ch]
                 + 2.890611442640554f * (x * y) * z * s[30 + ch]
                 + -0.4570457994644658f * y * (4.f * zz - xx - yy) * s[33 + ch]
                 + 0.3731763325901154f * z * (2.f * zz - 3.f * xx - 3.f * yy) * s[36 + ch]
                 + -0.4570457994644658f * x * (4.f * zz - xx - yy) * s[39 + ch]
                 + 1.445305721320277f * z * (xx - yy) * s[42 + ch]
                 + -0.5900435899266435f * x * (xx - 3.f * yy) * s[45 + ch];
        out[3 * i + ch] = fmaxf(v + 0.5f, 0.f);
    }
}

__device__ __forceinline__ void tile_rect(const float mx, const float my, const int radius, const int tiles_x,
    const int tiles_y, int& x0, int& x1, int& y0, int& y1)
{
    const float r = (float)radius / (float)TILE, tx = mx / (float)TILE, ty = my / (float)TILE;
    x0 = min(max(0, (int)floorf(tx - r)), tiles_x); x1 = min(max(0, (int)ceilf(tx + r)), tiles_x);
    y0 = min(max(0, (int)floorf(ty - r)), tiles_y); y1 = min(max(0, (int)ceilf(ty + r)), tiles_y);
}

__global__ void count_kernel(const int n, const float* __restrict__ means2d, const int* __restrict__ radii,
    const int tiles_x, const int tiles_y, long long* __restrict__ counts)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    long long c = 0;
    if (radii[i] > 0) {
        int x0, x1, y0, y1;
        tile_rect(means2d[2 * i], means2d[2 * i + 1], radii[i], tiles_x, tiles_y, x0, x1, y0, y1);
        c = (long long)(x1 - x0) * (long long)(y1 - y0);
    }
    counts[i] = c;
}

__global__ void duplicate_kernel(const int n, const float* __restrict__ means2d, const int* __restrict__ radii,
    const float* __restrict__ depths, const long long* __restrict__ counts, const long long* __restrict__ ends,
    const int tiles_x, const int tiles_y, unsigned long long* __restrict__ keys, int* __restrict__ gids)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n || counts[i] == 0) return;
    int x0, x1, y0, y1;
    tile_rect(means2d[2 * i], means2d[2 * i + 1], radii[i], tiles_x, tiles_y, x0, x1, y0, y1);
    long long k = ends[i] - counts[i];
    const unsigned long long d = (unsigned long long)__float_as_uint(depths[i]);
    for (int ty = y0; ty < y1; ++ty)
        for (int tx = x0; tx < x1; ++tx) {
            keys[k] = ((unsigned long long)(ty * tiles_x + tx) << 32) | d;
            gids[k] = i;
            ++k;
        }
}

__global__ void blend_kernel(const long long* __restrict__ offsets, const int* __restrict__ gids,
    const float* __restrict__ means2d, const float* __restrict__ conics, const float* __restrict__ opac,
    const float* __restrict__ colors, const int W, const int H, const int tiles_x, const int first,
    const int last, const float bg0, const float bg1, const float bg2, float* __restrict__ state_c,
    float* __restrict__ state_t, unsigned char* __restrict__ state_done, float* __restrict__ rgb,
    float* __restrict__ alpha_out)
{
    __shared__ float2 s_xy[256];
    __shared__ float4 s_co[256];
    __shared__ float3 s_rgb[256];
    const int tile = blockIdx.x, tid = threadIdx.x;
    const int px = (tile % tiles_x) * TILE + (tid % TILE), py = (tile / tiles_x) * TILE + (tid / TILE);
    const bool inside = px < W && py < H;
    const int pix = py * W + px;
    float T = 1.f, c0 = 0.f, c1 = 0.f, c2 = 0.f;
    bool done = !inside;
    if (!first && inside) {
        T = state_t[pix]; c0 = state_c[3 * pix]; c1 = state_c[3 * pix + 1]; c2 = state_c[3 * pix + 2];
        done = state_done[pix] != 0;
    }
    const float fx = (float)px + 0.5f, fy = (float)py + 0.5f;
    const long long start = offsets[tile], end = offsets[tile + 1];
    for (long long b = start; b < end; b += 256) {
        if (__syncthreads_count(done) == 256) break;          // the whole tile is saturated
        const long long idx = b + tid;
        if (idx < end) {
            const int g = gids[idx];
            s_xy[tid] = make_float2(means2d[2 * g], means2d[2 * g + 1]);
            s_co[tid] = make_float4(conics[3 * g], conics[3 * g + 1], conics[3 * g + 2], opac[g]);
            s_rgb[tid] = make_float3(colors[3 * g], colors[3 * g + 1], colors[3 * g + 2]);
        }
        __syncthreads();
        const int cnt = (int)min((long long)256, end - b);
        for (int k = 0; k < cnt && !done; ++k) {
            const float2 xy = s_xy[k];
            const float4 co = s_co[k];
            const float dx = xy.x - fx, dy = xy.y - fy;
            const float sigma = 0.5f * (co.x * dx * dx + co.z * dy * dy) + co.y * dx * dy;
            const float alpha = fminf(0.999f, co.w * __expf(-sigma));
            if (sigma < 0.f || alpha < 1.f / 255.f) continue;
            const float next_T = T * (1.f - alpha);
            if (next_T <= 1e-4f) { done = true; break; }
            const float w = alpha * T;
            const float3 c = s_rgb[k];
            c0 += c.x * w; c1 += c.y * w; c2 += c.z * w;
            T = next_T;
        }
        __syncthreads();                                       // before the next batch overwrites shared
    }
    if (!inside) return;
    if (last) {
        rgb[3 * pix] = fminf(fmaxf(c0 + T * bg0, 0.f), 1.f);
        rgb[3 * pix + 1] = fminf(fmaxf(c1 + T * bg1, 0.f), 1.f);
        rgb[3 * pix + 2] = fminf(fmaxf(c2 + T * bg2, 0.f), 1.f);
        alpha_out[pix] = 1.f - T;
    } else {
        state_t[pix] = T; state_c[3 * pix] = c0; state_c[3 * pix + 1] = c1; state_c[3 * pix + 2] = c2;
        state_done[pix] = done ? 1 : 0;
    }
}

}  // extern "C"
"""

_module = None


def _kernel(name: str):
    global _module
    if _module is None:
        _module = cp.RawModule(code=_SOURCE, options=("-std=c++14",))
    return _module.get_function(name)


def _grid(n: int) -> tuple[int]:
    return ((n + BLOCK - 1) // BLOCK,)


def max_intersections() -> int:
    return int(os.environ.get("SPLATTER_GPU_MAX_ISECT", INT32_LIMIT))


# --------------------------------------------------------------------------- upload / download

def upload(scene) -> Gaussians:
    g = stages.activate(scene)
    return Gaussians(cp.asarray(g.means), cp.asarray(g.quats), cp.asarray(g.scales), cp.asarray(g.opacities),
                     cp.asarray(g.sh), g.sh_degree)


def download(rgb, alpha):
    return cp.asnumpy(rgb), cp.asnumpy(alpha)


# --------------------------------------------------------------------------- project / colour

def project(g: Gaussians, camera: Camera) -> Projection:
    n = len(g)
    out = Projection(cp.empty((n, 2), f32), cp.empty((n, 3), f32), cp.empty(n, f32), cp.empty(n, np.int32))
    R = camera.world_to_camera[:3, :3].astype(f32)
    t = camera.world_to_camera[:3, 3].astype(f32)
    if n:
        _kernel("project_kernel")(_grid(n), (BLOCK,), (
            np.int32(n), g.means, g.quats, g.scales, *[f32(v) for v in R.ravel()], *[f32(v) for v in t],
            f32(camera.fx), f32(camera.fy), f32(camera.cx), f32(camera.cy), np.int32(camera.width),
            np.int32(camera.height), out.means2d, out.conics, out.depths, out.radii))
    return out


def sh_colors(g: Gaussians, camera: Camera):
    n = len(g)
    out = cp.empty((n, 3), f32)
    c = camera.center.astype(f32)
    if n:
        _kernel("sh_kernel")(_grid(n), (BLOCK,), (np.int32(n), np.int32(g.sh.shape[1]), np.int32(g.sh_degree),
                                                  g.means, g.sh, f32(c[0]), f32(c[1]), f32(c[2]), out))
    return out


# --------------------------------------------------------------------------- bin

@dataclass
class ChunkedBins:
    """Tile bins of consecutive depth chunks (one chunk unless the intersections overflow)."""

    chunks: list


def _bins_for(p: Projection, counts, tiles_x: int, tiles_y: int) -> TileBins:
    n = counts.shape[0]
    ends = cp.cumsum(counts)
    total = int(ends[-1]) if n else 0
    n_tiles = tiles_x * tiles_y
    if total == 0:
        return TileBins(tiles_x, tiles_y, cp.empty(0, np.int32), cp.zeros(n_tiles + 1, np.int64))
    keys = cp.empty(total, np.uint64)
    gids = cp.empty(total, np.int32)
    _kernel("duplicate_kernel")(_grid(n), (BLOCK,), (np.int32(n), p.means2d, p.radii, p.depths, counts, ends,
                                                     np.int32(tiles_x), np.int32(tiles_y), keys, gids))
    order = cp.argsort(keys)                                   # CuPy's argsort is a stable radix sort
    keys = keys[order]
    gids = gids[order]
    del order
    tiles = (keys >> np.uint64(32)).astype(np.int32)
    offsets = cp.searchsorted(tiles, cp.arange(n_tiles + 1, dtype=np.int32)).astype(np.int64)
    return TileBins(tiles_x, tiles_y, gids, offsets)


def bin_tiles(p: Projection, camera: Camera) -> ChunkedBins:
    tiles_x, tiles_y = stages.tile_grid(camera)
    n = p.radii.shape[0]
    counts = cp.empty(n, np.int64)
    if n:
        _kernel("count_kernel")(_grid(n), (BLOCK,), (np.int32(n), p.means2d, p.radii, np.int32(tiles_x),
                                                     np.int32(tiles_y), counts))
    total = int(counts.sum()) if n else 0
    limit = max_intersections()
    if total <= limit:
        return ChunkedBins([_bins_for(p, counts, tiles_x, tiles_y)])
    # Too many intersections for one pass: cut the Gaussians, in (depth, index) order, into runs
    # whose intersections fit, and bin each run on its own.
    visible = cp.flatnonzero(counts > 0)
    order = visible[cp.argsort(p.depths[visible])]
    cum = cp.cumsum(counts[order])
    cuts = [0]
    while cuts[-1] < order.size:
        base = int(cum[cuts[-1] - 1]) if cuts[-1] else 0
        nxt = int(cp.searchsorted(cum, base + limit, side="right"))
        cuts.append(max(nxt, cuts[-1] + 1))
    log.info("gpu: %d tile intersections exceed %d: blending in %d depth chunks", total, limit, len(cuts) - 1)
    chunks = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        chunk_counts = cp.zeros_like(counts)
        chunk_counts[order[a:b]] = counts[order[a:b]]
        chunks.append(_bins_for(p, chunk_counts, tiles_x, tiles_y))
    return ChunkedBins(chunks)


# --------------------------------------------------------------------------- blend

def blend(p: Projection, colors, opacities, bins: ChunkedBins, camera: Camera, background):
    W, H = camera.width, camera.height
    rgb = cp.empty((H, W, 3), f32)
    alpha = cp.empty((H, W), f32)
    chunks = bins.chunks
    multi = len(chunks) > 1
    state_c = cp.empty((H, W, 3), f32) if multi else rgb
    state_t = cp.empty((H, W), f32) if multi else alpha
    state_done = cp.empty((H, W), np.uint8) if multi else cp.empty(1, np.uint8)
    bg = [f32(v) for v in background]
    for k, b in enumerate(chunks):
        n_tiles = b.tiles_x * b.tiles_y
        _kernel("blend_kernel")((n_tiles,), (BLOCK,), (
            b.offsets, b.gaussian_ids, p.means2d, p.conics, opacities, colors, np.int32(W), np.int32(H),
            np.int32(b.tiles_x), np.int32(k == 0), np.int32(k == len(chunks) - 1), *bg, state_c, state_t,
            state_done, rgb, alpha))
    return rgb, alpha
