// CUDA backend of the tomographic projector (cpu/projector_cpu.h): the same kernel bodies
// (kernels/projector_body.h) launched one thread per projection pixel.
//
// Host-pointer interface, like the CPU functions: each call copies its inputs into device buffers that the
// object owns and reuses across calls (no allocation when shapes repeat), runs the kernels on the object's
// stream and copies the result back before returning.
//
// Agreement with the CPU backend:
//   * project: every pixel sums its ray in double in sample order, as the CPU loop does; the device compiler
//     may fuse multiply-adds in the ray geometry, so results agree with the CPU to float32 rounding;
//   * backproject: every sample adds the CPU back-projector's products (corner weight x pixel value x step),
//     but by atomic additions into a double volume in a run-dependent order, so the GPU result is NOT
//     bitwise deterministic; it agrees with the CPU to float32 rounding;
//   * pose_vjp: per-pixel sums in double, block tree sums, then per-projection sums of the block slots on
//     the host in a fixed order: run-to-run deterministic, equal to the CPU up to summation order.
//
// This header needs no CUDA headers: the device state lives behind a pointer (projector_cuda.cu).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <memory>

#include "kernels/projector_body.h"

namespace mspt {

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
