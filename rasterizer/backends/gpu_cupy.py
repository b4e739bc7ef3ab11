"""The CuPy GPU backend: the stages of :mod:`rasterizer.stages` as CUDA RawKernels.

Same five stages, same names, same gsplat-1.4.0 "classic" semantics (``rendering.md``):

``project``    one thread per Gaussian: EWA projection in gsplat's order of operations, and
               fused into it the SH colour (cached for ``sh_colors``) and the number of tiles the
               Gaussian can reach;
``sh_colors``  returns that cached colour (or runs the SH kernel alone for another camera);
``bin_tiles``  one global depth sort of the Gaussians (32-bit keys), a prefix sum of their tile
               counts in that order, one (tile, Gaussian) pair per intersection written in depth
               order, then a stable radix sort on the tile id alone (16 bits for up to 65536
               tiles) and a tile-range kernel. Sorting by depth first, then stably by tile, gives
               exactly the order of gsplat's 64-bit ``tile << 32 | depth`` sort, while each radix
               pass touches only the bits that are needed;
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

Kernels are compiled by CuPy (NVRTC) on first use and cached on disk by CuPy
(``~/.cupy/kernel_cache`` or ``$CUPY_CACHE_DIR``): a second process does not compile again.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import cupy as cp
import numpy as np

from .. import stages
from ..camera import Camera
from ..stages import Gaussians, Projection, TileBins

log = logging.getLogger(__name__)
f32 = np.float32
BLOCK = 256
INT32_LIMIT = 2**31 - 1
DEFAULT_MAX_ISECT = 2**24

_SOURCE = r"""
#define TILE 16
#define SIGMA_MARGIN 0.05f     // sigma units: the cull keeps alpha >= 0.95/255, safely below the 1/255 rule
#define PIX_MARGIN 0.05f       // pixels

// ---------------------------------------------------------------------------------------------
// Which tiles a Gaussian reaches. The projection kernel counts them and stores the per-Gaussian
// constants it used (rch); the duplicate kernel recomputes the rows from those stored values with
// the same correctly rounded operations (no FMA contraction), so both agree to the bit.

struct Reach {
    int x0, x1, y0, y1;            // gsplat's tile rectangle [x0, x1) x [y0, y1)
    float mx, my, B, hy, k, two_sA, inv_A, det;
};

// gsplat 1.4.0 isect_tiles: floor/ceil of (mean -/+ radius) / tile, clamped to the grid
__device__ __forceinline__ void tile_rect(Reach& q, const float mx, const float my, const int radius,
    const int tiles_x, const int tiles_y)
{
    const float r = __fdiv_rn((float)radius, (float)TILE);
    const float tx = __fdiv_rn(mx, (float)TILE), ty = __fdiv_rn(my, (float)TILE);
    q.x0 = (int)fminf(fmaxf(floorf(__fsub_rn(tx, r)), 0.f), (float)tiles_x);
    q.x1 = (int)fminf(fmaxf(ceilf(__fadd_rn(tx, r)), 0.f), (float)tiles_x);
    q.y0 = (int)fminf(fmaxf(floorf(__fsub_rn(ty, r)), 0.f), (float)tiles_y);
    q.y1 = (int)fminf(fmaxf(ceilf(__fadd_rn(ty, r)), 0.f), (float)tiles_y);
    q.mx = mx; q.my = my;
}

// The ellipse sigma <= s, s = ln(255 opacity) + margin, of conic (A, B, C): |dy| <= hy; its
// rightmost point is at dy = -k, its leftmost at dy = +k. rch = (hy, k, 2 s A, 1 / A); hy < 0
// means "no ellipse test, the whole rectangle".
__device__ __forceinline__ float4 reach_constants(const float A, const float B, const float C, const float opacity)
{
    const float s = __fadd_rn(logf(__fmul_rn(255.f, opacity)), SIGMA_MARGIN);
    const float det = __fsub_rn(__fmul_rn(A, C), __fmul_rn(B, B));
    const bool ok = det > 0.f && A > 0.f && C > 0.f && s > 0.f && fabsf(det) <= 3.4e38f && fabsf(A) <= 3.4e38f
                    && fabsf(C) <= 3.4e38f;
    if (!ok) return make_float4(-1.f, 0.f, 0.f, 0.f);
    const float two_s = __fmul_rn(2.f, s);
    const float hy = __fsqrt_rn(__fdiv_rn(__fmul_rn(two_s, A), det));
    const float hx = __fsqrt_rn(__fdiv_rn(__fmul_rn(two_s, C), det));
    const float k = __fdiv_rn(__fmul_rn(B, hx), C);
    const float4 r = make_float4(hy, k, __fmul_rn(two_s, A), __fdiv_rn(1.f, A));
    if (!(fabsf(r.x) <= 3.4e38f && fabsf(r.y) <= 3.4e38f && fabsf(r.z) <= 3.4e38f && fabsf(r.w) <= 3.4e38f))
        return make_float4(-1.f, 0.f, 0.f, 0.f);
    return r;
}

__device__ __forceinline__ void set_reach(Reach& q, const float B, const float C, const float4 rch)
{
    q.B = B; q.hy = rch.x; q.k = rch.y; q.two_sA = rch.z; q.inv_A = rch.w;
    q.det = __fsub_rn(__fmul_rn(__fdiv_rn(1.f, rch.w), C), __fmul_rn(B, B));   // unused when hy < 0
}

// Tiles [lo, hi) of tile row ty holding a pixel centre with sigma <= s.
__device__ __forceinline__ void row_span(const Reach& q, const int ty, const int H, int& lo, int& hi)
{
    lo = q.x0; hi = q.x1;
    if (q.hy < 0.f) return;
    // pixel-centre rows of the tile row, relative to the mean
    const float row_lo = __fsub_rn(__fadd_rn((float)(ty * TILE), 0.5f), q.my);
    const float row_hi = __fsub_rn(__fadd_rn(fminf((float)(ty * TILE + TILE - 1), (float)(H - 1)), 0.5f), q.my);
    const float e0 = fmaxf(__fsub_rn(row_lo, PIX_MARGIN), -q.hy), e1 = fminf(__fadd_rn(row_hi, PIX_MARGIN), q.hy);
    if (!(e0 <= e1)) { hi = lo; return; }
    // right boundary x_r(dy) = (-B dy + sqrt(2 s A - det dy^2)) / A is concave with its top at
    // dy = -k; the left boundary is convex with its bottom at dy = +k
    const float yr = fminf(fmaxf(-q.k, e0), e1), yl = fminf(fmaxf(q.k, e0), e1);
    const float wr = __fsqrt_rn(fmaxf(0.f, __fsub_rn(q.two_sA, __fmul_rn(q.det, __fmul_rn(yr, yr)))));
    const float wl = __fsqrt_rn(fmaxf(0.f, __fsub_rn(q.two_sA, __fmul_rn(q.det, __fmul_rn(yl, yl)))));
    const float xr = __fmul_rn(__fadd_rn(__fmul_rn(-q.B, yr), wr), q.inv_A);
    const float xl = __fmul_rn(__fsub_rn(__fmul_rn(-q.B, yl), wl), q.inv_A);
    const float XR = __fadd_rn(__fadd_rn(q.mx, xr), PIX_MARGIN), XL = __fsub_rn(__fadd_rn(q.mx, xl), PIX_MARGIN);
    // tile tx holds the pixel centres 16 tx + 0.5 ... 16 tx + 15.5 (x / 16 is exact as x * 0.0625)
    const float flo = ceilf(__fmul_rn(__fsub_rn(XL, 15.5f), 0.0625f));
    const float fhi = __fadd_rn(floorf(__fmul_rn(__fsub_rn(XR, 0.5f), 0.0625f)), 1.f);
    lo = (int)fminf(fmaxf(flo, (float)q.x0), (float)q.x1);
    hi = (int)fminf(fmaxf(fhi, (float)q.x0), (float)q.x1);
    if (hi < lo) hi = lo;
}

__device__ __forceinline__ int reach_count(const Reach& q, const int H)
{
    int n = 0;
    for (int ty = q.y0; ty < q.y1; ++ty) {
        int lo, hi;
        row_span(q, ty, H, lo, hi);
        n += hi - lo;
    }
    return n;
}

// ---------------------------------------------------------------------------------------------
// 2 + 3. projection (gsplat 1.4.0 fully_fused_projection, pinhole) + SH colour + tile count

// gsplat's sh_coeffs_to_color_fast at the unit direction (dx, dy, dz), then max(. + 0.5, 0)
__device__ __forceinline__ void sh_to_rgb(const float* __restrict__ co, const int degree, const float dx,
    const float dy, const float dz, float* __restrict__ out)
{
    for (int ch = 0; ch < 3; ++ch) {
        float v = 0.2820947917738781f * co[ch];
        if (degree >= 1) {
            v += 0.48860251190292f * (-dy * co[3 + ch] + dz * co[6 + ch] - dx * co[9 + ch]);
            if (degree >= 2) {
                const float z2 = dz * dz, fTmp0B = -1.092548430592079f * dz;
                const float fC1 = dx * dx - dy * dy, fS1 = 2.f * dx * dy;
                const float pSH6 = 0.9461746957575601f * z2 - 0.3153915652525201f;
                const float pSH7 = fTmp0B * dx, pSH5 = fTmp0B * dy;
                const float pSH8 = 0.5462742152960395f * fC1, pSH4 = 0.5462742152960395f * fS1;
                v += pSH4 * co[12 + ch] + pSH5 * co[15 + ch] + pSH6 * co[18 + ch] + pSH7 * co[21 + ch]
                     + pSH8 * co[24 + ch];
                if (degree >= 3) {
                    const float fTmp0C = -2.285228997322329f * z2 + 0.4570457994644658f;
                    const float fTmp1B = 1.445305721320277f * dz;
                    const float fC2 = dx * fC1 - dy * fS1, fS2 = dx * fS1 + dy * fC1;
                    const float pSH12 = dz * (1.865881662950577f * z2 - 1.119528997770346f);
                    const float pSH13 = fTmp0C * dx, pSH11 = fTmp0C * dy;
                    const float pSH14 = fTmp1B * fC1, pSH10 = fTmp1B * fS1;
                    const float pSH15 = -0.5900435899266435f * fC2, pSH9 = -0.5900435899266435f * fS2;
                    v += pSH9 * co[27 + ch] + pSH10 * co[30 + ch] + pSH11 * co[33 + ch] + pSH12 * co[36 + ch]
                         + pSH13 * co[39 + ch] + pSH14 * co[42 + ch] + pSH15 * co[45 + ch];
                }
            }
        }
        out[ch] = fmaxf(v + 0.5f, 0.f);
    }
}

extern "C" __global__ void project_kernel(const int n, const float* __restrict__ means, const float* __restrict__ quats,
    const float* __restrict__ scales, const float* __restrict__ opacities, const float* __restrict__ sh,
    const int K, const int degree,
    const float r00, const float r01, const float r02, const float r10, const float r11, const float r12,
    const float r20, const float r21, const float r22, const float t0, const float t1, const float t2,
    const float fx, const float fy, const float cx, const float cy, const float camx, const float camy,
    const float camz, const int W, const int H, const int tiles_x, const int tiles_y,
    float4* __restrict__ geo, float4* __restrict__ con, float* __restrict__ depths, int* __restrict__ radii,
    float* __restrict__ rgb, int* __restrict__ counts, unsigned int* __restrict__ depth_keys,
    float4* __restrict__ rchs)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    // culled: radius 0, no tiles, sorted last, colour 0 (written only on these paths)
    #define CULL do { radii[i] = 0; counts[i] = 0; depth_keys[i] = 0xffffffffu; rgb[3 * i] = 0.f; \
        rgb[3 * i + 1] = 0.f; rgb[3 * i + 2] = 0.f; } while (0)
    const float px = means[3 * i], py = means[3 * i + 1], pz = means[3 * i + 2];
    const float x = r00 * px + r01 * py + r02 * pz + t0;
    const float y = r10 * px + r11 * py + r12 * pz + t1;
    const float z = r20 * px + r21 * py + r22 * pz + t2;
    depths[i] = z;
    if (!(z >= 0.01f && z <= 1e10f)) { CULL; return; }           // near / far (and NaN)
    // Sigma = R S S^T R^T from the (re)normalised quaternion, as gsplat
    float qw = quats[4 * i], qx = quats[4 * i + 1], qy = quats[4 * i + 2], qz = quats[4 * i + 3];
    const float inv_norm = rsqrtf(qx * qx + qy * qy + qz * qz + qw * qw);
    qw *= inv_norm; qx *= inv_norm; qy *= inv_norm; qz *= inv_norm;
    const float sx = scales[3 * i], sy = scales[3 * i + 1], sz = scales[3 * i + 2];
    const float m00 = (1.f - 2.f * (qy * qy + qz * qz)) * sx, m01 = (2.f * (qx * qy - qw * qz)) * sy;
    const float m02 = (2.f * (qx * qz + qw * qy)) * sz, m10 = (2.f * (qx * qy + qw * qz)) * sx;
    const float m11 = (1.f - 2.f * (qx * qx + qz * qz)) * sy, m12 = (2.f * (qy * qz - qw * qx)) * sz;
    const float m20 = (2.f * (qx * qz - qw * qy)) * sx, m21 = (2.f * (qy * qz + qw * qx)) * sy;
    const float m22 = (1.f - 2.f * (qx * qx + qy * qy)) * sz;
    const float s00 = m00 * m00 + m01 * m01 + m02 * m02, s01 = m00 * m10 + m01 * m11 + m02 * m12;
    const float s02 = m00 * m20 + m01 * m21 + m02 * m22, s11 = m10 * m10 + m11 * m11 + m12 * m12;
    const float s12 = m10 * m20 + m11 * m21 + m12 * m22, s22 = m20 * m20 + m21 * m21 + m22 * m22;
    // camera-space covariance Rv Sigma Rv^T
    const float a00 = r00 * s00 + r01 * s01 + r02 * s02, a01 = r00 * s01 + r01 * s11 + r02 * s12;
    const float a02 = r00 * s02 + r01 * s12 + r02 * s22, a10 = r10 * s00 + r11 * s01 + r12 * s02;
    const float a11 = r10 * s01 + r11 * s11 + r12 * s12, a12 = r10 * s02 + r11 * s12 + r12 * s22;
    const float a20 = r20 * s00 + r21 * s01 + r22 * s02, a21 = r20 * s01 + r21 * s11 + r22 * s12;
    const float a22 = r20 * s02 + r21 * s12 + r22 * s22;
    const float c00 = a00 * r00 + a01 * r01 + a02 * r02, c01 = a00 * r10 + a01 * r11 + a02 * r12;
    const float c02 = a00 * r20 + a01 * r21 + a02 * r22, c11 = a10 * r10 + a11 * r11 + a12 * r12;
    const float c12 = a10 * r20 + a11 * r21 + a12 * r22, c22 = a20 * r20 + a21 * r21 + a22 * r22;
    // persp_proj: the Jacobian at the position clamped to 1.3x the frustum
    const float tan_fovx = 0.5f * (float)W / fx, tan_fovy = 0.5f * (float)H / fy;
    const float lim_x_pos = ((float)W - cx) / fx + 0.3f * tan_fovx, lim_x_neg = cx / fx + 0.3f * tan_fovx;
    const float lim_y_pos = ((float)H - cy) / fy + 0.3f * tan_fovy, lim_y_neg = cy / fy + 0.3f * tan_fovy;
    const float rz = 1.f / z, rz2 = rz * rz;
    const float tx = z * fminf(lim_x_pos, fmaxf(-lim_x_neg, x * rz));
    const float ty = z * fminf(lim_y_pos, fmaxf(-lim_y_neg, y * rz));
    const float j00 = fx * rz, j02 = -fx * tx * rz2, j11 = fy * rz, j12 = -fy * ty * rz2;
    // add_blur: eps2d = 0.3 on the diagonal ("classic": opacity unchanged)
    const float a = j00 * (j00 * c00 + j02 * c02) + j02 * (j00 * c02 + j02 * c22) + 0.3f;
    const float b = j00 * (j11 * c01 + j12 * c02) + j02 * (j11 * c12 + j12 * c22);
    const float c = j11 * (j11 * c11 + j12 * c12) + j12 * (j11 * c12 + j12 * c22) + 0.3f;
    const float det = a * c - b * b;
    if (!(det > 0.f)) { CULL; return; }
    const float inv_det = 1.f / det;
    const float mid = 0.5f * (a + c);
    const float lam = mid + sqrtf(fmaxf(0.01f, mid * mid - det));
    const float radius = ceilf(3.f * sqrtf(lam));
    const float mx = fx * x * rz + cx, my = fy * y * rz + cy;
    if (!(radius > 0.f) || mx + radius <= 0.f || mx - radius >= (float)W || my + radius <= 0.f
        || my - radius >= (float)H) { CULL; return; }
    const float ca = c * inv_det, cb = -b * inv_det, cc = a * inv_det;
    const float opac = opacities[i];
    radii[i] = (int)radius;
    con[i] = make_float4(ca, cb, cc, opac);
    if (!(opac >= 1.f / 255.f)) {                                 // never reaches alpha 1/255
        counts[i] = 0; depth_keys[i] = 0xffffffffu; rgb[3 * i] = 0.f; rgb[3 * i + 1] = 0.f; rgb[3 * i + 2] = 0.f;
        geo[i] = make_float4(mx, my, 0.f, 0.f);
        return;
    }
    const float4 rch = reach_constants(ca, cb, cc, opac);
    rchs[i] = rch;
    Reach q;
    tile_rect(q, mx, my, (int)radius, tiles_x, tiles_y);
    set_reach(q, cb, cc, rch);
    const int cnt = reach_count(q, H);
    // alpha >= 1/255 box (blend's per-warp lists): |dx| <= sqrt(2 s a), |dy| <= sqrt(2 s c), + 1 px
    const float s = fmaxf(logf(255.f * opac) + SIGMA_MARGIN, 0.f);
    geo[i] = make_float4(mx, my, sqrtf(2.f * s * a) + 1.f, sqrtf(2.f * s * c) + 1.f);
    counts[i] = cnt;
    if (cnt == 0) {
        depth_keys[i] = 0xffffffffu; rgb[3 * i] = 0.f; rgb[3 * i + 1] = 0.f; rgb[3 * i + 2] = 0.f;
        return;
    }
    depth_keys[i] = __float_as_uint(z);                           // z > 0: float order = uint order
    // SH colour of the Gaussians that reach a pixel (gsplat's sh_coeffs_to_color_fast)
    float dx = px - camx, dy = py - camy, dz = pz - camz;
    const float inorm = rsqrtf(dx * dx + dy * dy + dz * dz);
    dx *= inorm; dy *= inorm; dz *= inorm;
    const float* co = sh + (long long)i * K * 3;
    sh_to_rgb(co, degree, dx, dy, dz, rgb + 3 * i);
    #undef CULL
}

// SH colour alone (the sh_colors stage for a camera the projection did not run for): all N.
extern "C" __global__ void sh_kernel(const int n, const int K, const int degree, const float* __restrict__ means,
    const float* __restrict__ sh, const float camx, const float camy, const float camz, float* __restrict__ rgb)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float dx = means[3 * i] - camx, dy = means[3 * i + 1] - camy, dz = means[3 * i + 2] - camz;
    const float nn = dx * dx + dy * dy + dz * dz;
    const float inorm = nn > 0.f ? rsqrtf(nn) : 0.f;
    dx *= inorm; dy *= inorm; dz *= inorm;
    const float* co = sh + (long long)i * K * 3;
    sh_to_rgb(co, degree, dx, dy, dz, rgb + 3 * i);
}

// ---------------------------------------------------------------------------------------------
// 4. binning: gather tile counts into depth order; write one (tile, Gaussian) pair per
// intersection, Gaussians in depth order; after the stable tile sort, find each tile's range.

extern "C" __global__ void gather_counts_kernel(const int n, const long long* __restrict__ order,
    const int* __restrict__ counts, long long* __restrict__ sorted_counts)
{
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r < n) sorted_counts[r] = (long long)counts[order[r]];
}

// One thread per depth rank r in [first, last): consecutive threads write consecutive pairs.
template <typename Key>
__device__ __forceinline__ void duplicate(const int first, const int last, const long long* __restrict__ order,
    const long long* __restrict__ ends, const long long base, const int* __restrict__ counts,
    const float4* __restrict__ geo, const float4* __restrict__ con, const float4* __restrict__ rchs,
    const int* __restrict__ radii, const int tiles_x, const int tiles_y, const int H, Key* __restrict__ keys,
    int* __restrict__ gids)
{
    const int r = first + blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= last) return;
    const int g = (int)order[r];
    const int cnt = counts[g];
    if (cnt == 0) return;
    const long long end = ends[r] - base;
    long long k = end - cnt;
    const float4 p = geo[g], cq = con[g];
    Reach q;
    tile_rect(q, p.x, p.y, radii[g], tiles_x, tiles_y);
    set_reach(q, cq.y, cq.z, rchs[g]);
    for (int ty = q.y0; ty < q.y1; ++ty) {
        int lo, hi;
        row_span(q, ty, H, lo, hi);
        for (int tx = lo; tx < hi && k < end; ++tx, ++k) {
            keys[k] = (Key)(ty * tiles_x + tx);
            gids[k] = g;
        }
    }
}

extern "C" __global__ void duplicate16_kernel(const int first, const int last, const long long* __restrict__ order,
    const long long* __restrict__ ends, const long long base, const int* __restrict__ counts,
    const float4* __restrict__ geo, const float4* __restrict__ con, const float4* __restrict__ rchs,
    const int* __restrict__ radii, const int tiles_x, const int tiles_y, const int H,
    unsigned short* __restrict__ keys, int* __restrict__ gids)
{
    duplicate<unsigned short>(first, last, order, ends, base, counts, geo, con, rchs, radii, tiles_x, tiles_y, H,
                              keys, gids);
}

extern "C" __global__ void duplicate32_kernel(const int first, const int last, const long long* __restrict__ order,
    const long long* __restrict__ ends, const long long base, const int* __restrict__ counts,
    const float4* __restrict__ geo, const float4* __restrict__ con, const float4* __restrict__ rchs,
    const int* __restrict__ radii, const int tiles_x, const int tiles_y, const int H,
    unsigned int* __restrict__ keys, int* __restrict__ gids)
{
    duplicate<unsigned int>(first, last, order, ends, base, counts, geo, con, rchs, radii, tiles_x, tiles_y, H,
                            keys, gids);
}

// offsets[t] = first index whose tile is >= t (offsets has n_tiles + 1 entries; m >= 1)
template <typename Key>
__device__ __forceinline__ void ranges(const int m, const int n_tiles, const Key* __restrict__ keys,
    const long long* __restrict__ perm, int* __restrict__ offsets)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m) return;
    const int t = (int)keys[perm[i]];
    const int prev = i == 0 ? -1 : (int)keys[perm[i - 1]];
    for (int u = prev + 1; u <= t; ++u) offsets[u] = i;
    if (i == m - 1)
        for (int u = t + 1; u <= n_tiles; ++u) offsets[u] = m;
}

extern "C" __global__ void ranges16_kernel(const int m, const int n_tiles, const unsigned short* __restrict__ keys,
    const long long* __restrict__ perm, int* __restrict__ offsets)
{
    ranges<unsigned short>(m, n_tiles, keys, perm, offsets);
}

extern "C" __global__ void ranges32_kernel(const int m, const int n_tiles, const unsigned int* __restrict__ keys,
    const long long* __restrict__ perm, int* __restrict__ offsets)
{
    ranges<unsigned int>(m, n_tiles, keys, perm, offsets);
}

extern "C" __global__ void permute_ids_kernel(const int m, const long long* __restrict__ perm, const int* __restrict__ gids,
    int* __restrict__ out)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < m) out[i] = gids[perm[i]];
}

// ---------------------------------------------------------------------------------------------
// 5. blend: one 256-thread block per 16x16 tile; warp w owns the 8x4 pixels at ((w & 1) * 8,
// (w >> 1) * 4). A batch of 256 Gaussians is staged in shared memory with, per Gaussian, the
// mask of the warps whose pixels its ellipse sigma <= ln(255 opacity) (+ margins) can reach,
// found band by band like row_span; each warp then walks only its own entries, in order. Per
// pixel the arithmetic is gsplat's, in gsplat's order.
// first/last: this chunk is the first (start from T = 1) / last (write the image) of the view.

__device__ __forceinline__ unsigned int warp_mask(const float4 p, const float4 q, const float4 r, const float tx0,
    const float ty0)
{
    unsigned int m = 0;
    if (r.x < 0.f) {                                   // no ellipse constants: the alpha >= 1/255 box
        const unsigned int cols = (fabsf(p.x - (tx0 + 4.f)) <= p.z + 3.5f ? 0x55u : 0u)
                                | (fabsf(p.x - (tx0 + 12.f)) <= p.z + 3.5f ? 0xaau : 0u);
        unsigned int rows = 0;
        for (int j = 0; j < 4; ++j)
            if (fabsf(p.y - (ty0 + 2.f + 4.f * (float)j)) <= p.w + 1.5f) rows |= 3u << (2 * j);
        return cols & rows;
    }
    const float det = q.x * q.z - q.y * q.y;
    for (int j = 0; j < 4; ++j) {
        const float e0 = fmaxf(ty0 + 4.f * (float)j + 0.4f - p.y, -r.x);
        const float e1 = fminf(ty0 + 4.f * (float)j + 3.6f - p.y, r.x);
        if (!(e0 <= e1)) continue;
        const float yr = fminf(fmaxf(-r.y, e0), e1), yl = fminf(fmaxf(r.y, e0), e1);
        const float XR = p.x + (-q.y * yr + sqrtf(fmaxf(0.f, r.z - det * yr * yr))) * r.w + 0.1f;
        const float XL = p.x + (-q.y * yl - sqrtf(fmaxf(0.f, r.z - det * yl * yl))) * r.w - 0.1f;
        if (XR >= tx0 + 0.5f && XL <= tx0 + 7.5f) m |= 1u << (2 * j);
        if (XR >= tx0 + 8.5f && XL <= tx0 + 15.5f) m |= 2u << (2 * j);
    }
    return m;
}

extern "C" __global__ void __launch_bounds__(256) blend_kernel(const int* __restrict__ offsets,
    const int* __restrict__ ids, const float4* __restrict__ geo, const float4* __restrict__ con,
    const float4* __restrict__ rchs, const float* __restrict__ colors, const int W, const int H, const int tiles_x,
    const int first, const int last, const float bg0, const float bg1, const float bg2,
    float* __restrict__ state_c, float* __restrict__ state_t, unsigned char* __restrict__ state_done,
    float* __restrict__ rgb, float* __restrict__ alpha_out)
{
    __shared__ float4 s_geo[256];
    __shared__ float4 s_con[256];
    __shared__ float4 s_rgb[256];
    __shared__ unsigned char s_mask[256];
    __shared__ unsigned char s_list[8][256];
    const int tile = blockIdx.x, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int tx0 = (tile % tiles_x) * TILE, ty0 = (tile / tiles_x) * TILE;
    const int px = tx0 + (warp & 1) * 8 + (lane & 7), py = ty0 + (warp >> 1) * 4 + (lane >> 3);
    const bool inside = px < W && py < H;
    const int pix = py * W + px;
    float T = 1.f, c0 = 0.f, c1 = 0.f, c2 = 0.f;
    bool done = !inside;
    if (!first && inside) {
        T = state_t[pix]; c0 = state_c[3 * pix]; c1 = state_c[3 * pix + 1]; c2 = state_c[3 * pix + 2];
        done = state_done[pix] != 0;
    }
    const float fx = (float)px + 0.5f, fy = (float)py + 0.5f;
    const unsigned int lanes_before = (1u << lane) - 1u;
    const int start = offsets[tile], end = offsets[tile + 1];
    for (int b = start; b < end; b += 256) {
        if (__syncthreads_count(done) == 256) break;              // every pixel of the tile is saturated
        const int idx = b + tid;
        if (idx < end) {
            const int g = ids[idx];
            const float4 p = geo[g], q = con[g];
            s_geo[tid] = p;
            s_con[tid] = q;
            s_rgb[tid] = make_float4(colors[3 * g], colors[3 * g + 1], colors[3 * g + 2], 0.f);
            s_mask[tid] = (unsigned char)warp_mask(p, q, rchs[g], (float)tx0, (float)ty0);
        }
        __syncthreads();
        const int cnt = min(256, end - b);
        if (!__all_sync(0xffffffffu, done)) {
            int n_mine = 0;                                        // this warp's entries, in order
            for (int c = 0; c < cnt; c += 32) {
                const int j = c + lane;
                const bool hit = j < cnt && ((s_mask[j] >> warp) & 1u);
                const unsigned int ballot = __ballot_sync(0xffffffffu, hit);
                if (hit) s_list[warp][n_mine + __popc(ballot & lanes_before)] = (unsigned char)j;
                n_mine += __popc(ballot);
            }
            __syncwarp();
            if (!done) {
                for (int k = 0; k < n_mine; ++k) {
                    const int j = s_list[warp][k];
                    const float4 p = s_geo[j];
                    const float4 q = s_con[j];
                    const float dx = p.x - fx, dy = p.y - fy;
                    const float sigma = 0.5f * (q.x * dx * dx + q.z * dy * dy) + q.y * dx * dy;
                    const float alpha = fminf(0.999f, q.w * __expf(-sigma));
                    if (sigma < 0.f || alpha < 1.f / 255.f) continue;
                    const float next_T = T * (1.f - alpha);
                    if (next_T <= 1e-4f) { done = true; break; }
                    const float w = alpha * T;
                    const float4 col = s_rgb[j];
                    c0 += col.x * w; c1 += col.y * w; c2 += col.z * w;
                    T = next_T;
                }
            }
        }
        __syncthreads();                                           // before the next batch overwrites shared
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
"""

_module = None
_functions: dict = {}


def _kernel(name: str):
    """A kernel of the module, compiled on first use (CuPy caches the binary on disk)."""
    global _module
    fn = _functions.get(name)
    if fn is None:
        if _module is None:
            _module = cp.RawModule(code=_SOURCE, options=("-std=c++17",))
        fn = _functions[name] = _module.get_function(name)
    return fn


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

    ``means2d`` and ``conics`` are views into ``geo`` (x, y, reach-x, reach-y) and ``con``
    (a, b, c, opacity); ``rch`` holds the constants of each Gaussian's tile reach. ``counts`` is the number of tiles each Gaussian reaches (0: culled, or
    too faint to reach 1/255 anywhere) and ``depth_keys`` its depth bits (all ones when it
    reaches no tile), the key of the global depth sort. Rows with ``radii == 0`` hold no
    meaningful ``means2d``/``conics`` (the kernel skips writing them).
    """

    geo: object = None
    con: object = None
    rch: object = None
    counts: object = None
    depth_keys: object = None
    colors: object = None
    camera_key: tuple = ()


@dataclass
class GpuTileBins(TileBins):
    """:class:`TileBins` of one view. When the view needs several depth chunks, ``chunks`` holds
    the bins of each (front to back) and the base fields are those of the first."""

    chunks: list = field(default_factory=list)


def _camera_key(camera: Camera) -> tuple:
    return (camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy,
            camera.world_to_camera.tobytes())


# --------------------------------------------------------------------------- upload / download

def upload(scene) -> Gaussians:
    g = stages.activate(scene)
    return Gaussians(cp.asarray(g.means), cp.asarray(g.quats), cp.asarray(g.scales), cp.asarray(g.opacities),
                     cp.ascontiguousarray(cp.asarray(g.sh)), g.sh_degree)


def download(rgb, alpha):
    return cp.asnumpy(rgb), cp.asnumpy(alpha)


# --------------------------------------------------------------------------- 2. project (+ 3. colour)

def project(g: Gaussians, camera: Camera) -> GpuProjection:
    if camera.is_ortho:
        raise NotImplementedError("the gpu backend does not render orthographic cameras yet")
    n = len(g)
    tiles_x, tiles_y = stages.tile_grid(camera)
    geo, con = cp.empty((n, 4), f32), cp.empty((n, 4), f32)
    out = GpuProjection(geo[:, :2], con[:, :3], cp.empty(n, f32), cp.empty(n, np.int32), geo=geo, con=con,
                        rch=cp.empty((n, 4), f32),
                        counts=cp.empty(n, np.int32), depth_keys=cp.empty(n, np.uint32),
                        colors=cp.empty((n, 3), f32), camera_key=_camera_key(camera))
    if n:
        R = camera.world_to_camera[:3, :3]
        t = camera.world_to_camera[:3, 3]
        c = camera.center
        _kernel("project_kernel")(_grid(n), (BLOCK,), (
            np.int32(n), g.means, g.quats, g.scales, g.opacities, g.sh, np.int32(g.sh.shape[1]),
            np.int32(g.sh_degree), *[f32(v) for v in R.ravel()], *[f32(v) for v in t],
            f32(camera.fx), f32(camera.fy), f32(camera.cx), f32(camera.cy), *[f32(v) for v in c],
            np.int32(camera.width), np.int32(camera.height), np.int32(tiles_x), np.int32(tiles_y),
            geo, con, out.depths, out.radii, out.colors, out.counts, out.depth_keys, out.rch))
    # the colour was computed with the projection: sh_colors hands it out for this camera
    g._gpu_colors = (out.camera_key, out.colors)
    return out


def sh_colors(g: Gaussians, camera: Camera):
    """RGB per Gaussian. After ``project`` for the same camera this is the colour that kernel
    computed (for the Gaussians that reach a pixel; 0 for the others, which no pixel uses)."""
    cached = getattr(g, "_gpu_colors", None)
    if cached is not None and cached[0] == _camera_key(camera):
        return cached[1]
    n = len(g)
    out = cp.empty((n, 3), f32)
    if n:
        c = camera.center
        _kernel("sh_kernel")(_grid(n), (BLOCK,), (np.int32(n), np.int32(g.sh.shape[1]), np.int32(g.sh_degree),
                                                  g.means, g.sh, f32(c[0]), f32(c[1]), f32(c[2]), out))
    return out


# --------------------------------------------------------------------------- 4. bin

def _bins_for(p: GpuProjection, order, ends, first: int, last: int, base: int, m: int,
              tiles_x: int, tiles_y: int, height: int) -> TileBins:
    """Bin the Gaussians of depth ranks [first, last), whose ``m`` intersections start at ``base``."""
    n_tiles = tiles_x * tiles_y
    if m == 0:
        return TileBins(tiles_x, tiles_y, cp.empty(0, np.int32), cp.zeros(n_tiles + 1, np.int32))
    wide = n_tiles > 65536
    keys = cp.empty(m, np.uint32 if wide else np.uint16)
    gids = cp.empty(m, np.int32)
    _kernel("duplicate32_kernel" if wide else "duplicate16_kernel")(_grid(last - first), (BLOCK,), (
        np.int32(first), np.int32(last), order, ends, np.int64(base), p.counts, p.geo, p.con, p.rch, p.radii,
        np.int32(tiles_x), np.int32(tiles_y), np.int32(height), keys, gids))
    perm = cp.argsort(keys)                         # stable radix sort of 16 (or 32) bit tile ids
    offsets = cp.empty(n_tiles + 1, np.int32)
    _kernel("ranges32_kernel" if wide else "ranges16_kernel")(_grid(m), (BLOCK,), (
        np.int32(m), np.int32(n_tiles), keys, perm, offsets))
    ids = cp.empty(m, np.int32)
    _kernel("permute_ids_kernel")(_grid(m), (BLOCK,), (np.int32(m), perm, gids, ids))
    return TileBins(tiles_x, tiles_y, ids, offsets)


def bin_tiles(p: GpuProjection, camera: Camera) -> GpuTileBins:
    tiles_x, tiles_y = stages.tile_grid(camera)
    n = int(p.radii.shape[0])
    n_tiles = tiles_x * tiles_y
    if n == 0:
        empty = TileBins(tiles_x, tiles_y, cp.empty(0, np.int32), cp.zeros(n_tiles + 1, np.int32))
        return GpuTileBins(tiles_x, tiles_y, empty.gaussian_ids, empty.offsets, chunks=[empty])
    order = cp.argsort(p.depth_keys)                # front to back; ties keep index order (stable)
    sorted_counts = cp.empty(n, np.int64)
    _kernel("gather_counts_kernel")(_grid(n), (BLOCK,), (np.int32(n), order, p.counts, sorted_counts))
    ends = cp.cumsum(sorted_counts)                 # int64: a view may hold more than 2**31 pairs
    del sorted_counts
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
    """Front-to-back compositing. Opacities are read from the projection's packed copy."""
    W, H = camera.width, camera.height
    rgb = cp.empty((H, W, 3), f32)
    alpha = cp.empty((H, W), f32)
    chunks = getattr(bins, "chunks", None) or [bins]
    multi = len(chunks) > 1
    state_c = cp.empty((H, W, 3), f32) if multi else rgb
    state_t = cp.empty((H, W), f32) if multi else alpha
    state_done = cp.empty((H, W), np.uint8) if multi else cp.empty(1, np.uint8)
    colors = cp.ascontiguousarray(colors, dtype=f32)
    bg = [f32(v) for v in background]
    for k, b in enumerate(chunks):
        _kernel("blend_kernel")((b.tiles_x * b.tiles_y,), (BLOCK,), (
            b.offsets, b.gaussian_ids, p.geo, p.con, p.rch, colors, np.int32(W), np.int32(H), np.int32(b.tiles_x),
            np.int32(k == 0), np.int32(k == len(chunks) - 1), *bg, state_c, state_t, state_done, rgb, alpha))
    return rgb, alpha
