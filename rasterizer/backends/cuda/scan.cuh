// Warp- and block-wide scans shared by bin.cu and sort.cu.
#pragma once

// Inclusive prefix sum of x over the 32 lanes of a warp (all lanes active).
template <typename T>
__device__ __forceinline__ T warp_inclusive_scan(T x)
{
    const int lane = threadIdx.x & 31;
    #pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        const T y = __shfl_up_sync(0xffffffffu, x, d);
        if (lane >= d) x += y;
    }
    return x;
}

// Exclusive prefix sum of v over a block of THREADS threads; *total gets the sum. Uses s_warp[32].
template <typename T, int THREADS>
__device__ __forceinline__ T block_exclusive_scan(const T v, T* s_warp, T* total)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const T x = warp_inclusive_scan(v);
    if (lane == 31) s_warp[warp] = x;
    __syncthreads();
    if (warp == 0) {
        const T w = warp_inclusive_scan<T>(lane < THREADS / 32 ? s_warp[lane] : 0);
        if (lane < THREADS / 32) s_warp[lane] = w;          // inclusive sums of the warps
    }
    __syncthreads();
    const T before = (warp ? s_warp[warp - 1] : 0) + x - v;
    *total = s_warp[THREADS / 32 - 1];
    __syncthreads();                                        // s_warp is reused by the next call
    return before;
}
