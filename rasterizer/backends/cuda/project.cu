// Stages 2 + 3: gsplat 1.4.0's fully_fused_projection (pinhole or ortho) with, fused into it, the SH
// colour of the Gaussians that reach a pixel and the number of tiles each reaches (reach.cuh).
// One thread per Gaussian. Everything the later stages read of Gaussian i is one 64-byte record of
// REC float4s at rec[REC i]: geo = (x, y, box half-widths), con = (conic a, b, c, opacity),
// rch = reach_constants, rgb = (r, g, b, radius as int bits); binning and blending, which gather by
// Gaussian id, then read two 32-byte sectors instead of five arrays. Constants (NEAR, FAR,
// FRUSTUM_CLAMP, EPS2D, LAMBDA_MIN, RADIUS_SIGMAS, ALPHA_MIN, TILE, SH_*, REC) are compile-time
// defines from cuda.defines (backends/cuda/__init__.py).
#include "reach.cuh"
#include "sh.cuh"

extern "C" __global__ void project_kernel(const int n, const float* __restrict__ means, const float* __restrict__ quats,
    const float* __restrict__ scales, const float* __restrict__ opacities, const float* __restrict__ sh,
    const long long sh_row, const long long sh_step, const int K, const int degree,
    const float r00, const float r01, const float r02, const float r10, const float r11, const float r12,
    const float r20, const float r21, const float r22, const float t0, const float t1, const float t2,
    const float fx, const float fy, const float cx, const float cy, const int ortho, const float camx,
    const float camy, const float camz, const int W, const int H, const int tiles_x, const int tiles_y,
    float4* __restrict__ rec, float* __restrict__ depths, int* __restrict__ radii, int* __restrict__ counts,
    unsigned int* __restrict__ depth_keys)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float4* __restrict__ rc = rec + REC * (long long)i;      // this Gaussian's record: geo, con, rch, rgb
    // culled: radius 0, no tiles, sorted last, colour 0 (written only on these paths)
    #define CULL do { radii[i] = 0; counts[i] = 0; depth_keys[i] = 0xffffffffu; \
        rc[3] = make_float4(0.f, 0.f, 0.f, __int_as_float(0)); } while (0)
    const float px = means[3 * i], py = means[3 * i + 1], pz = means[3 * i + 2];
    const float x = r00 * px + r01 * py + r02 * pz + t0;
    const float y = r10 * px + r11 * py + r12 * pz + t1;
    const float z = r20 * px + r21 * py + r22 * pz + t2;
    depths[i] = z;
    if (!(z >= NEAR && z <= FAR)) { CULL; return; }               // near / far (and NaN), ortho too
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
    float j00, j02, j11, j12, mx, my;
    if (ortho) {
        // ortho_proj: constant Jacobian, fx and fy in pixels per world unit
        j00 = fx; j02 = 0.f; j11 = fy; j12 = 0.f;
        mx = fx * x + cx; my = fy * y + cy;
    } else {
        // persp_proj: the Jacobian at the position clamped to (1 + FRUSTUM_CLAMP) x the frustum
        const float tan_fovx = 0.5f * (float)W / fx, tan_fovy = 0.5f * (float)H / fy;
        const float lim_x_pos = ((float)W - cx) / fx + FRUSTUM_CLAMP * tan_fovx;
        const float lim_x_neg = cx / fx + FRUSTUM_CLAMP * tan_fovx;
        const float lim_y_pos = ((float)H - cy) / fy + FRUSTUM_CLAMP * tan_fovy;
        const float lim_y_neg = cy / fy + FRUSTUM_CLAMP * tan_fovy;
        const float rz = 1.f / z, rz2 = rz * rz;
        const float tx = z * fminf(lim_x_pos, fmaxf(-lim_x_neg, x * rz));
        const float ty = z * fminf(lim_y_pos, fmaxf(-lim_y_neg, y * rz));
        j00 = fx * rz; j02 = -fx * tx * rz2; j11 = fy * rz; j12 = -fy * ty * rz2;
        mx = fx * x * rz + cx; my = fy * y * rz + cy;             // the unclamped mean
    }
    // add_blur: EPS2D on the diagonal ("classic": opacity unchanged)
    const float a = j00 * (j00 * c00 + j02 * c02) + j02 * (j00 * c02 + j02 * c22) + EPS2D;
    const float b = j00 * (j11 * c01 + j12 * c02) + j02 * (j11 * c12 + j12 * c22);
    const float c = j11 * (j11 * c11 + j12 * c12) + j12 * (j11 * c12 + j12 * c22) + EPS2D;
    const float det = a * c - b * b;
    if (!(det > 0.f)) { CULL; return; }
    const float inv_det = 1.f / det;
    const float mid = 0.5f * (a + c);
    const float lam = mid + sqrtf(fmaxf(LAMBDA_MIN, mid * mid - det));
    const float radius = ceilf(RADIUS_SIGMAS * sqrtf(lam));
    if (!(radius > 0.f) || mx + radius <= 0.f || mx - radius >= (float)W || my + radius <= 0.f
        || my - radius >= (float)H) { CULL; return; }
    const float ca = c * inv_det, cb = -b * inv_det, cc = a * inv_det;
    const float opac = opacities[i];
    radii[i] = (int)radius;
    rc[1] = make_float4(ca, cb, cc, opac);
    if (!(opac >= ALPHA_MIN)) {                                   // never reaches alpha ALPHA_MIN
        counts[i] = 0; depth_keys[i] = 0xffffffffu;
        rc[0] = make_float4(mx, my, 0.f, 0.f);
        rc[3] = make_float4(0.f, 0.f, 0.f, __int_as_float((int)radius));
        return;
    }
    const float4 rch = reach_constants(ca, cb, cc, opac);
    rc[2] = rch;
    Reach q;
    tile_rect(q, mx, my, (int)radius, tiles_x, tiles_y);
    set_reach(q, cb, cc, rch);
    const int cnt = reach_count(q, H);
    // alpha >= ALPHA_MIN box (blend's per-warp lists): |dx| <= sqrt(2 s a), |dy| <= sqrt(2 s c), + 1 px
    const float s = fmaxf(sigma_cut(opac), 0.f);
    rc[0] = make_float4(mx, my, sqrtf(2.f * s * a) + 1.f, sqrtf(2.f * s * c) + 1.f);
    counts[i] = cnt;
    if (cnt == 0) {
        depth_keys[i] = 0xffffffffu;
        rc[3] = make_float4(0.f, 0.f, 0.f, __int_as_float((int)radius));
        return;
    }
    depth_keys[i] = __float_as_uint(z);                           // z > 0: float order = uint order
    // SH colour of the Gaussians that reach a pixel, seen from the camera centre (ortho too, as gsplat)
    float dx = px - camx, dy = py - camy, dz = pz - camz;
    const float inorm = rsqrtf(dx * dx + dy * dy + dz * dz);
    dx *= inorm; dy *= inorm; dz *= inorm;
    float col[3];
    sh_to_rgb(sh + i * sh_row, sh_step, K, degree, dx, dy, dz, col);
    rc[3] = make_float4(col[0], col[1], col[2], __int_as_float((int)radius));
    #undef CULL
}

// SH colour alone (the sh_colors stage): all N Gaussians.
extern "C" __global__ void sh_kernel(const int n, const int K, const int degree, const float* __restrict__ means,
    const float* __restrict__ sh, const long long sh_row, const long long sh_step, const float camx,
    const float camy, const float camz, float* __restrict__ rgb)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float dx = means[3 * i] - camx, dy = means[3 * i + 1] - camy, dz = means[3 * i + 2] - camz;
    const float nn = dx * dx + dy * dy + dz * dz;
    const float inorm = nn > 0.f ? rsqrtf(nn) : 0.f;
    dx *= inorm; dy *= inorm; dz *= inorm;
    sh_to_rgb(sh + i * sh_row, sh_step, K, degree, dx, dy, dz, rgb + 3 * i);
}
