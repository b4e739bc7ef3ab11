// Stage 5: blend. One TILE x TILE block of threads per tile; warp w owns the WARP_W x WARP_H pixels
// at ((w % WARPS_X) WARP_W, (w / WARPS_X) WARP_H). A batch of TILE^2 Gaussians is staged in shared
// memory with, per Gaussian, the mask of the warps whose pixels its ellipse
// sigma <= ln(opacity / ALPHA_MIN) (+ margins) can reach, found band by band like row_span in
// reach.cuh; each warp then walks only its own entries, in order, reading the next entry from
// shared memory while it blends the current one. The whole tile leaves as soon as every pixel is
// saturated (__syncthreads_count). Per pixel the arithmetic is gsplat 1.4.0's
// rasterize_to_pixels_fwd, in its order (__expf like gsplat). Everything a warp skips is something
// the per-pixel rule (sigma < 0 or alpha < ALPHA_MIN) would have skipped.
// first/last: this chunk is the first (start from T = 1) / last (write the image) of the view.
// Compile-time constants (TILE, ALPHA_MIN, ALPHA_MAX, T_MIN) come from cuda.defines (backends/cuda/__init__.py).

constexpr int BLOCK = TILE * TILE;
constexpr int WARP_W = 8, WARP_H = 4;                 // the pixels of one warp
constexpr int WARPS_X = TILE / WARP_W, WARPS = BLOCK / 32;
constexpr float MASK_MARGIN = 0.1f;                   // pixels, the per-warp ellipse test's safety margin
constexpr int MIN_BLOCKS = 6;                         // blocks per SM the register budget must allow (<= 40 each)
static_assert(WARP_W * WARP_H == 32 && TILE % WARP_W == 0 && TILE % WARP_H == 0, "warp layout");
static_assert(WARPS <= 8, "the warp mask is one byte");

// Bit w set: the ellipse sigma <= s of Gaussian (p = mean x, y, box half-widths; q = conic; r =
// reach_constants) may reach a pixel centre of warp w in the tile at (tx0, ty0).
__device__ __forceinline__ unsigned int warp_mask(const float4 p, const float4 q, const float4 r, const float tx0,
    const float ty0)
{
    unsigned int m = 0;
    if (r.x < 0.f) {                                   // no ellipse constants: the box around the mean
        unsigned int cols = 0, rows = 0;
        #pragma unroll
        for (int i = 0; i < WARPS_X; ++i) {
            const float centre = tx0 + (float)(i * WARP_W) + 0.5f * WARP_W;
            if (fabsf(p.x - centre) <= p.z + 0.5f * (WARP_W - 1)) cols |= 1u << i;
        }
        #pragma unroll
        for (int j = 0; j < TILE / WARP_H; ++j) {
            const float centre = ty0 + (float)(j * WARP_H) + 0.5f * WARP_H;
            if (fabsf(p.y - centre) <= p.w + 0.5f * (WARP_H - 1)) rows |= 1u << j;
        }
        #pragma unroll
        for (int w = 0; w < WARPS; ++w)
            if (((cols >> (w % WARPS_X)) & 1u) && ((rows >> (w / WARPS_X)) & 1u)) m |= 1u << w;
        return m;
    }
    const float det = q.x * q.z - q.y * q.y;
    #pragma unroll
    for (int j = 0; j < TILE / WARP_H; ++j) {
        // the band of pixel-centre rows of warp row j, relative to the mean
        const float e0 = fmaxf(ty0 + (float)(j * WARP_H) + (0.5f - MASK_MARGIN) - p.y, -r.x);
        const float e1 = fminf(ty0 + (float)(j * WARP_H) + (WARP_H - 0.5f + MASK_MARGIN) - p.y, r.x);
        if (!(e0 <= e1)) continue;
        const float yr = fminf(fmaxf(-r.y, e0), e1), yl = fminf(fmaxf(r.y, e0), e1);
        const float XR = p.x + (-q.y * yr + sqrtf(fmaxf(0.f, r.z - det * yr * yr))) * r.w + MASK_MARGIN;
        const float XL = p.x + (-q.y * yl - sqrtf(fmaxf(0.f, r.z - det * yl * yl))) * r.w - MASK_MARGIN;
        #pragma unroll
        for (int i = 0; i < WARPS_X; ++i)
            if (XR >= tx0 + (float)(i * WARP_W) + 0.5f && XL <= tx0 + (float)(i * WARP_W) + (WARP_W - 0.5f))
                m |= 1u << (j * WARPS_X + i);
    }
    return m;
}

// rec: the projection's records (project.cu; geo, con and rch are read from them); colors: row g at
// colors[g * color_stride] (the records' own rgb when the caller blends the projection's colours:
// then a Gaussian's entry is two 32-byte sectors and its opacity).
extern "C" __global__ void __launch_bounds__(BLOCK, MIN_BLOCKS) blend_kernel(const int* __restrict__ offsets,
    const int* __restrict__ ids, const float4* __restrict__ rec, const float* __restrict__ colors,
    const long long color_stride, const float* __restrict__ opacities,
    const int W, const int H, const int tiles_x, const int first, const int last, const float bg0,
    const float bg1, const float bg2, float* __restrict__ state_c, float* __restrict__ state_t,
    unsigned char* __restrict__ state_done, float* __restrict__ rgb, float* __restrict__ alpha_out)
{
    __shared__ float4 s_geo[BLOCK];
    __shared__ float4 s_con[BLOCK];
    __shared__ float4 s_rgb[BLOCK];
    __shared__ unsigned char s_mask[BLOCK];
    __shared__ unsigned char s_list[WARPS][BLOCK];
    const int tile = blockIdx.x, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int tx0 = (tile % tiles_x) * TILE, ty0 = (tile / tiles_x) * TILE;
    const int px = tx0 + (warp % WARPS_X) * WARP_W + lane % WARP_W;
    const int py = ty0 + (warp / WARPS_X) * WARP_H + lane / WARP_W;
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
    for (int b = start; b < end; b += BLOCK) {
        if (__syncthreads_count(done) == BLOCK) break;            // every pixel of the tile is saturated
        const int idx = b + tid;
        if (idx < end) {
            const int g = ids[idx];
            const float4* rc = rec + REC * (long long)g;
            const float4 p = rc[0], q = rc[1];
            const float* col = colors + g * color_stride;
            s_geo[tid] = p;
            s_con[tid] = make_float4(q.x, q.y, q.z, opacities[g]);
            s_rgb[tid] = make_float4(col[0], col[1], col[2], 0.f);
            s_mask[tid] = (unsigned char)warp_mask(p, q, rc[2], (float)tx0, (float)ty0);
        }
        __syncthreads();
        const int cnt = min(BLOCK, end - b);
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
            if (!done && n_mine > 0) {
                int j = s_list[warp][0];                   // entry k, while entry k + 1 is read
                float4 p = s_geo[j], q = s_con[j];
                for (int k = 0; k < n_mine; ++k) {
                    const int jn = s_list[warp][min(k + 1, n_mine - 1)];
                    const float4 pn = s_geo[jn], qn = s_con[jn];
                    const float dx = p.x - fx, dy = p.y - fy;
                    const float sigma = 0.5f * (q.x * dx * dx + q.z * dy * dy) + q.y * dx * dy;
                    const float alpha = fminf(ALPHA_MAX, q.w * __expf(-sigma));
                    if (!(sigma < 0.f || alpha < ALPHA_MIN)) {
                        const float next_T = T * (1.f - alpha);
                        if (next_T <= T_MIN) { done = true; break; }
                        const float w = alpha * T;
                        const float4 col = s_rgb[j];
                        c0 += col.x * w; c1 += col.y * w; c2 += col.z * w;
                        T = next_T;
                    }
                    j = jn; p = pn; q = qn;
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

// After stage 5, the supersampling resolve (stages.downscale): output pixel (x, y) is the mean of the
// k x k block at (k x, k y), summed block row by block row like the NumPy reference, then times
// scale = float32(1 / k^2); rgb (3 floats a pixel) and alpha alike. One thread per output pixel.
extern "C" __global__ void downscale_kernel(const int w, const int h, const int src_w, const int k,
    const float scale, const float* __restrict__ rgb, const float* __restrict__ alpha, float* __restrict__ out_rgb,
    float* __restrict__ out_alpha)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= w * h) return;
    const int x = i % w, y = i / w;
    float r = 0.f, g = 0.f, b = 0.f, a = 0.f;
    for (int dy = 0; dy < k; ++dy)
        for (int dx = 0; dx < k; ++dx) {
            const long long s = (long long)(k * y + dy) * src_w + (k * x + dx);
            r += rgb[3 * s];
            g += rgb[3 * s + 1];
            b += rgb[3 * s + 2];
            a += alpha[s];
        }
    out_rgb[3 * i] = r * scale;
    out_rgb[3 * i + 1] = g * scale;
    out_rgb[3 * i + 2] = b * scale;
    out_alpha[i] = a * scale;
}

// 8-bit RGB for the video (imageio.to_uint8): clamp to [0, 1], times full (imageio.U8_MAX), plus 0.5,
// truncated; each step rounded on its own like NumPy's float32 (no fused multiply-add).
extern "C" __global__ void to_uint8_kernel(const long long n, const float full, const float* __restrict__ x,
    unsigned char* __restrict__ out)
{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = fminf(fmaxf(x[i], 0.f), 1.f);
    out[i] = (unsigned char)__fadd_rn(__fmul_rn(v, full), 0.5f);
}
