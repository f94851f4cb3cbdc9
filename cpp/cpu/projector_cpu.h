// The tomographic projector on the CPU and its exact transpose, the back-projector. Both run the kernel
// bodies of kernels/projector_body.h; the back-projector is deterministic (no atomics, the same result for
// any number of threads).
#pragma once

#include <stdint.h>

#include "kernels/projector_body.h"

namespace mspt {

// volume [Z, Y, X], rotations [T, 3, 3] (row-major, active), shifts_A [T, 2] (dy, dx)
// -> projections [T, Py, Px]: line integrals (volume value x A). threads <= 0: OpenMP's default.
void project_cpu(const float* volume, const ProjectorGeometry& g, const double* rotations, const double* shifts_A,
                 int64_t n_proj, int threads, float* projections);

// The exact transpose of project_cpu: projections [T, Py, Px] -> volume [Z, Y, X] (overwritten).
// Gather form over slabs of 16 z-planes: each slab is owned by one thread, which visits every ray in a fixed
// order (projection, row, column, sample), evaluates the samples whose footprint reaches the slab with the
// projector's own ray and weight bodies, and adds to the corners on the slab in a double accumulator. The
// slabs do not depend on the thread count, so neither does any voxel's order of additions. Samples on a slab's
// lower face are evaluated by both slabs they touch (1 in 16); cells inside the slab skip the bounds checks.
// It costs about 1.1-1.2x project_cpu (128^3 volume, 12 and 36 poses about y, 1 and 2 threads).
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
