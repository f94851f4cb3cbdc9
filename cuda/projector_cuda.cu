#include "projector_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "device_buffer.h"
#include "device_guard.h"
#include "projector_kernels.cuh"
#include "stream_buffer.h"

namespace mspt {

namespace {

template <class T>
void copy_async(T* dst, const T* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  if (count == 0) return;
  MSPT_CUDA_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(T), kind, stream));
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

// ---- the work of each operator on device memory, queued on `st` (the current device is the arrays') ----

void enqueue_project(const float* volume, const ProjectorGeometry& g, const double* rotations, const double* shifts,
                     int64_t n_proj, float* out, cudaStream_t st) {
  using namespace projector_kernels;
  const size_t n_out = projection_count(g, n_proj);
  if (n_out == 0) return;
  project_kernel<<<pixel_blocks(int64_t(n_out)), kThreads, 0, st>>>(volume, g, rotations, shifts, int64_t(n_out), out);
  MSPT_CUDA_CHECK_LAUNCH("project_kernel");
}

void enqueue_backproject(const float* projections, const ProjectorGeometry& g, const double* rotations,
                         const double* shifts, int64_t n_proj, float* volume, cudaStream_t st) {
  using namespace projector_kernels;
  const size_t n_vol = volume_count(g), n_in = projection_count(g, n_proj);
  if (n_vol == 0) return;
  if (n_in == 0) {
    MSPT_CUDA_CHECK(cudaMemsetAsync(volume, 0, n_vol * sizeof(float), st));
    return;
  }
  StreamBuffer<double> accum(n_vol, st);  // [Z, Y, X]
  MSPT_CUDA_CHECK(cudaMemsetAsync(accum.data(), 0, n_vol * sizeof(double), st));
  backproject_kernel<<<pixel_blocks(int64_t(n_in)), kThreads, 0, st>>>(projections, g, rotations, shifts,
                                                                      int64_t(n_in), accum.data());
  MSPT_CUDA_CHECK_LAUNCH("backproject_kernel");
  to_float_kernel<<<pixel_blocks(int64_t(n_vol)), kThreads, 0, st>>>(accum.data(), int64_t(n_vol), volume);
  MSPT_CUDA_CHECK_LAUNCH("to_float_kernel");
}

void enqueue_pose_vjp(const float* volume, const ProjectorGeometry& g, const double* rotations, const double* shifts,
                      const float* grad, int64_t n_proj, double* d_rotation, double* d_shifts, cudaStream_t st) {
  using namespace projector_kernels;
  if (n_proj == 0) return;
  const int64_t per = int64_t(g.py) * g.px;
  if (per == 0) {
    MSPT_CUDA_CHECK(cudaMemsetAsync(d_rotation, 0, size_t(3 * n_proj) * sizeof(double), st));
    MSPT_CUDA_CHECK(cudaMemsetAsync(d_shifts, 0, size_t(2 * n_proj) * sizeof(double), st));
    return;
  }
  const unsigned blocks = pose_blocks(per);
  StreamBuffer<double> partial(size_t(n_proj) * blocks * 5, st);  // [T, blocks, 5]
  const dim3 grid(blocks, static_cast<unsigned>(std::min<int64_t>(n_proj, 65535)), 1);
  pose_vjp_kernel<<<grid, kThreads, 0, st>>>(volume, g, rotations, shifts, grad, n_proj, partial.data());
  MSPT_CUDA_CHECK_LAUNCH("pose_vjp_kernel");
  pose_sum_kernel<<<pixel_blocks(n_proj), kThreads, 0, st>>>(partial.data(), n_proj, blocks, d_rotation, d_shifts);
  MSPT_CUDA_CHECK_LAUNCH("pose_sum_kernel");
}

// A device-pointer call: on `device`, queued on `stream`, waited for only when asked.
template <class F>
void on_device(int device, cudaStream_t stream, bool synchronize, F&& work) {
  DeviceGuard guard(device);
  try {
    work();
    if (synchronize) MSPT_CUDA_CHECK(cudaStreamSynchronize(stream));
  } catch (...) {
    cudaGetLastError();  // clear a non-sticky error; the caller's stream is the caller's to wait for
    throw;
  }
}

}  // namespace

void project_cuda(const float* volume, const ProjectorGeometry& g, const double* rotations, const double* shifts_A,
                  int64_t n_proj, float* projections, int device, cudaStream_t stream, bool synchronize) {
  check_geometry(g, n_proj);
  on_device(device, stream, synchronize,
            [&] { enqueue_project(volume, g, rotations, shifts_A, n_proj, projections, stream); });
}

void backproject_cuda(const float* projections, const ProjectorGeometry& g, const double* rotations,
                      const double* shifts_A, int64_t n_proj, float* volume, int device, cudaStream_t stream,
                      bool synchronize) {
  check_geometry(g, n_proj);
  on_device(device, stream, synchronize,
            [&] { enqueue_backproject(projections, g, rotations, shifts_A, n_proj, volume, stream); });
}

void project_pose_vjp_cuda(const float* volume, const ProjectorGeometry& g, const double* rotations,
                           const double* shifts_A, const float* grad_projections, int64_t n_proj, double* d_rotation,
                           double* d_shifts, int device, cudaStream_t stream, bool synchronize) {
  check_geometry(g, n_proj);
  on_device(device, stream, synchronize, [&] {
    enqueue_pose_vjp(volume, g, rotations, shifts_A, grad_projections, n_proj, d_rotation, d_shifts, stream);
  });
}

// Device state of one host-array projector: its stream and the staging copies of the caller's arrays.
// Buffers grow to the largest call seen and are reused.
struct ProjectorCuda::Device {
  int device = 0;
  cudaStream_t stream = nullptr;
  DeviceBuffer<float> volume;       // [Z, Y, X]
  DeviceBuffer<float> projections;  // [T, Py, Px]
  DeviceBuffer<double> rotations;   // [T, 3, 3]
  DeviceBuffer<double> shifts;      // [T, 2]
  DeviceBuffer<double> pose_grads;  // [T, 5]: dL/dw (T, 3), then dL/d(dy, dx) (T, 2)

  ~Device() {
    cudaSetDevice(device);
    if (stream != nullptr) {
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    }
    // The buffers are freed after this body, once nothing is queued.
  }

  size_t bytes() const {
    return volume.bytes() + projections.bytes() + rotations.bytes() + shifts.bytes() + pose_grads.bytes();
  }

  // Copies `count` elements of a host array into `buffer` on the device.
  template <class T>
  T* upload(DeviceBuffer<T>& buffer, const T* src, size_t count) {
    T* dst = buffer.ensure(count);
    copy_async(dst, src, count, cudaMemcpyHostToDevice, stream);
    return dst;
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
  DeviceGuard guard(dev_->device);
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
  check_geometry(g, n_proj);
  const size_t n_out = projection_count(g, n_proj);
  if (n_out == 0) return;
  guarded([&] {
    Device& d = *dev_;
    const float* vol = d.upload(d.volume, volume, volume_count(g));
    const double* rot = d.upload(d.rotations, rotations, size_t(9 * n_proj));
    const double* shift = d.upload(d.shifts, shifts_A, size_t(2 * n_proj));
    float* out = d.projections.ensure(n_out);
    enqueue_project(vol, g, rot, shift, n_proj, out, d.stream);
    copy_async(projections, out, n_out, cudaMemcpyDeviceToHost, d.stream);
    MSPT_CUDA_CHECK(cudaStreamSynchronize(d.stream));
  });
}

void ProjectorCuda::backproject(const float* projections, const ProjectorGeometry& g, const double* rotations,
                                const double* shifts_A, int64_t n_proj, float* volume) {
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
    const float* proj = d.upload(d.projections, projections, n_in);
    const double* rot = d.upload(d.rotations, rotations, size_t(9 * n_proj));
    const double* shift = d.upload(d.shifts, shifts_A, size_t(2 * n_proj));
    float* out = d.volume.ensure(n_vol);
    enqueue_backproject(proj, g, rot, shift, n_proj, out, d.stream);
    copy_async(volume, out, n_vol, cudaMemcpyDeviceToHost, d.stream);
    MSPT_CUDA_CHECK(cudaStreamSynchronize(d.stream));
  });
}

void ProjectorCuda::pose_vjp(const float* volume, const ProjectorGeometry& g, const double* rotations,
                             const double* shifts_A, const float* grad_projections, int64_t n_proj,
                             double* d_rotation, double* d_shifts) {
  check_geometry(g, n_proj);
  if (n_proj == 0) return;
  if (int64_t(g.py) * g.px == 0) {
    std::fill(d_rotation, d_rotation + 3 * n_proj, 0.0);
    std::fill(d_shifts, d_shifts + 2 * n_proj, 0.0);
    return;
  }
  guarded([&] {
    Device& d = *dev_;
    const float* vol = d.upload(d.volume, volume, volume_count(g));
    const float* grad = d.upload(d.projections, grad_projections, projection_count(g, n_proj));
    const double* rot = d.upload(d.rotations, rotations, size_t(9 * n_proj));
    const double* shift = d.upload(d.shifts, shifts_A, size_t(2 * n_proj));
    double* out = d.pose_grads.ensure(size_t(5 * n_proj));
    enqueue_pose_vjp(vol, g, rot, shift, grad, n_proj, out, out + 3 * n_proj, d.stream);
    copy_async(d_rotation, out, size_t(3 * n_proj), cudaMemcpyDeviceToHost, d.stream);
    copy_async(d_shifts, out + 3 * n_proj, size_t(2 * n_proj), cudaMemcpyDeviceToHost, d.stream);
    MSPT_CUDA_CHECK(cudaStreamSynchronize(d.stream));
  });
}

}  // namespace mspt
