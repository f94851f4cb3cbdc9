// Sums over a thread block in double precision, for the per-position reductions of the multislice
// engine (loss, position and tilt derivatives) and the per-projection reductions of the projector's pose
// derivatives: each thread accumulates its share of the pixels, then the block adds the partial sums here.
#pragma once

#include <cuda_runtime.h>

namespace mspt {

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Adds (a, b) over the block; the totals are valid in thread 0 only. Every thread of the block must call
// it (no early return before), blockDim.x must be a multiple of 32 (at most 1024), and it may be called
// once per kernel (it does not re-synchronise before reusing its shared memory).
__device__ __forceinline__ void block_sum2(double& a, double& b) {
  __shared__ double partial_a[32], partial_b[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) {
    partial_a[warp] = a;
    partial_b[warp] = b;
  }
  __syncthreads();
  if (warp == 0) {
    a = lane < warps ? partial_a[lane] : 0.0;
    b = lane < warps ? partial_b[lane] : 0.0;
    a = warp_sum(a);
    b = warp_sum(b);
  }
}

// Adds the N values v[0 .. N) over the block; the totals are valid in thread 0 only. Every thread of the
// block must call it, blockDim.x must be a multiple of 32 (at most 1024). Unlike block_sum2 it may be
// called repeatedly in one kernel: it synchronises again before returning, so its shared memory is free.
template <int N>
__device__ __forceinline__ void block_sum_n(double (&v)[N]) {
  __shared__ double partial[N][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  for (int c = 0; c < N; ++c) {
    v[c] = warp_sum(v[c]);
    if (lane == 0) partial[c][warp] = v[c];
  }
  __syncthreads();
  if (warp == 0) {
    for (int c = 0; c < N; ++c) v[c] = warp_sum(lane < warps ? partial[c][lane] : 0.0);
  }
  __syncthreads();
}

}  // namespace mspt
