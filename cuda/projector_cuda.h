// CUDA backend of the tomographic projector (cpu/projector_cpu.h): the same kernel bodies
// (kernels/projector_body.h) launched one thread per projection pixel.
//
// Two ways in, one implementation:
//   * project_cuda / backproject_cuda / project_pose_vjp_cuda take device pointers (the caller's arrays, used
//     in place, and the caller's output buffers) on a given device and queue the work on a given stream,
//     after the work already queued there. They do not wait for the work unless asked to (`synchronize`).
//     Their scratch (the back-projection's double accumulator, the pose sums per block) is allocated and
//     freed in stream order (stream_buffer.h), so nothing outlives the call but the queued work.
//   * ProjectorCuda takes host pointers, like the CPU functions: it copies its inputs into device buffers
//     that the object owns, calls the same code on the object's stream, copies the result back and waits.
//
// Agreement with the CPU backend:
//   * project: every pixel sums its ray in double in sample order, as the CPU loop does; the device compiler
//     may fuse multiply-adds in the ray geometry, so results agree with the CPU to float32 rounding;
//   * backproject: every sample adds the CPU back-projector's products (corner weight x pixel value x step),
//     but by atomic additions into a double volume in a run-dependent order, so the GPU result is NOT
//     bitwise deterministic; it agrees with the CPU to float32 rounding;
//   * pose_vjp: per-pixel sums in double, block tree sums, then per-projection sums of the block slots in a
//     fixed order: run-to-run deterministic, equal to the CPU up to summation order.
//
// This header needs no CUDA headers: the device state lives behind a pointer (projector_cuda.cu), and a
// stream is a CUstream_st* (what cudaStream_t names; null is the legacy default stream).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <memory>

#include "kernels/projector_body.h"

struct CUstream_st;

namespace mspt {

// Device-pointer entry points; shapes as in project_cpu / backproject_cpu / project_pose_vjp_cpu:
//   volume [Z, Y, X] float, rotations [T, 3, 3] double, shifts_A [T, 2] double, projections [T, Py, Px] float,
//   d_rotation [T, 3] double, d_shifts [T, 2] double; every pointer is memory of CUDA device `device`.
void project_cuda(const float* volume, const ProjectorGeometry& g, const double* rotations, const double* shifts_A,
                  int64_t n_proj, float* projections, int device, CUstream_st* stream, bool synchronize);
void backproject_cuda(const float* projections, const ProjectorGeometry& g, const double* rotations,
                      const double* shifts_A, int64_t n_proj, float* volume, int device, CUstream_st* stream,
                      bool synchronize);
void project_pose_vjp_cuda(const float* volume, const ProjectorGeometry& g, const double* rotations,
                           const double* shifts_A, const float* grad_projections, int64_t n_proj, double* d_rotation,
                           double* d_shifts, int device, CUstream_st* stream, bool synchronize);

class ProjectorCuda {
 public:
  // On the current CUDA device.
  ProjectorCuda();
  ~ProjectorCuda();
  ProjectorCuda(const ProjectorCuda&) = delete;
  ProjectorCuda& operator=(const ProjectorCuda&) = delete;

  // Same semantics as project_cpu / backproject_cpu / project_pose_vjp_cpu; all pointers are host pointers.
  void project(const float* volume, const ProjectorGeometry& g, const double* rotations, const double* shifts_A,
               int64_t n_proj, float* projections);
  void backproject(const float* projections, const ProjectorGeometry& g, const double* rotations,
                   const double* shifts_A, int64_t n_proj, float* volume);
  void pose_vjp(const float* volume, const ProjectorGeometry& g, const double* rotations, const double* shifts_A,
                const float* grad_projections, int64_t n_proj, double* d_rotation, double* d_shifts);

  // Bytes of device memory held.
  size_t scratch_bytes() const;

 private:
  struct Device;
  // Runs `body` on the device; on failure leaves nothing queued that reads the caller's memory.
  template <class F>
  void guarded(F&& body);

  std::unique_ptr<Device> dev_;
};

}  // namespace mspt
