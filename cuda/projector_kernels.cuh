// Grid launches of the projector's kernel bodies (kernels/projector_body.h): the CUDA counterpart of the
// loops in cpu/projector_cpu.cpp. No arithmetic of the model is written here; each kernel indexes its
// projection pixel and calls the bodies.
//
// Layouts (C order):
//   volume       [Z, Y, X]    float
//   rotations    [T, 3, 3]    double, row-major active rotations
//   shifts       [T, 2]       double, (dy, dx) in A
//   projections  [T, Py, Px]  float; pixel e = (t * Py + j) * Px + i
//
// Pixel kernels run a 1D grid-stride loop over the T * Py * Px pixels (any count fits the grid). The pose
// kernel runs a 2D grid: y walks the projections (grid-stride), x splits one projection's pixels among
// `gridDim.x` blocks, each of which writes its block sum to its own slot (no atomics), so the host can add
// the slots in a fixed order.
// Included by projector_cuda.cu only (the kernels have external linkage).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "block_reduce.cuh"
#include "kernels/projector_body.h"

namespace mspt {
namespace projector_kernels {

constexpr int kThreads = 256;  // a multiple of 32, as block_sum_n needs
// Most blocks of a pixel kernel (the rest is covered by the grid-stride loop) and most blocks that share
// one projection in the pose kernel.
constexpr int64_t kMaxBlocks = int64_t(1) << 20;
constexpr int64_t kMaxPoseBlocks = 64;

// Blocks of a pixel kernel over `items` pixels (items >= 1).
inline unsigned pixel_blocks(int64_t items) {
  const int64_t b = (items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < kMaxBlocks ? b : kMaxBlocks);
}

// Blocks per projection of the pose kernel for `pixels` pixels per projection (pixels >= 1).
inline unsigned pose_blocks(int64_t pixels) {
  const int64_t b = (pixels + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < kMaxPoseBlocks ? b : kMaxPoseBlocks);
}

// Projection t and pixel (j, i) of flat pixel index e.
__device__ __forceinline__ void pixel_of(const ProjectorGeometry& g, int64_t e, int64_t* t, int* j, int* i) {
  const int64_t per = int64_t(g.py) * g.px;
  *t = e / per;
  const int64_t r = e - *t * per;
  *j = static_cast<int>(r / g.px);
  *i = static_cast<int>(r - int64_t(*j) * g.px);
}

// One thread per projection pixel: the line integral of project_pixel, summed in double in sample order
// (the same value the CPU loop computes).
//   out  [T, Py, Px]
__global__ void project_kernel(const float* volume, ProjectorGeometry g, const double* rotations,
                               const double* shifts, int64_t n_pixels, float* out) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n_pixels; e += stride) {
    int64_t t;
    int j, i;
    pixel_of(g, e, &t, &j, &i);
    out[e] = static_cast<float>(project_pixel<float, double>(volume, g, rotations + 9 * t, shifts + 2 * t, j, i));
  }
}

// One thread per projection pixel: splats pixel value x step onto the 8 corners of every sample of its ray
// with the weights of trilinear_corners (the projector's own), by atomic addition into a double volume.
// The products added are those of the CPU back-projector; only the order of the additions differs.
//   acc  [Z, Y, X] double, zeroed by the caller
__global__ void backproject_kernel(const float* projections, ProjectorGeometry g, const double* rotations,
                                   const double* shifts, int64_t n_pixels, double* acc) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n_pixels; e += stride) {
    const double value = static_cast<double>(projections[e]) * g.step_A;
    if (value == 0.0) continue;
    int64_t t;
    int j, i;
    pixel_of(g, e, &t, &j, &i);
    const Ray r = projection_ray(g, rotations + 9 * t, shifts + 2 * t, j, i);
    int64_t s0, s1;
    ray_sample_range(g, r, &s0, &s1);
    for (int64_t s = s0; s < s1; ++s) {
      double fk, fj, fi;
      ray_point(r, s, &fk, &fj, &fi);
      int64_t idx[8];
      double w[8];
      if (!trilinear_corners<double>(fk, fj, fi, g.nz, g.ny, g.nx, idx, w)) continue;
      for (int c = 0; c < 8; ++c)
        if (idx[c] >= 0) atomicAdd(acc + idx[c], w[c] * value);
    }
  }
}

// out[n] = float(in[n]).
__global__ void to_float_kernel(const double* in, int64_t count, float* out) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; n < count; n += stride)
    out[n] = static_cast<float>(in[n]);
}

// Pose part of the vector-Jacobian product: each thread runs project_pixel_pose_vjp on its share of one
// projection's pixels (skipping zero cotangents, as the CPU loop does) and keeps the five sums in double;
// the block adds them and writes them to its slot.
//   grad     [T, Py, Px]  cotangents
//   partial  [T, gridDim.x, 5]  per block: dL/dw (3), dL/d(dy, dx) (2)
__global__ void pose_vjp_kernel(const float* volume, ProjectorGeometry g, const double* rotations,
                                const double* shifts, const float* grad, int64_t n_proj, double* partial) {
  const int64_t per = int64_t(g.py) * g.px;
  for (int64_t t = blockIdx.y; t < n_proj; t += gridDim.y) {
    const double* rot = rotations + 9 * t;
    const double* shift = shifts + 2 * t;
    const float* src = grad + t * per;
    double sums[5] = {0, 0, 0, 0, 0};
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < per; e += int64_t(gridDim.x) * blockDim.x) {
      if (src[e] == 0.0f) continue;
      const int j = static_cast<int>(e / g.px), i = static_cast<int>(e - int64_t(e / g.px) * g.px);
      project_pixel_pose_vjp<float>(volume, g, rot, shift, j, i, static_cast<double>(src[e]), sums, sums + 3);
    }
    block_sum_n<5>(sums);
    if (threadIdx.x == 0) {
      double* dst = partial + (t * gridDim.x + blockIdx.x) * 5;
      for (int c = 0; c < 5; ++c) dst[c] = sums[c];
    }
  }
}

// One thread per projection: the pose derivatives, the block slots of pose_vjp_kernel added in block order
// (explicit roundings: the same bits as the host sum of the same slots).
//   partial  [T, blocks, 5];  d_rotation [T, 3];  d_shifts [T, 2]
__global__ void pose_sum_kernel(const double* partial, int64_t n_proj, unsigned blocks, double* d_rotation,
                                double* d_shifts) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n_proj; t += stride) {
    double total[5] = {0, 0, 0, 0, 0};
    for (unsigned b = 0; b < blocks; ++b)
      for (int c = 0; c < 5; ++c) total[c] = __dadd_rn(total[c], partial[(t * blocks + b) * 5 + c]);
    for (int c = 0; c < 3; ++c) d_rotation[3 * t + c] = total[c];
    for (int c = 0; c < 2; ++c) d_shifts[2 * t + c] = total[3 + c];
  }
}

}  // namespace projector_kernels
}  // namespace mspt
