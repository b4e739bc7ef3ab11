// The SH colour of rendering.md: max(sum_k basis_k(dir) * coeff_k + 0.5, 0) at the unit direction
// (x, y, z), degrees 0-3, in the basis and order of rasterizer/sh.py (INRIA's); the constants
// SH_C0 ... SH_C3_6 are sh.py's, handed over as compile-time defines. The only SH evaluation in CUDA.
#pragma once

// co: the K x 3 coefficients of one Gaussian, coefficient k's channel c at co[(3 k + c) * step]
// (row k = coefficient k, columns R, G, B). The GPU backend stores them channel-major across
// Gaussians (step = N: the threads of a warp, which own consecutive Gaussians, read consecutive
// floats); with step 1 and rows 16-byte aligned (3 K a multiple of 4, aligned base) they are read
// as float4. Either way the sums are the same, in the same order.
__device__ __forceinline__ void sh_to_rgb(const float* __restrict__ co, const long long step, const int K,
    const int degree, const float x, const float y, const float z, float* __restrict__ out)
{
    float b[16];
    int n = 1;
    b[0] = SH_C0;
    if (degree >= 1) {
        b[1] = -SH_C1 * y; b[2] = SH_C1 * z; b[3] = -SH_C1 * x;
        n = 4;
        if (degree >= 2) {
            const float xx = x * x, yy = y * y, zz = z * z;
            b[4] = SH_C2_0 * (x * y); b[5] = SH_C2_1 * (y * z); b[6] = SH_C2_2 * (2.f * zz - xx - yy);
            b[7] = SH_C2_3 * (x * z); b[8] = SH_C2_4 * (xx - yy);
            n = 9;
            if (degree >= 3) {
                b[9] = SH_C3_0 * y * (3.f * xx - yy); b[10] = SH_C3_1 * (x * y) * z;
                b[11] = SH_C3_2 * y * (4.f * zz - xx - yy); b[12] = SH_C3_3 * z * (2.f * zz - 3.f * xx - 3.f * yy);
                b[13] = SH_C3_4 * x * (4.f * zz - xx - yy); b[14] = SH_C3_5 * z * (xx - yy);
                b[15] = SH_C3_6 * x * (xx - 3.f * yy);
                n = 16;
            }
        }
    }
    float acc[3] = {0.f, 0.f, 0.f};
    if (step == 1 && ((3 * K) & 3) == 0 && (reinterpret_cast<unsigned long long>(co) & 15) == 0) {
        const float4* co4 = reinterpret_cast<const float4*>(co);
        #pragma unroll
        for (int q = 0; q < 12; ++q) {
            if (4 * q < 3 * n) {                         // 3 K >= 3 n is a multiple of 4: inside the row
                const float4 v = co4[q];
                const float e[4] = {v.x, v.y, v.z, v.w};
                #pragma unroll
                for (int u = 0; u < 4; ++u)
                    if (4 * q + u < 3 * n) acc[(4 * q + u) % 3] += b[(4 * q + u) / 3] * e[u];
            }
        }
    } else {
        #pragma unroll
        for (int k = 0; k < 16; ++k) {
            if (k < n) {
                acc[0] += b[k] * co[(3 * k) * step]; acc[1] += b[k] * co[(3 * k + 1) * step];
                acc[2] += b[k] * co[(3 * k + 2) * step];
            }
        }
    }
    out[0] = fmaxf(acc[0] + 0.5f, 0.f); out[1] = fmaxf(acc[1] + 0.5f, 0.f); out[2] = fmaxf(acc[2] + 0.5f, 0.f);
}
