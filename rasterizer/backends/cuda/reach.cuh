// Which tiles a Gaussian reaches (shared by project.cu, which counts them, and bin.cu, which lists
// them). gsplat lists every tile of the square of side 2r around the mean; we list only the tiles of
// that rectangle where some pixel centre sees sigma <= ln(255 opacity) (+ SIGMA_MARGIN), i.e. where
// alpha >= ALPHA_MIN is possible. Everything skipped is something the per-pixel rule skips anyway.
// The projection kernel stores the per-Gaussian constants it used (rch); the duplicate kernel
// recomputes the rows from those stored values with the same correctly rounded operations (no FMA
// contraction), so both agree to the bit.
// Compile-time constants (TILE, INV_ALPHA_MIN, SIGMA_MARGIN, PIX_MARGIN) come from cuda.defines (backends/cuda/__init__.py).
#pragma once

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

// ln(opacity / ALPHA_MIN) + SIGMA_MARGIN: the sigma below which alpha >= ALPHA_MIN is possible
// (INV_ALPHA_MIN = 1 / ALPHA_MIN, rounded once)
__device__ __forceinline__ float sigma_cut(const float opacity)
{
    return __fadd_rn(logf(__fmul_rn(INV_ALPHA_MIN, opacity)), SIGMA_MARGIN);
}

// The ellipse sigma <= s, s = sigma_cut(opacity), of conic (A, B, C): |dy| <= hy; its rightmost point
// is at dy = -k, its leftmost at dy = +k. rch = (hy, k, 2 s A, 1 / A); hy < 0 means "no ellipse
// test, the whole rectangle".
__device__ __forceinline__ float4 reach_constants(const float A, const float B, const float C, const float opacity)
{
    const float s = sigma_cut(opacity);
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
    // tile tx holds the pixel centres TILE tx + 0.5 ... TILE tx + TILE - 0.5 (x / TILE is exact)
    const float flo = ceilf(__fmul_rn(__fsub_rn(XL, (float)TILE - 0.5f), 1.f / TILE));
    const float fhi = __fadd_rn(floorf(__fmul_rn(__fsub_rn(XR, 0.5f), 1.f / TILE)), 1.f);
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
