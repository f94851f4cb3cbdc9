// The tomographic projector on the CPU and its exact transpose, the back-projector. Both run the kernel
// bodies of kernels/projector_body.h (ray geometry, cells, trilinear_weights) in two-pass blocks of samples: one
// pass finds the cells of a block (vectorised), the other reads or adds to their corners (cpu/projector_cells.h,
// in AVX2 in the _core_avx2 build). Both work on copies padded with zeros, so no sample needs a bounds check.
// The back-projector is deterministic (no atomics, the same result for any number of threads).
#pragma once

#include <stdint.h>

#include "kernels/projector_body.h"

namespace mspt {

// volume [Z, Y, X], rotations [T, 3, 3] (row-major, active), shifts_A [T, 2] (dy, dx)
// -> projections [T, Py, Px]: line integrals (volume value x A). threads <= 0: OpenMP's default.
void project_cpu(const float* volume, const ProjectorGeometry& g, const double* rotations, const double* shifts_A,
                 int64_t n_proj, int threads, float* projections);

// project_cpu computed pixel by pixel with project_pixel, the body the CUDA projector runs in each thread: the
// tests compare it with project_cpu, so the CPU tests cover the GPU's arithmetic. Not tuned; not for use.
void project_pixelwise_cpu(const float* volume, const ProjectorGeometry& g, const double* rotations,
                           const double* shifts_A, int64_t n_proj, int threads, float* projections);

// The exact transpose of project_cpu: projections [T, Py, Px] -> volume [Z, Y, X] (overwritten).
// Gather form over slabs of 16 volume rows (y): each slab is owned by one thread, which visits the projection
// rows that can reach it in a fixed order, evaluates the samples whose cells touch the slab with the
// projector's own ray, cell and weight bodies, and adds weight x value (the float products the projector
// multiplies by) to a double accumulator. The slabs do not depend on the thread count, so neither does any
// voxel's order of additions. A ray of a pose about y stays on one row of cells, so it reaches one slab (two
// where its cells straddle two slabs). Cost: about 1.25x project_cpu (128^3 volume, 36 poses about y).
void backproject_cpu(const float* projections, const ProjectorGeometry& g, const double* rotations,
                     const double* shifts_A, int64_t n_proj, int threads, float* volume);

// The pose part of the vector-Jacobian product of project_cpu for cotangents grad_projections [T, Py, Px]:
// d_rotation [T, 3] = dL/dw of the update R <- exp([w]x) R at w = 0 (rotation vector, radians) and
// d_shifts [T, 2] = dL/d(dy, dx) (1/A), both overwritten. Rows run in parallel; each row's sums are kept in
// double and reduced per projection in row order, so the result is the same for any number of threads.
void project_pose_vjp_cpu(const float* volume, const ProjectorGeometry& g, const double* rotations,
                          const double* shifts_A, const float* grad_projections, int64_t n_proj, int threads,
                          double* d_rotation, double* d_shifts);

}  // namespace mspt
