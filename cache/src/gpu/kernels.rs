//! The VRAM tier's CUDA kernels, compiled at start with NVRTC:
//! - `gather_hot_rows`: one warp per requested row probes the hot index (32 buckets per step)
//!   and copies the row from the slot arena to its output position, 16 bytes per lane per step;
//!   writes a hit flag per row.
//! - `gather_slots`: plain gather of arena rows by slot (what `torch.index_select` does), the
//!   baseline the hashed gather is measured against.
//! - `scatter_rows`: copies packed rows to given output positions (misses delivered by one
//!   host-to-device copy, and rows entering the arena on refresh).
//!
//! Rows are moved as `uint4` when the row size is a multiple of 16 bytes, else byte by byte.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction};

use super::GpuError;

/// CUDA C source of the kernels.
pub const KERNELS: &str = r#"
#define EMPTY_KEY 0xffffffffffffffffULL
__device__ __forceinline__ unsigned long long mix64(unsigned long long x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

__device__ __forceinline__ int probe(unsigned long long id, const unsigned long long* keys,
                                     const unsigned int* slots, unsigned long long mask, unsigned int lane) {
    unsigned long long h = mix64(id) & mask;
    for (unsigned long long base = 0; base <= mask; base += 32) {
        unsigned long long b = (h + base + lane) & mask;
        unsigned long long k = keys[b];
        unsigned int found = __ballot_sync(0xffffffffu, k == id);
        unsigned int empty = __ballot_sync(0xffffffffu, k == EMPTY_KEY);
        if (found) {
            int l = __ffs(found) - 1;
            int e = empty ? __ffs(empty) - 1 : 32;
            if (l > e) return -1;
            unsigned int s = (lane == (unsigned int)l) ? slots[b] : 0u;
            return (int)__shfl_sync(0xffffffffu, s, l);
        }
        if (empty) return -1;
    }
    return -1;
}

template <typename W>
__device__ __forceinline__ void gather_hot(const unsigned long long* ids, unsigned int n,
    const unsigned long long* keys, const unsigned int* slots, unsigned long long mask,
    const W* arena, unsigned int row_words, W* out, unsigned int* hit) {
    unsigned long long warp = ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    unsigned int lane = threadIdx.x & 31;
    if (warp >= n) return;
    int slot = probe(ids[warp], keys, slots, mask, lane);
    if (slot >= 0) {
        const W* src = arena + (unsigned long long)slot * row_words;
        W* dst = out + warp * row_words;
        for (unsigned int w = lane; w < row_words; w += 32) dst[w] = src[w];
    }
    if (lane == 0) hit[warp] = slot >= 0 ? 1u : 0u;
}

extern "C" __global__ void gather_hot_rows_16(const unsigned long long* ids, unsigned int n,
    const unsigned long long* keys, const unsigned int* slots, unsigned long long mask,
    const uint4* arena, unsigned int row_words, uint4* out, unsigned int* hit) {
    gather_hot<uint4>(ids, n, keys, slots, mask, arena, row_words, out, hit);
}

extern "C" __global__ void gather_hot_rows_1(const unsigned long long* ids, unsigned int n,
    const unsigned long long* keys, const unsigned int* slots, unsigned long long mask,
    const unsigned char* arena, unsigned int row_words, unsigned char* out, unsigned int* hit) {
    gather_hot<unsigned char>(ids, n, keys, slots, mask, arena, row_words, out, hit);
}

template <typename W>
__device__ __forceinline__ void move_rows(const unsigned int* from, const unsigned int* to, unsigned int n,
    const W* src, unsigned int row_words, W* dst) {
    unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long row = t / row_words;
    unsigned int w = (unsigned int)(t % row_words);
    if (row >= n) return;
    unsigned long long s = from ? from[row] : row;
    unsigned long long d = to ? to[row] : row;
    dst[d * row_words + w] = src[s * row_words + w];
}

extern "C" __global__ void gather_slots_16(const unsigned int* slots, unsigned int n,
    const uint4* arena, unsigned int row_words, uint4* out) {
    move_rows<uint4>(slots, 0, n, arena, row_words, out);
}

extern "C" __global__ void scatter_rows_16(const unsigned int* positions, unsigned int n,
    const uint4* packed, unsigned int row_words, uint4* out) {
    move_rows<uint4>(0, positions, n, packed, row_words, out);
}

extern "C" __global__ void scatter_rows_1(const unsigned int* positions, unsigned int n,
    const unsigned char* packed, unsigned int row_words, unsigned char* out) {
    move_rows<unsigned char>(0, positions, n, packed, row_words, out);
}
"#;

/// The loaded kernels.
#[derive(Debug)]
pub struct Kernels {
    /// gather_hot_rows for 16-byte words.
    pub gather_hot_16: CudaFunction,
    /// gather_hot_rows for bytes.
    pub gather_hot_1: CudaFunction,
    /// Plain gather by slot.
    pub gather_slots_16: CudaFunction,
    /// Scatter of packed rows, 16-byte words.
    pub scatter_16: CudaFunction,
    /// Scatter of packed rows, bytes.
    pub scatter_1: CudaFunction,
}

impl Kernels {
    /// Compiles and loads the kernels into `ctx`.
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self, GpuError> {
        let ptx =
            cudarc::nvrtc::compile_ptx(KERNELS).map_err(|e| GpuError::Compile(format!("{e:?}")))?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| GpuError::cuda("load kernels", e))?;
        let f = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| GpuError::cuda("load kernel", e))
        };
        Ok(Self {
            gather_hot_16: f("gather_hot_rows_16")?,
            gather_hot_1: f("gather_hot_rows_1")?,
            gather_slots_16: f("gather_slots_16")?,
            scatter_16: f("scatter_rows_16")?,
            scatter_1: f("scatter_rows_1")?,
        })
    }
}
