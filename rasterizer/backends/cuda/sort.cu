// Stage 4's sorts and running sums, without thrust and without a host sync:
//
// radix_histogram_kernel + radix_pass_kernel: a stable least-significant-digit radix sort of
//   (key, value) pairs, RADIX_BITS a pass, only the passes the keys' bits need (32-bit depth keys:
//   4; tile ids: 2 for up to 65536 tiles). One histogram kernel counts the digits of every pass at
//   once (the order of the keys does not change a digit's count); then one kernel per pass
//   ("onesweep"): each block takes the next tile of SORT_TILE keys (a ticket, so tiles start in
//   order), ranks them by digit (warp by warp with __match_any_sync, so equal digits keep their
//   order), publishes its count of each digit and looks back over the tiles before it for theirs
//   (a digit's tiles add up in a chain: a tile's "prefix" word is final, an "aggregate" word only
//   its own count; LOOK_BACK words a step), then writes its keys through shared memory to where
//   their digits start.
// running_sums_kernel: ends[r] = counts[order[0]] + ... + counts[order[r]] in one pass, with a
//   look-back between tiles that one warp reads 32 tiles at a time.
//
// SORT_THREADS, SORT_ITEMS and RADIX_BITS come from cuda.defines (backends/cuda/__init__.py).
#include "scan.cuh"

constexpr int RADIX = 1 << RADIX_BITS;
constexpr int SORT_WARPS = SORT_THREADS / 32;
constexpr int SORT_TILE = SORT_THREADS * SORT_ITEMS;
constexpr int MAX_PASSES = (32 + RADIX_BITS - 1) / RADIX_BITS;
constexpr int LOOK_BACK = 4;       // look-back words a thread reads at once (a tile that finds a "prefix"
                                   // word knows that every tile before it has published)
static_assert(SORT_THREADS == RADIX, "one thread per digit");

// The look-back words. Radix sort (32 bits): 0 = not yet published, count + 1 = a tile's own count of
// a digit (at most SORT_TILE), PREFIX_32 | sum = the digit's count over this tile and all before it.
// Running sums (64 bits): AGGREGATE_64 | own sum, PREFIX_64 | inclusive sum.
constexpr unsigned int PREFIX_32 = 0x80000000u;
constexpr unsigned long long AGGREGATE_64 = 1ull << 62, PREFIX_64 = 2ull << 62, VALUE_64 = AGGREGATE_64 - 1;

// Relaxed GPU-scope loads and stores: the look-back words carry their own payload, so no fence is needed,
// only that a spinning load sees another block's store (no L1 caching, no hoisting out of the loop).
__device__ __forceinline__ unsigned int load_relaxed(const unsigned int* p)
{
    unsigned int v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void store_relaxed(unsigned int* p, const unsigned int v)
{
    asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" :: "l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ unsigned long long load_relaxed(const unsigned long long* p)
{
    unsigned long long v;
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void store_relaxed(unsigned long long* p, const unsigned long long v)
{
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" :: "l"(p), "l"(v) : "memory");
}

__device__ __forceinline__ int digit_of(const unsigned int key, const int shift)
{
    return (int)((key >> shift) & (RADIX - 1));
}

// hist[p * RADIX + d] += the number of keys whose digit of pass p is d (hist: the start of the passes'
// work, zeroed by the caller). Each block counts in shared memory, in HIST_PARTS copies (thread t adds
// to copy t % HIST_PARTS, rows padded by one word so that the copies of a digit sit in different
// banks): a digit most keys share costs a few colliding atomics, not 32.
constexpr int HIST_PARTS = 8;
constexpr int HIST_ROW = RADIX + 1;
template <typename Key>
__global__ void __launch_bounds__(SORT_THREADS) radix_histogram_kernel(const int n, const Key* __restrict__ keys,
    const int passes, unsigned int* __restrict__ hist)
{
    __shared__ unsigned int s[MAX_PASSES * HIST_PARTS * HIST_ROW];
    for (int i = threadIdx.x; i < passes * HIST_PARTS * HIST_ROW; i += SORT_THREADS) s[i] = 0;
    __syncthreads();
    unsigned int* mine = s + (threadIdx.x % HIST_PARTS) * HIST_ROW;
    for (long long i = (long long)blockIdx.x * SORT_THREADS + threadIdx.x; i < n;
         i += (long long)gridDim.x * SORT_THREADS) {
        const unsigned int key = (unsigned int)keys[i];
        for (int p = 0; p < passes; ++p)
            atomicAdd(mine + p * HIST_PARTS * HIST_ROW + digit_of(key, RADIX_BITS * p), 1u);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < passes * RADIX; i += SORT_THREADS) {
        const unsigned int* row = s + (i / RADIX) * HIST_PARTS * HIST_ROW + i % RADIX;
        unsigned int c = 0;
        #pragma unroll
        for (int q = 0; q < HIST_PARTS; ++q) c += row[q * HIST_ROW];
        if (c) atomicAdd(&hist[i], c);
    }
}

// One pass (number `pass` of `passes`) over n pairs: stable by that pass's digit. work, zeroed by the
// caller before the histogram: passes x RADIX global digit counts (radix_histogram_kernel's), then
// passes x tiles x RADIX look-back words, then one ticket a pass. FIRST: the values are the indices
// 0..n-1 (vals_in unused); KEYS_OUT: write the keys too (the last pass of a sort whose keys are not
// needed afterwards writes only values).
template <typename Key, bool FIRST, bool KEYS_OUT>
__global__ void __launch_bounds__(SORT_THREADS) radix_pass_kernel(const int n, const int pass, const int passes,
    const Key* __restrict__ keys_in, const int* __restrict__ vals_in, Key* __restrict__ keys_out,
    int* __restrict__ vals_out, unsigned int* __restrict__ work)
{
    const int shift = pass * RADIX_BITS;
    const long long tiles = ((long long)n + SORT_TILE - 1) / SORT_TILE;
    const unsigned int* hist = work + pass * RADIX;
    unsigned int* status = work + passes * RADIX + pass * tiles * RADIX;
    unsigned int* ticket = work + passes * RADIX + passes * tiles * RADIX + pass;
    __shared__ unsigned int s_warp_hist[SORT_WARPS][RADIX];   // per warp: digit counts, then offsets
    __shared__ int s_local[RADIX];                            // where each digit starts in this tile
    __shared__ int s_global[RADIX];                           // global start of each digit, minus s_local
    __shared__ Key s_keys[SORT_TILE];
    __shared__ int s_vals[SORT_TILE];
    __shared__ unsigned int s_scan[32];
    __shared__ int s_tile;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (tid == 0) s_tile = (int)atomicAdd(ticket, 1u);        // tiles are taken in order
    for (int i = tid; i < SORT_WARPS * RADIX; i += SORT_THREADS) (&s_warp_hist[0][0])[i] = 0;
    __syncthreads();
    const int tile = s_tile;
    // load warp-striped (item j of a warp at j * 32 + lane: coalesced), past the end: all ones (last digit)
    const long long first = (long long)tile * SORT_TILE + warp * (32 * SORT_ITEMS) + lane;
    unsigned int key[SORT_ITEMS], rank[SORT_ITEMS];
    int val[SORT_ITEMS];
    #pragma unroll
    for (int j = 0; j < SORT_ITEMS; ++j) {
        const long long i = first + 32 * j;
        const bool ok = i < n;
        key[j] = ok ? (unsigned int)keys_in[i] : (unsigned int)(Key)~0u;
        val[j] = FIRST ? (int)i : (ok ? vals_in[i] : 0);
    }
    // rank within the warp: items in (j, lane) order, i.e. index order, so equal digits stay in order
    const unsigned int lower = (1u << lane) - 1u;
    unsigned int* wh = s_warp_hist[warp];
    #pragma unroll
    for (int j = 0; j < SORT_ITEMS; ++j) {
        const int d = digit_of(key[j], shift);
        const unsigned int peers = __match_any_sync(0xffffffffu, d);
        const unsigned int before = __popc(peers & lower);
        const unsigned int seen = wh[d];
        rank[j] = seen + before;
        __syncwarp();
        if (before == 0) wh[d] = seen + __popc(peers);
        __syncwarp();
    }
    __syncthreads();
    // thread d: the warps' offsets within digit d, the tile's count of d and where d starts in the tile
    const int d = tid;
    unsigned int count = 0;
    #pragma unroll
    for (int w = 0; w < SORT_WARPS; ++w) {
        const unsigned int x = s_warp_hist[w][d];
        s_warp_hist[w][d] = count;
        count += x;
    }
    unsigned int total;
    const int local = (int)block_exclusive_scan<unsigned int, SORT_THREADS>(count, s_scan, &total);
    const unsigned int start = block_exclusive_scan<unsigned int, SORT_THREADS>(hist[d], s_scan, &total);
    // publish this tile's count of d; add up the earlier tiles' counts of d
    unsigned int* mine = status + (long long)tile * RADIX + d;
    unsigned int before = 0;
    if (tile == 0) {
        store_relaxed(mine, PREFIX_32 | count);
    } else {
        store_relaxed(mine, count + 1u);
        for (int t = tile - 1;; t -= LOOK_BACK) {      // LOOK_BACK words at once (before tile 0: a prefix 0)
            unsigned int w[LOOK_BACK];
            #pragma unroll
            for (int k = 0; k < LOOK_BACK; ++k)
                w[k] = t - k >= 0 ? load_relaxed(status + (long long)(t - k) * RADIX + d) : PREFIX_32;
            #pragma unroll
            for (int k = 0; k < LOOK_BACK; ++k)
                while (w[k] == 0u) w[k] = load_relaxed(status + (long long)(t - k) * RADIX + d);
            bool found = false;
            #pragma unroll
            for (int k = 0; k < LOOK_BACK; ++k) {
                if (found) continue;
                found = (w[k] & PREFIX_32) != 0u;
                before += found ? w[k] & ~PREFIX_32 : w[k] - 1u;
            }
            if (found) break;
        }
        store_relaxed(mine, PREFIX_32 | (before + count));
    }
    s_local[d] = local;
    s_global[d] = (int)(start + before) - local;
    __syncthreads();
    // into shared memory in digit order, then out with consecutive threads on consecutive positions
    #pragma unroll
    for (int j = 0; j < SORT_ITEMS; ++j) {
        const int dj = digit_of(key[j], shift);
        const int at = s_local[dj] + (int)s_warp_hist[warp][dj] + (int)rank[j];
        s_keys[at] = (Key)key[j];
        s_vals[at] = val[j];
    }
    __syncthreads();
    const long long left = (long long)n - (long long)tile * SORT_TILE;   // the items past n rank last
    const int valid = left < SORT_TILE ? (int)left : SORT_TILE;
    for (int i = tid; i < valid; i += SORT_THREADS) {
        const Key k = s_keys[i];
        const int at = s_global[digit_of((unsigned int)k, shift)] + i;
        if (KEYS_OUT) keys_out[at] = k;
        vals_out[at] = s_vals[i];
    }
}

// The sum of the tiles before `tile` from their 64-bit look-back words (0 = not yet published), read by
// one warp, 32 tiles a step, nearest first: the nearest "prefix" word ends the walk. Every lane returns it.
__device__ __forceinline__ unsigned long long look_back_64(const unsigned long long* status, const int tile)
{
    const int lane = threadIdx.x & 31;
    unsigned long long before = 0;
    for (int last = tile - 1; last >= 0; last -= 32) {
        const int t = last - lane;
        unsigned long long w;
        do { w = t >= 0 ? load_relaxed(status + t) : PREFIX_64; } while (!__all_sync(0xffffffffu, w != 0ull));
        const unsigned int prefixes = __ballot_sync(0xffffffffu, (w & PREFIX_64) != 0ull);
        const int stop = prefixes ? __ffs(prefixes) - 1 : 31;
        unsigned long long v = lane <= stop ? (w & VALUE_64) : 0ull;
        #pragma unroll
        for (int d = 16; d; d >>= 1) v += __shfl_xor_sync(0xffffffffu, v, d);
        before += v;
        if (prefixes) break;
    }
    return before;
}

// ends[r] = counts[order[0]] + ... + counts[order[r]] (int64: a view may hold more than 2^31 pairs), one
// tile of SORT_TILE ranks per block, each warp scanning SORT_ITEMS runs of 32 consecutive ranks (coalesced
// reads and writes); status, zeroed by the caller: one look-back word per tile, then the ticket.
extern "C" __global__ void __launch_bounds__(SORT_THREADS) running_sums_kernel(const int n,
    const int* __restrict__ order, const int* __restrict__ counts, long long* __restrict__ ends,
    unsigned long long* __restrict__ status)
{
    unsigned int* ticket = (unsigned int*)(status + ((long long)n + SORT_TILE - 1) / SORT_TILE);
    __shared__ long long s_warp[SORT_WARPS];
    __shared__ long long s_before;
    __shared__ int s_tile;
    if (threadIdx.x == 0) s_tile = (int)atomicAdd(ticket, 1u);   // tiles are taken in order
    __syncthreads();
    const int tile = s_tile, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long long first = (long long)tile * SORT_TILE + warp * (32 * SORT_ITEMS) + lane;
    int run[SORT_ITEMS];                   // inclusive sums within the warp's ranks (< 2^31: 512 counts)
    int carry = 0;
    #pragma unroll
    for (int j = 0; j < SORT_ITEMS; ++j) {
        const long long i = first + 32 * j;
        const int x = warp_inclusive_scan(i < n ? counts[order[i]] : 0);
        run[j] = carry + x;
        carry += __shfl_sync(0xffffffffu, x, 31);
    }
    if (lane == 0) s_warp[warp] = carry;
    __syncthreads();
    if (warp == 0) {
        const long long w = warp_inclusive_scan<long long>(lane < SORT_WARPS ? s_warp[lane] : 0);
        const unsigned long long total = (unsigned long long)__shfl_sync(0xffffffffu, w, SORT_WARPS - 1);
        if (lane < SORT_WARPS) s_warp[lane] = w;                    // inclusive sums of the warps
        if (lane == 0 && tile > 0) store_relaxed(status + tile, AGGREGATE_64 | total);
        const unsigned long long before = look_back_64(status, tile);
        if (lane == 0) {
            store_relaxed(status + tile, PREFIX_64 | (before + total));
            s_before = (long long)before;
        }
    }
    __syncthreads();
    const long long base = s_before + (warp ? s_warp[warp - 1] : 0);
    #pragma unroll
    for (int j = 0; j < SORT_ITEMS; ++j) {
        const long long i = first + 32 * j;
        if (i < n) ends[i] = base + run[j];
    }
}
