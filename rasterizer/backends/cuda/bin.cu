// Stage 4: binning. Write one (tile, Gaussian) pair per tile a Gaussian reaches (reach.cuh), Gaussians
// in depth order (the depth sort and the running sums of the tile counts are sort.cu's); after the
// stable sort on the tile id (sort.cu), find each tile's range. Sorting by depth first, then stably by
// tile, gives exactly the order of gsplat's 64-bit tile << 32 | depth sort. Small views sort here, in
// one block each.
#include "reach.cuh"
#include "scan.cuh"

constexpr int BLOCK = TILE * TILE;
constexpr int SMALL = 32;               // Gaussians reaching more tiles than this, or spanning more
constexpr int SMALL_ROWS = 16;          // tile rows than this, are listed by a whole block

// The pairs of one Gaussian, written in its order (tile rows top to bottom, tiles left to right).
template <typename Key>
__device__ __forceinline__ void write_pairs(const Reach& q, const int g, long long k, const long long end, const int H,
    const int tiles_x, Key* __restrict__ keys, int* __restrict__ gids)
{
    for (int ty = q.y0; ty < q.y1; ++ty) {
        int lo, hi;
        row_span(q, ty, H, lo, hi);
        for (int tx = lo; tx < hi && k < end; ++tx, ++k) {
            keys[k] = (Key)(ty * tiles_x + tx);
            gids[k] = g;
        }
    }
}

// Gaussian g's reach from its record (project.cu): geo, con, rch and the radius in the fourth's w,
// two 32-byte sectors.
__device__ __forceinline__ void reach_of(Reach& q, const int g, const float4* __restrict__ rec, const int tiles_x,
    const int tiles_y)
{
    const float4* rc = rec + REC * (long long)g;
    const float4 p = rc[0], cq = rc[1];
    tile_rect(q, p.x, p.y, __float_as_int(rc[3].w), tiles_x, tiles_y);
    set_reach(q, cq.y, cq.z, rc[2]);
}

// Pairs of depth rank r: the difference of the running sums (coalesced, unlike counts[order[r]]).
__device__ __forceinline__ int pairs_of(const long long* __restrict__ ends, const int r)
{
    return (int)(ends[r] - (r > 0 ? ends[r - 1] : 0ll));
}

// One thread per depth rank r in [first, last): pairs are written in depth order, consecutive
// threads writing consecutive pairs. A Gaussian reaching at most SMALL tiles over at most SMALL_ROWS
// tile rows is written by its own thread; the larger ones (near the camera, some reach every tile;
// long thin ones cross many rows) are queued in big[] for duplicate_big_kernel, so that no thread
// walks a long list alone. Key: unsigned short for up to
// 65536 tiles, unsigned int above (instantiated by gpu_cupy).
template <typename Key>
__global__ void duplicate_kernel(const int first, const int last, const int* __restrict__ order,
    const long long* __restrict__ ends, const long long base, const float4* __restrict__ rec, const int tiles_x,
    const int tiles_y, const int H, Key* __restrict__ keys, int* __restrict__ gids, int* __restrict__ big,
    int* __restrict__ n_big)
{
    const int r = first + blockIdx.x * blockDim.x + threadIdx.x;
    const int cnt = r < last ? pairs_of(ends, r) : 0;
    const int g = cnt > 0 ? order[r] : 0;
    Reach q;
    if (cnt > 0) reach_of(q, g, rec, tiles_x, tiles_y);
    const bool large = cnt > SMALL || (cnt > 0 && q.y1 - q.y0 > SMALL_ROWS);
    // queue the large ones, one atomic per warp
    const unsigned int queued = __ballot_sync(0xffffffffu, large);
    if (queued) {
        const int lane = threadIdx.x & 31, leader = __ffs(queued) - 1;
        int slot = 0;
        if (lane == leader) slot = atomicAdd(n_big, __popc(queued));
        slot = __shfl_sync(0xffffffffu, slot, leader) + __popc(queued & ((1u << lane) - 1u));
        if (large) big[slot] = r;
    }
    if (cnt == 0 || large) return;
    const long long end = ends[r] - base;
    write_pairs(q, g, end - cnt, end, H, tiles_x, keys, gids);
}

// The queued large Gaussians, one at a time per block: the block finds the tile span of up to
// BLOCK rows at once, places the rows with a block-wide scan and writes the pairs with
// consecutive threads on consecutive pairs.
template <typename Key>
__global__ void __launch_bounds__(BLOCK) duplicate_big_kernel(const int* __restrict__ order,
    const long long* __restrict__ ends, const long long base, const float4* __restrict__ rec, const int tiles_x,
    const int tiles_y, const int H, Key* __restrict__ keys, int* __restrict__ gids, const int* __restrict__ big,
    const int* __restrict__ n_big)
{
    __shared__ int s_row_lo[BLOCK], s_row_off[BLOCK];
    __shared__ int s_warp[32];
    const int tid = threadIdx.x, n = *n_big;
    for (int b = blockIdx.x; b < n; b += gridDim.x) {
        const int r = big[b], g = order[r];
        const long long end = ends[r] - base;
        long long k0 = end - pairs_of(ends, r);
        Reach q;
        reach_of(q, g, rec, tiles_x, tiles_y);
        for (int ty0 = q.y0; ty0 < q.y1; ty0 += BLOCK) {
            int lo = 0, hi = 0;
            if (ty0 + tid < q.y1) row_span(q, ty0 + tid, H, lo, hi);
            int total;
            const int off = block_exclusive_scan<int, BLOCK>(hi - lo, s_warp, &total);
            s_row_lo[tid] = lo;
            s_row_off[tid] = off;
            __syncthreads();
            const int rows = min(BLOCK, q.y1 - ty0);
            for (int j = tid; j < total; j += BLOCK) {
                int a = 0, z = rows - 1;                       // the row holding pair j: the last with off <= j
                while (a < z) {
                    const int m = (a + z + 1) >> 1;
                    if (s_row_off[m] <= j) a = m; else z = m - 1;
                }
                const long long k = k0 + j;
                if (k < end) {
                    keys[k] = (Key)((ty0 + a) * tiles_x + s_row_lo[a] + (j - s_row_off[a]));
                    gids[k] = g;
                }
            }
            k0 += total;
            __syncthreads();                                   // before the next rows overwrite shared
        }
    }
}

// offsets[t] = first index whose tile is >= t, from the sorted tile ids (offsets has n_tiles + 1
// entries; m >= 1)
template <typename Key>
__global__ void ranges_kernel(const int m, const int n_tiles, const Key* __restrict__ keys,
    int* __restrict__ offsets)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m) return;
    const int t = (int)keys[i];
    const int prev = i == 0 ? -1 : (int)keys[i - 1];
    for (int u = prev + 1; u <= t; ++u) offsets[u] = i;
    if (i == m - 1)
        for (int u = t + 1; u <= n_tiles; ++u) offsets[u] = m;
}

// ---- Small views: each sort in one block of SMALL_THREADS threads, in shared memory, with no host sync.
// Keys are made unique by the index they come from (key << bits | index), so the bitonic sort (not
// stable in itself) gives exactly the stable order of the general path's radix sorts. SMALL_THREADS,
// SMALL_DEPTH_N (Gaussians: 64-bit (depth key, index) in shared memory) and PAIR_BITS (pairs: 32-bit
// (tile << PAIR_BITS | pair)) come from cuda.defines.
constexpr int SMALL_PAIRS = 1 << PAIR_BITS;
static_assert(SMALL_DEPTH_N % SMALL_THREADS == 0 && SMALL_THREADS <= 1024, "small sort layout");

template <typename T, int N>
__device__ __forceinline__ void bitonic_sort(T* s)
{
    for (int k = 2; k <= N; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < N; i += blockDim.x) {
                const int l = i ^ j;
                if (l > i) {
                    const T a = s[i], b = s[l];
                    if (((i & k) == 0) == (a > b)) { s[i] = b; s[l] = a; }
                }
            }
            __syncthreads();
        }
}

// Depth order of n <= SMALL_DEPTH_N Gaussians (ties keep index order) and the running sums of their
// tile counts in that order: order[] and ends[] as the general path's sort, gather and scan make them.
extern "C" __global__ void __launch_bounds__(SMALL_THREADS) small_depth_order_kernel(const int n,
    const unsigned int* __restrict__ depth_keys, const int* __restrict__ counts, int* __restrict__ order,
    long long* __restrict__ ends)
{
    __shared__ unsigned long long s[SMALL_DEPTH_N];
    __shared__ long long s_warp[32];
    for (int i = threadIdx.x; i < SMALL_DEPTH_N; i += blockDim.x)
        s[i] = i < n ? ((unsigned long long)depth_keys[i] << 32) | (unsigned int)i : ~0ull;
    __syncthreads();
    bitonic_sort<unsigned long long, SMALL_DEPTH_N>(s);
    // each thread owns PER consecutive ranks: a sum of its own, a block scan of the sums, then its ranks
    constexpr int PER = SMALL_DEPTH_N / SMALL_THREADS;
    const int r0 = threadIdx.x * PER;
    long long c[PER], own = 0;
    #pragma unroll
    for (int q = 0; q < PER; ++q) {
        const int r = r0 + q;
        c[q] = r < n ? (long long)counts[(int)(s[r] & 0xffffffffu)] : 0;
        own += c[q];
    }
    long long total;
    long long run = block_exclusive_scan<long long, SMALL_THREADS>(own, s_warp, &total);
    #pragma unroll
    for (int q = 0; q < PER; ++q) {
        const int r = r0 + q;
        run += c[q];
        if (r < n) {
            order[r] = (int)(s[r] & 0xffffffffu);
            ends[r] = run;
        }
    }
}

// The m <= SMALL_PAIRS pairs of a view with at most 2^(32 - PAIR_BITS) tiles, sorted by tile, stably:
// the Gaussian ids in tile order and each tile's range (offsets[t] = first pair whose tile is >= t).
template <typename Key>
__global__ void __launch_bounds__(SMALL_THREADS) small_tile_sort_kernel(const int m, const int n_tiles,
    const Key* __restrict__ keys, const int* __restrict__ gids, int* __restrict__ ids, int* __restrict__ offsets)
{
    __shared__ unsigned int s[SMALL_PAIRS];
    for (int i = threadIdx.x; i < SMALL_PAIRS; i += blockDim.x)
        s[i] = i < m ? ((unsigned int)keys[i] << PAIR_BITS) | (unsigned int)i : ~0u;
    __syncthreads();
    bitonic_sort<unsigned int, SMALL_PAIRS>(s);
    for (int i = threadIdx.x; i < m; i += blockDim.x) ids[i] = gids[s[i] & (SMALL_PAIRS - 1)];
    for (int t = threadIdx.x; t <= n_tiles; t += blockDim.x) {      // lower bound of t among the m tiles
        int a = 0, z = m;
        while (a < z) {
            const int mid = (a + z) >> 1;
            if ((int)(s[mid] >> PAIR_BITS) < t) a = mid + 1; else z = mid;
        }
        offsets[t] = a;
    }
}
