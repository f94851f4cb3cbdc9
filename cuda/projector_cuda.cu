#include "projector_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "cuda_check.h"
#include "device_buffer.h"
#include "projector_kernels.cuh"

namespace mspt {

namespace {

template <class T>
void copy_to_device(T* dst, const T* src, size_t count, cudaStream_t stream) {
  if (count == 0) return;
  MSPT_CUDA_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyHostToDevice, stream));
}

template <class T>
void copy_to_host(T* dst, const T* src, size_t count, cudaStream_t stream) {
  if (count == 0) return;
  MSPT_CUDA_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyDeviceToHost, stream));
}

size_t volume_count(const ProjectorGeometry& g) { return size_t(g.nz) * size_t(g.ny) * size_t(g.nx); }

size_t projection_count(const ProjectorGeometry& g, int64_t n_proj) {
  return size_t(n_proj) * size_t(g.py) * size_t(g.px);
}

void check_geometry(const ProjectorGeometry& g, int64_t n_proj) {
  if (n_proj < 0) throw std::invalid_argument("the number of projections must be >= 0");
  if (g.nz < 0 || g.ny < 0 || g.nx < 0 || g.py < 0 || g.px < 0)
    throw std::invalid_argument("volume and projection extents must be >= 0");
}

}  // namespace

// Device state of one projector. Buffers grow to the largest call seen and are reused.
struct ProjectorCuda::Device {
  int device = 0;
  cudaStream_t stream = nullptr;
  DeviceBuffer<float> volume;       // [Z, Y, X]
  DeviceBuffer<float> projections;  // [T, Py, Px]
  DeviceBuffer<double> rotations;   // [T, 3, 3]
  DeviceBuffer<double> shifts;      // [T, 2]
  DeviceBuffer<double> accum;       // [Z, Y, X] back-projection in double
  DeviceBuffer<double> partial;     // [T, blocks, 5] pose sums per block

  ~Device() {
    cudaSetDevice(device);
    if (stream != nullptr) {
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    }
    // The buffers are freed after this body, once nothing is queued.
  }

  size_t bytes() const {
    return volume.bytes() + projections.bytes() + rotations.bytes() + shifts.bytes() + accum.bytes() +
           partial.bytes();
  }

  // Copies the poses of one call to the device.
  void stage_poses(const double* rot, const double* shift, int64_t n_proj) {
    copy_to_device(rotations.ensure(size_t(9 * n_proj)), rot, size_t(9 * n_proj), stream);
    copy_to_device(shifts.ensure(size_t(2 * n_proj)), shift, size_t(2 * n_proj), stream);
  }
};

ProjectorCuda::ProjectorCuda() {
  dev_.reset(new Device());
  MSPT_CUDA_CHECK(cudaGetDevice(&dev_->device));
  MSPT_CUDA_CHECK(cudaStreamCreateWithFlags(&dev_->stream, cudaStreamNonBlocking));
}

ProjectorCuda::~ProjectorCuda() = default;

size_t ProjectorCuda::scratch_bytes() const { return dev_->bytes(); }

template <class F>
void ProjectorCuda::guarded(F&& body) {
  MSPT_CUDA_CHECK(cudaSetDevice(dev_->device));
  try {
    body();
  } catch (...) {
    // Leave nothing queued that still reads the caller's memory, and clear a non-sticky error so the
    // projector can be used again.
    cudaStreamSynchronize(dev_->stream);
    cudaGetLastError();
    throw;
  }
}

void ProjectorCuda::project(const float* volume, const ProjectorGeometry& g, const double* rotations,
                            const double* shifts_A, int64_t n_proj, float* projections) {
  using namespace projector_kernels;
  check_geometry(g, n_proj);
  const size_t n_out = projection_count(g, n_proj);
  if (n_out == 0) return;
  guarded([&] {
    Device& d = *dev_;
    const cudaStream_t st = d.stream;
    const size_t n_vol = volume_count(g);
    float* vol = d.volume.ensure(n_vol);
    copy_to_device(vol, volume, n_vol, st);
    d.stage_poses(rotations, shifts_A, n_proj);
    float* out = d.projections.ensure(n_out);
    project_kernel<<<pixel_blocks(int64_t(n_out)), kThreads, 0, st>>>(vol, g, d.rotations.data(), d.shifts.data(),
                                                                     int64_t(n_out), out);
    MSPT_CUDA_CHECK_LAUNCH("project_kernel");
    copy_to_host(projections, out, n_out, st);
    MSPT_CUDA_CHECK(cudaStreamSynchronize(st));
  });
}

void ProjectorCuda::backproject(const float* projections, const ProjectorGeometry& g, const double* rotations,
                                const double* shifts_A, int64_t n_proj, float* volume) {
  using namespace projector_kernels;
  check_geometry(g, n_proj);
  const size_t n_vol = volume_count(g);
  if (n_vol == 0) return;
  const size_t n_in = projection_count(g, n_proj);
  if (n_in == 0) {
    std::fill(volume, volume + n_vol, 0.0f);
    return;
  }
  guarded([&] {
    Device& d = *dev_;
    const cudaStream_t st = d.stream;
    float* proj = d.projections.ensure(n_in);
    copy_to_device(proj, projections, n_in, st);
    d.stage_poses(rotations, shifts_A, n_proj);
    double* acc = d.accum.ensure(n_vol);
    MSPT_CUDA_CHECK(cudaMemsetAsync(acc, 0, n_vol * sizeof(double), st));
    backproject_kernel<<<pixel_blocks(int64_t(n_in)), kThreads, 0, st>>>(proj, g, d.rotations.data(),
                                                                        d.shifts.data(), int64_t(n_in), acc);
    MSPT_CUDA_CHECK_LAUNCH("backproject_kernel");
    float* out = d.volume.ensure(n_vol);
    to_float_kernel<<<pixel_blocks(int64_t(n_vol)), kThreads, 0, st>>>(acc, int64_t(n_vol), out);
    MSPT_CUDA_CHECK_LAUNCH("to_float_kernel");
    copy_to_host(volume, out, n_vol, st);
    MSPT_CUDA_CHECK(cudaStreamSynchronize(st));
  });
}

void ProjectorCuda::pose_vjp(const float* volume, const ProjectorGeometry& g, const double* rotations,
                             const double* shifts_A, const float* grad_projections, int64_t n_proj,
                             double* d_rotation, double* d_shifts) {
  using namespace projector_kernels;
  check_geometry(g, n_proj);
  if (n_proj == 0) return;
  const int64_t per = int64_t(g.py) * g.px;
  if (per == 0) {
    std::fill(d_rotation, d_rotation + 3 * n_proj, 0.0);
    std::fill(d_shifts, d_shifts + 2 * n_proj, 0.0);
    return;
  }
  const unsigned blocks = pose_blocks(per);
  std::vector<double> sums(size_t(n_proj) * blocks * 5);
  guarded([&] {
    Device& d = *dev_;
    const cudaStream_t st = d.stream;
    const size_t n_vol = volume_count(g), n_in = projection_count(g, n_proj);
    float* vol = d.volume.ensure(n_vol);
    copy_to_device(vol, volume, n_vol, st);
    float* grad = d.projections.ensure(n_in);
    copy_to_device(grad, grad_projections, n_in, st);
    d.stage_poses(rotations, shifts_A, n_proj);
    double* partial = d.partial.ensure(sums.size());
    const dim3 grid(blocks, static_cast<unsigned>(std::min<int64_t>(n_proj, 65535)), 1);
    pose_vjp_kernel<<<grid, kThreads, 0, st>>>(vol, g, d.rotations.data(), d.shifts.data(), grad, n_proj, partial);
    MSPT_CUDA_CHECK_LAUNCH("pose_vjp_kernel");
    copy_to_host(sums.data(), partial, sums.size(), st);
    MSPT_CUDA_CHECK(cudaStreamSynchronize(st));
  });
  // Per projection, the block slots in block order.
  for (int64_t t = 0; t < n_proj; ++t) {
    double total[5] = {0, 0, 0, 0, 0};
    for (unsigned b = 0; b < blocks; ++b)
      for (int c = 0; c < 5; ++c) total[c] += sums[(size_t(t) * blocks + b) * 5 + c];
    for (int c = 0; c < 3; ++c) d_rotation[3 * t + c] = total[c];
    for (int c = 0; c < 2; ++c) d_shifts[2 * t + c] = total[3 + c];
  }
}

}  // namespace mspt
