#include "multislice_cuda.h"

#include <cuda_runtime.h>
#include <limits.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_check.h"
#include "device_buffer.h"
#include "fft_cuda.h"
#include "mspt/windows.h"
#include "multislice_kernels.cuh"

namespace mspt {

namespace {

// At most this many positions per chunk; fewer when device memory is short.
constexpr int64_t kMaxChunk = 256;
// Share of the free device memory (plus what the engine already holds) that chunk buffers may take; the
// rest is left to cuFFT's plan data and to other users of the device.
constexpr double kMemoryShare = 0.7;

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

template <class T>
void zero(T* dst, size_t count, cudaStream_t stream) {
  if (count == 0) return;
  MSPT_CUDA_CHECK(cudaMemsetAsync(dst, 0, count * sizeof(T), stream));
}

}  // namespace

// Device state of one engine. Buffers grow to the largest call seen and are reused.
struct MultisliceCuda::Device {
  int device = 0;
  cudaStream_t stream = nullptr;
  std::unique_ptr<FftCuda> fft;

  // Per call.
  DeviceBuffer<cplx<float>> slices;       // [S, H, W]
  DeviceBuffer<cplx<float>> grad_slices;  // [S, H, W]
  DeviceBuffer<double> positions;         // [B, 2]
  DeviceBuffer<cplx<float>> probe;        // [M, n] real space
  DeviceBuffer<cplx<float>> probe_spec;   // [M, n] F(probe)
  DeviceBuffer<cplx<float>> probe_acc;    // [M, n] summed probe gradient spectra
  DeviceBuffer<cplx<float>> propagator;   // [n] H / n
  DeviceBuffer<unsigned char> far_band;   // [n]
  DeviceBuffer<double> loss;              // [B]
  DeviceBuffer<double> tilt;              // [B, 2] before the factor 2 pi dz
  DeviceBuffer<double> grad_positions;    // [B, 2]

  // Per chunk of P positions.
  DeviceBuffer<cplx<float>> waves;    // [S, P, M, n] wave entering each slice ([1, P, M, n] forward only)
  DeviceBuffer<cplx<float>> spectra;  // [S - 1, P, M, n] propagated spectra entering slices 1 .. S-1
  DeviceBuffer<cplx<float>> far;      // [P, M, n] far-field spectra
  DeviceBuffer<cplx<float>> work;     // [P, M, n]
  DeviceBuffer<cplx<float>> grad;     // [P, M, n]
  DeviceBuffer<float> intensity;      // [P, n] unshifted
  DeviceBuffer<float> shifted;        // [P, n] intensities as returned
  DeviceBuffer<float> given;          // [P, n] dL/dI or counts as given (shifted)
  DeviceBuffer<float> dldi;           // [P, n] unshifted
  DeviceBuffer<cplx<float>> ramp_y;   // [P, ny]
  DeviceBuffer<cplx<float>> ramp_x;   // [P, nx]
  DeviceBuffer<int64_t> window;       // [P, 2]

  ~Device() {
    cudaSetDevice(device);
    fft.reset();  // waits for the stream, then destroys the plans
    if (stream != nullptr) {
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    }
    // The buffers are freed after this body, once nothing is queued.
  }

  size_t call_bytes() const {
    return slices.bytes() + grad_slices.bytes() + positions.bytes() + probe.bytes() + probe_spec.bytes() +
           probe_acc.bytes() + propagator.bytes() + far_band.bytes() + loss.bytes() + tilt.bytes() +
           grad_positions.bytes();
  }
  size_t chunk_bytes() const {
    return waves.bytes() + spectra.bytes() + far.bytes() + work.bytes() + grad.bytes() + intensity.bytes() +
           shifted.bytes() + given.bytes() + dldi.bytes() + ramp_y.bytes() + ramp_x.bytes() + window.bytes();
  }
};

MultisliceCuda::MultisliceCuda(int ny, int nx, int n_slices, int modes, int threads)
    : ny_(ny), nx_(nx), n_slices_(n_slices), modes_(modes) {
  (void)threads;  // the GPU's parallelism is the grid
  if (ny < 2 || nx < 2) throw std::invalid_argument("probe window must be at least 2x2 pixels");
  if (n_slices < 1) throw std::invalid_argument("n_slices must be >= 1");
  if (modes < 1) throw std::invalid_argument("modes must be >= 1");
  if (int64_t(ny) * nx > INT_MAX) throw std::invalid_argument("probe window has more than 2^31 pixels");
  dev_.reset(new Device());
  MSPT_CUDA_CHECK(cudaGetDevice(&dev_->device));
  MSPT_CUDA_CHECK(cudaStreamCreateWithFlags(&dev_->stream, cudaStreamNonBlocking));
  dev_->fft.reset(new FftCuda(ny, nx, dev_->stream));
}

MultisliceCuda::~MultisliceCuda() = default;

size_t MultisliceCuda::scratch_bytes() const {
  return dev_->call_bytes() + dev_->chunk_bytes() + dev_->fft->workspace_bytes();
}

void MultisliceCuda::run(const MultisliceArgs<float>& a) {
  validate_plan_shape(a.prop, a.n_slices, a.modes, ny_, nx_, n_slices_, modes_);
  if (a.tape != nullptr)
    throw std::invalid_argument("tape: the CUDA backend keeps no forward tape (it recomputes the forward pass)");
  const int source = static_cast<int>(a.source);
  if (source < 0 || source > 2) throw std::invalid_argument("unknown gradient source " + std::to_string(source));
  if (a.source == GradientSource::kGiven && a.grad_intensities == nullptr)
    throw std::invalid_argument("grad_intensities: required for a vector-Jacobian product");
  if (a.source == GradientSource::kLikelihood && a.data == nullptr)
    throw std::invalid_argument("data: required for a likelihood gradient");
  validate_windows(a.positions, a.batch, ny_, nx_, a.obj_h, a.obj_w);
  MSPT_CUDA_CHECK(cudaSetDevice(dev_->device));
  try {
    run_on_device(a);
  } catch (...) {
    // Leave nothing queued that still reads the caller's memory, and clear a non-sticky error so the
    // engine can be used again.
    cudaStreamSynchronize(dev_->stream);
    cudaGetLastError();
    throw;
  }
}

void MultisliceCuda::run_on_device(const MultisliceArgs<float>& a) {
  using namespace cuda_kernels;
  Device& d = *dev_;
  FftCuda& fft = *d.fft;
  const cudaStream_t st = d.stream;
  const int ny = ny_, nx = nx_, S = n_slices_, M = modes_;
  const int n = ny * nx;
  const int64_t B = a.batch;
  const int64_t obj_plane = a.obj_h * a.obj_w;
  const size_t object_count = size_t(S) * size_t(obj_plane);
  const float inv_n = float(1.0 / double(n));
  const bool likelihood = a.source == GradientSource::kLikelihood;
  // A likelihood call that asks for no gradient stops after the loss (no backward pass, one wave buffer).
  const bool backward = a.runs_backward();
  const bool need_dldi = backward || likelihood;
  const bool want_slices = backward && a.grad_slices != nullptr;
  const bool want_probe = backward && a.grad_probe != nullptr;
  const bool want_positions = backward && a.grad_positions != nullptr;
  const bool want_tilt = backward && a.grad_tilt != nullptr;

  // ---- inputs and per-call constants ----
  cplx<float>* slices = d.slices.ensure(object_count);
  copy_to_device(slices, a.slices, object_count, st);
  double* positions = d.positions.ensure(size_t(2 * B));
  copy_to_device(positions, a.positions, size_t(2 * B), st);
  cplx<float>* probe = d.probe.ensure(size_t(M) * n);
  cplx<float>* probe_spec = d.probe_spec.ensure(size_t(M) * n);
  copy_to_device(probe, a.probe, size_t(M) * n, st);
  cplx<float>* H = d.propagator.ensure(size_t(n));
  unsigned char* far_band = d.far_band.ensure(size_t(n));
  prepare_kernel<<<plane_grid(n, 1), kThreads, 0, st>>>(a.prop, a.bandlimit_farfield, H, far_band);
  MSPT_CUDA_CHECK_LAUNCH("prepare_kernel");
  fft.forward(probe, probe_spec, M);

  cplx<float>* grad_slices = nullptr;
  cplx<float>* probe_acc = nullptr;
  double* tilt = nullptr;
  double* grad_positions = nullptr;
  double* loss = nullptr;
  if (want_slices) {
    grad_slices = d.grad_slices.ensure(object_count);
    zero(grad_slices, object_count, st);
  }
  if (want_probe) {
    probe_acc = d.probe_acc.ensure(size_t(M) * n);
    zero(probe_acc, size_t(M) * n, st);
  }
  if (want_tilt) {
    tilt = d.tilt.ensure(size_t(2 * B));
    zero(tilt, size_t(2 * B), st);
  }
  if (want_positions) grad_positions = d.grad_positions.ensure(size_t(2 * B));
  if (need_dldi) loss = d.loss.ensure(size_t(B));

  // ---- chunk size and buffers ----
  int64_t P = 0;
  if (B > 0) {
    const size_t plane_set = size_t(M) * n * sizeof(cplx<float>);  // one [M, n] stack
    const size_t wave_sets = backward ? size_t(S) : 1;
    const size_t spectrum_sets = want_tilt ? size_t(S - 1) : 0;
    const size_t grad_sets = backward ? 1 : 0;
    // waves, spectra, far, work, grad, and about one more for cuFFT's work area
    size_t per_position = plane_set * (wave_sets + spectrum_sets + 2 + grad_sets + 1);
    per_position += size_t(n) * sizeof(float) * (1 + (a.intensities ? 1 : 0) + (need_dldi ? 2 : 0));
    per_position += size_t(ny + nx) * sizeof(cplx<float>) + 2 * sizeof(int64_t);
    size_t free_bytes = 0, total_bytes = 0;
    MSPT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const double available = double(free_bytes) + double(d.chunk_bytes());
    const int64_t fit = static_cast<int64_t>(kMemoryShare * available / double(per_position));
    P = std::max<int64_t>(1, std::min<int64_t>(std::min<int64_t>(kMaxChunk, B), fit));
  }
  const size_t stride = size_t(P) * M * n;  // elements of one [P, M, n] stack
  cplx<float>* waves = d.waves.ensure((backward ? size_t(S) : 1) * stride);
  cplx<float>* spectra = want_tilt ? d.spectra.ensure(size_t(S - 1) * stride) : nullptr;
  cplx<float>* far = d.far.ensure(stride);
  cplx<float>* work = d.work.ensure(stride);
  cplx<float>* gradw = backward ? d.grad.ensure(stride) : nullptr;
  float* intensity = d.intensity.ensure(size_t(P) * n);
  float* shifted = a.intensities != nullptr ? d.shifted.ensure(size_t(P) * n) : nullptr;
  float* given = need_dldi ? d.given.ensure(size_t(P) * n) : nullptr;
  float* dldi = need_dldi ? d.dldi.ensure(size_t(P) * n) : nullptr;
  cplx<float>* ramp_y = d.ramp_y.ensure(size_t(P) * ny);
  cplx<float>* ramp_x = d.ramp_x.ensure(size_t(P) * nx);
  int64_t* window = d.window.ensure(size_t(2 * P));
  if (P > 0) {
    fft.reserve(P * M);
    if (B % P != 0) fft.reserve((B % P) * M);
  }
  // Without a backward pass one wave buffer is reused slice after slice.
  auto wave_at = [&](int s) { return backward ? waves + size_t(s) * stride : waves; };
  // Spectrum entering slice s, s in [1, S).
  auto spectrum_at = [&](int s) { return spectra + size_t(s - 1) * stride; };
  const float* given_host = likelihood ? a.data : a.grad_intensities;

  for (int64_t first = 0; first < B; first += P) {
    const int64_t count = std::min<int64_t>(P, B - first);
    const int64_t K = count * M;  // (position, mode) planes in this chunk
    const dim3 grid_k = plane_grid(n, K), grid_p = plane_grid(n, count);
    const unsigned blocks_p = static_cast<unsigned>(count);

    // ---- forward ----
    window_kernel<<<blocks_p, 128, 0, st>>>(positions, first, ny, nx, window, ramp_y, ramp_x);
    MSPT_CUDA_CHECK_LAUNCH("window_kernel");
    shifted_probe_kernel<<<grid_k, kThreads, 0, st>>>(probe_spec, ramp_y, ramp_x, M, ny, nx, K, inv_n, work);
    MSPT_CUDA_CHECK_LAUNCH("shifted_probe_kernel");
    fft.backward(work, wave_at(0), K);
    for (int s = 0; s < S; ++s) {
      transmit_kernel<<<grid_k, kThreads, 0, st>>>(wave_at(s), slices + s * obj_plane, a.obj_w, window, M, ny, nx,
                                                   K, work);
      MSPT_CUDA_CHECK_LAUNCH("transmit_kernel");
      if (s < S - 1) {
        fft.forward(work, work, K);
        propagate_kernel<<<grid_k, kThreads, 0, st>>>(work, H, n, K, want_tilt ? spectrum_at(s + 1) : nullptr);
        MSPT_CUDA_CHECK_LAUNCH("propagate_kernel");
        fft.backward(work, wave_at(s + 1), K);
      } else {
        if (a.exit_waves != nullptr) copy_to_host(a.exit_waves + size_t(first) * M * n, work, size_t(K) * n, st);
        fft.forward(work, far, K);
        intensity_kernel<<<grid_p, kThreads, 0, st>>>(far, far_band, M, ny, nx, count, inv_n, intensity, shifted);
        MSPT_CUDA_CHECK_LAUNCH("intensity_kernel");
      }
    }
    if (a.intensities != nullptr) copy_to_host(a.intensities + size_t(first) * n, shifted, size_t(count) * n, st);
    if (!need_dldi) continue;

    // ---- dL/dI, unshifted ----
    copy_to_device(given, given_host + size_t(first) * n, size_t(count) * n, st);
    dldi_kernel<<<blocks_p, kThreads, 0, st>>>(intensity, given, far_band, likelihood, a.likelihood, a.eps, ny, nx,
                                               dldi, loss + first);
    MSPT_CUDA_CHECK_LAUNCH("dldi_kernel");
    if (!backward) continue;

    // ---- backward ----
    farfield_backward_kernel<<<grid_k, kThreads, 0, st>>>(far, dldi, far_band, M, n, K, inv_n, work);
    MSPT_CUDA_CHECK_LAUNCH("farfield_backward_kernel");
    fft.backward(work, gradw, K);
    for (int s = S - 1; s >= 0; --s) {
      slice_backward_kernel<<<grid_p, kThreads, 0, st>>>(wave_at(s), gradw, slices + s * obj_plane, a.obj_w, window,
                                                         M, ny, nx, count,
                                                         want_slices ? grad_slices + s * obj_plane : nullptr);
      MSPT_CUDA_CHECK_LAUNCH("slice_backward_kernel");
      if (s == 0) break;
      fft.forward(gradw, work, K);
      if (want_tilt) {
        tilt_kernel<<<blocks_p, kThreads, 0, st>>>(work, spectrum_at(s), a.prop, M, tilt + 2 * first);
        MSPT_CUDA_CHECK_LAUNCH("tilt_kernel");
      }
      propagate_adjoint_kernel<<<grid_k, kThreads, 0, st>>>(work, H, n, K);
      MSPT_CUDA_CHECK_LAUNCH("propagate_adjoint_kernel");
      fft.backward(work, gradw, K);
    }
    // gradw is now dL/d(shifted probe) for every (position, mode).
    if (!want_probe && !want_positions) continue;
    fft.forward(gradw, work, K);
    if (want_positions) {
      position_grad_kernel<<<blocks_p, kThreads, 0, st>>>(work, probe_spec, ramp_y, ramp_x, M, ny, nx, inv_n,
                                                          grad_positions + 2 * first);
      MSPT_CUDA_CHECK_LAUNCH("position_grad_kernel");
    }
    if (want_probe) {
      probe_grad_kernel<<<plane_grid(n, M), kThreads, 0, st>>>(work, ramp_y, ramp_x, M, ny, nx, count, inv_n,
                                                               probe_acc);
      MSPT_CUDA_CHECK_LAUNCH("probe_grad_kernel");
    }
  }

  if (!need_dldi) {
    MSPT_CUDA_CHECK(cudaStreamSynchronize(st));
    return;
  }

  // ---- totals ----
  if (want_slices) copy_to_host(a.grad_slices, grad_slices, object_count, st);
  if (want_probe) {
    fft.backward(probe_acc, probe_acc, M);
    copy_to_host(a.grad_probe, probe_acc, size_t(M) * n, st);
  }
  if (want_positions) copy_to_host(a.grad_positions, grad_positions, size_t(2 * B), st);
  std::vector<double> tilt_terms(want_tilt ? size_t(2 * B) : 0);
  if (want_tilt) copy_to_host(tilt_terms.data(), tilt, tilt_terms.size(), st);
  std::vector<double> loss_terms(likelihood ? size_t(B) : 0);
  if (likelihood) copy_to_host(loss_terms.data(), loss, loss_terms.size(), st);
  MSPT_CUDA_CHECK(cudaStreamSynchronize(st));

  // Summed in position order, as on the CPU.
  if (want_tilt) {
    double ty = 0, tx = 0;
    for (int64_t b = 0; b < B; ++b) {
      ty += 2 * kPi * a.prop.dz_A * tilt_terms[2 * b];
      tx += 2 * kPi * a.prop.dz_A * tilt_terms[2 * b + 1];
    }
    a.grad_tilt[0] = ty;
    a.grad_tilt[1] = tx;
  }
  if (likelihood) {
    double total = 0;
    for (int64_t b = 0; b < B; ++b) total += loss_terms[b];
    if (a.loss != nullptr) *a.loss = total;
    if (a.loss_per_position != nullptr) std::copy(loss_terms.begin(), loss_terms.end(), a.loss_per_position);
  }
}

}  // namespace mspt
