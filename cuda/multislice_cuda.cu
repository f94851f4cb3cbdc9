#include "multislice_cuda.h"

#include <cuda_runtime.h>
#include <limits.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_check.h"
#include "device_buffer.h"
#include "device_guard.h"
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
void copy_async(T* dst, const T* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  if (count == 0) return;
  MSPT_CUDA_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(T), kind, stream));
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
  cudaStream_t stream = nullptr;       // the engine's own, for host-array calls
  cudaEvent_t done = nullptr;          // recorded after each call's work
  bool has_done = false;               // whether `done` was ever recorded
  cudaStream_t call_stream = nullptr;  // the stream of the call in progress
  std::unique_ptr<FftCuda> fft;

  // Scratch of every call.
  DeviceBuffer<cplx<float>> probe_spec;  // [M, n] F(probe)
  DeviceBuffer<cplx<float>> propagator;  // [n] H / n
  DeviceBuffer<unsigned char> far_band;  // [n]
  DeviceBuffer<double> tilt;             // [B, 2] before the factor 2 pi dz
  DeviceBuffer<double> loss;             // [B] per-position losses the caller does not keep

  // Scratch per chunk of P positions.
  DeviceBuffer<cplx<float>> waves;    // [S, P, M, n] wave entering each slice ([1, P, M, n] forward only)
  DeviceBuffer<cplx<float>> spectra;  // [S - 1, P, M, n] propagated spectra entering slices 1 .. S-1
  DeviceBuffer<cplx<float>> far;      // [P, M, n] far-field spectra
  DeviceBuffer<cplx<float>> work;     // [P, M, n]
  DeviceBuffer<cplx<float>> grad;     // [P, M, n]
  DeviceBuffer<float> intensity;      // [P, n] unshifted
  DeviceBuffer<float> dldi;           // [P, n] unshifted
  DeviceBuffer<cplx<float>> ramp_y;   // [P, ny]
  DeviceBuffer<cplx<float>> ramp_x;   // [P, nx]
  DeviceBuffer<int64_t> window;       // [P, 2]

  // Staging of host-array calls (run): the caller's arrays on the device.
  DeviceBuffer<cplx<float>> in_slices;       // [S, H, W]
  DeviceBuffer<cplx<float>> in_probe;        // [M, ny, nx]
  DeviceBuffer<double> in_positions;         // [B, 2]
  DeviceBuffer<float> in_given;              // [B, ny, nx] dL/dI or counts
  DeviceBuffer<float> out_intensities;       // [B, ny, nx]
  DeviceBuffer<cplx<float>> out_exit_waves;  // [B, M, ny, nx]
  DeviceBuffer<cplx<float>> out_grad_slices; // [S, H, W]
  DeviceBuffer<cplx<float>> out_grad_probe;  // [M, ny, nx]
  DeviceBuffer<double> out_grad_positions;   // [B, 2]
  DeviceBuffer<double> out_totals;           // [3] dL/d(tan ty, tan tx), loss
  DeviceBuffer<double> out_loss_per_position;  // [B]

  template <class F>
  void each_call_buffer(F&& f) {
    f(probe_spec);
    f(propagator);
    f(far_band);
    f(tilt);
    f(loss);
  }
  template <class F>
  void each_chunk_buffer(F&& f) {
    f(waves);
    f(spectra);
    f(far);
    f(work);
    f(grad);
    f(intensity);
    f(dldi);
    f(ramp_y);
    f(ramp_x);
    f(window);
  }
  template <class F>
  void each_staging_buffer(F&& f) {
    f(in_slices);
    f(in_probe);
    f(in_positions);
    f(in_given);
    f(out_intensities);
    f(out_exit_waves);
    f(out_grad_slices);
    f(out_grad_probe);
    f(out_grad_positions);
    f(out_totals);
    f(out_loss_per_position);
  }

  size_t chunk_bytes() {
    size_t total = 0;
    each_chunk_buffer([&](const auto& b) { total += b.bytes(); });
    return total;
  }
  size_t held_bytes() {
    size_t total = chunk_bytes();
    each_call_buffer([&](const auto& b) { total += b.bytes(); });
    each_staging_buffer([&](const auto& b) { total += b.bytes(); });
    return total + (fft ? fft->workspace_bytes() : 0);
  }

  // At least `count` elements of `buffer`. Growing frees the old memory, which work queued earlier may still
  // use: the host first waits for the call's stream (which waits for every earlier call, see CallScope).
  template <class T>
  T* grow(DeviceBuffer<T>& buffer, size_t count) {
    if (count > buffer.capacity()) MSPT_CUDA_CHECK(cudaStreamSynchronize(call_stream));
    return buffer.ensure(count);
  }

  ~Device() {
    // Torn down on the engine's device, then the caller's current device is restored. Nothing here can
    // report a failure; the buffers are released explicitly while the device is current.
    int previous = -1;
    const bool switched = cudaGetDevice(&previous) == cudaSuccess && previous != device && cudaSetDevice(device) == cudaSuccess;
    if (has_done) cudaEventSynchronize(done);  // the last call's work, on whichever stream it ran
    fft.reset();                               // waits for the engine's stream, then destroys the plans
    if (stream != nullptr) {
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    }
    if (done != nullptr) cudaEventDestroy(done);
    const auto release = [](auto& b) { b.release(); };
    each_call_buffer(release);
    each_chunk_buffer(release);
    each_staging_buffer(release);
    if (switched) cudaSetDevice(previous);
  }
};

// One call on `stream`: the stream first waits for every earlier call's work (buffers are shared), and the
// FFT plans run on it; at the end (normal or not) the call's work is marked by the engine's event and the
// FFT goes back to the engine's own stream, which outlives any caller's stream.
class MultisliceCuda::CallScope {
 public:
  CallScope(Device& d, cudaStream_t stream) : d_(d), stream_(stream) {
    if (d.has_done) MSPT_CUDA_CHECK(cudaStreamWaitEvent(stream, d.done, 0));
    d.call_stream = stream;
    d.fft->set_stream(stream);
  }
  ~CallScope() {
    if (cudaEventRecord(d_.done, stream_) == cudaSuccess) {
      d_.has_done = true;
    } else {
      // The call's work cannot be marked: wait for everything on the device instead, so that the next
      // call cannot meet this one's work in a shared buffer.
      cudaGetLastError();
      cudaDeviceSynchronize();
      d_.has_done = false;
    }
    d_.fft->set_stream(d_.stream);
    d_.call_stream = d_.stream;
  }
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;

 private:
  Device& d_;
  cudaStream_t stream_;
};

MultisliceCuda::MultisliceCuda(int ny, int nx, int n_slices, int modes, int threads, int device)
    : ny_(ny), nx_(nx), n_slices_(n_slices), modes_(modes) {
  (void)threads;  // the GPU's parallelism is the grid
  if (ny < 2 || nx < 2) throw std::invalid_argument("probe window must be at least 2x2 pixels");
  if (n_slices < 1) throw std::invalid_argument("n_slices must be >= 1");
  if (modes < 1) throw std::invalid_argument("modes must be >= 1");
  if (int64_t(ny) * nx > INT_MAX) throw std::invalid_argument("probe window has more than 2^31 pixels");
  dev_.reset(new Device());
  if (device < 0) {
    MSPT_CUDA_CHECK(cudaGetDevice(&device));
  } else {
    int count = 0;
    MSPT_CUDA_CHECK(cudaGetDeviceCount(&count));
    if (device >= count)
      throw std::invalid_argument("device: cuda:" + std::to_string(device) + " does not exist (" +
                                  std::to_string(count) + " CUDA device(s))");
  }
  dev_->device = device;
  DeviceGuard guard(device);
  MSPT_CUDA_CHECK(cudaStreamCreateWithFlags(&dev_->stream, cudaStreamNonBlocking));
  MSPT_CUDA_CHECK(cudaEventCreateWithFlags(&dev_->done, cudaEventDisableTiming));
  dev_->call_stream = dev_->stream;
  dev_->fft.reset(new FftCuda(ny, nx, dev_->stream));
}

MultisliceCuda::~MultisliceCuda() = default;

int MultisliceCuda::device() const { return dev_->device; }

size_t MultisliceCuda::scratch_bytes() const { return dev_->held_bytes(); }

void MultisliceCuda::validate(const MultisliceArgs<float>& a) const {
  validate_plan_shape(a.prop, a.n_slices, a.modes, ny_, nx_, n_slices_, modes_);
  if (a.tape != nullptr)
    throw std::invalid_argument("tape: the CUDA backend keeps no forward tape (it recomputes the forward pass)");
  const int source = static_cast<int>(a.source);
  if (source < 0 || source > 2) throw std::invalid_argument("unknown gradient source " + std::to_string(source));
  // (An empty batch may come with null arrays: device arrays of no elements have no pointer.)
  if (a.source == GradientSource::kGiven && a.grad_intensities == nullptr && a.batch > 0)
    throw std::invalid_argument("grad_intensities: required for a vector-Jacobian product");
  if (a.source == GradientSource::kLikelihood && a.data == nullptr && a.batch > 0)
    throw std::invalid_argument("data: required for a likelihood gradient");
  if (a.batch < 0) throw std::invalid_argument("positions_px: a negative number of positions");
  if (a.batch > 0 && (a.obj_h < ny_ || a.obj_w < nx_))
    throw std::invalid_argument("slices: the " + std::to_string(a.obj_h) + "x" + std::to_string(a.obj_w) +
                                " object is smaller than the " + std::to_string(ny_) + "x" + std::to_string(nx_) +
                                " probe window; pad the object");
}

void MultisliceCuda::run(const MultisliceArgs<float>& host) {
  validate(host);
  validate_windows(host.positions, host.batch, ny_, nx_, host.obj_h, host.obj_w);
  DeviceGuard guard(dev_->device);
  Device& d = *dev_;
  const cudaStream_t st = d.stream;
  CallScope scope(d, st);
  try {
    const size_t n = size_t(ny_) * nx_, M = size_t(modes_), B = size_t(host.batch);
    const size_t object_count = size_t(n_slices_) * size_t(host.obj_h) * size_t(host.obj_w);
    const bool likelihood = host.source == GradientSource::kLikelihood;
    const bool backward = host.runs_backward();
    const auto upload = [&](auto& buffer, const auto* src, size_t count) {
      auto* dst = d.grow(buffer, count);
      copy_async(dst, src, count, cudaMemcpyHostToDevice, st);
      return dst;
    };
    const auto output = [&](auto& buffer, const void* wanted, size_t count) {
      return wanted != nullptr ? d.grow(buffer, count) : nullptr;
    };

    // The device call's arguments: the host call's, with staging buffers in place of the host arrays.
    MultisliceArgs<float> a = host;
    a.slices = upload(d.in_slices, host.slices, object_count);
    a.probe = upload(d.in_probe, host.probe, M * n);
    a.positions = upload(d.in_positions, host.positions, 2 * B);
    a.data = likelihood ? upload(d.in_given, host.data, B * n) : nullptr;
    a.grad_intensities =
        host.source == GradientSource::kGiven ? upload(d.in_given, host.grad_intensities, B * n) : nullptr;
    a.intensities = output(d.out_intensities, host.intensities, B * n);
    a.exit_waves = output(d.out_exit_waves, host.exit_waves, B * M * n);
    // Accumulating: the caller's gradient goes up first and the engine adds to it.
    a.grad_slices = !backward ? nullptr
                    : host.accumulate_slices && host.grad_slices != nullptr
                        ? upload(d.out_grad_slices, static_cast<const cplx<float>*>(host.grad_slices), object_count)
                        : output(d.out_grad_slices, host.grad_slices, object_count);
    a.grad_probe = backward ? output(d.out_grad_probe, host.grad_probe, M * n) : nullptr;
    a.grad_positions = backward ? output(d.out_grad_positions, host.grad_positions, 2 * B) : nullptr;
    double* totals = d.grow(d.out_totals, 3);
    a.grad_tilt = backward && host.grad_tilt != nullptr ? totals : nullptr;
    a.loss = likelihood ? totals + 2 : nullptr;
    a.loss_per_position = likelihood ? output(d.out_loss_per_position, host.loss_per_position, B) : nullptr;

    enqueue(a, st);

    const auto download = [&](auto* dst, const auto* src, size_t count) {
      if (dst != nullptr && src != nullptr) copy_async(dst, src, count, cudaMemcpyDeviceToHost, st);
    };
    download(host.intensities, a.intensities, B * n);
    download(host.exit_waves, a.exit_waves, B * M * n);
    download(host.grad_slices, a.grad_slices, object_count);
    download(host.grad_probe, a.grad_probe, M * n);
    download(host.grad_positions, a.grad_positions, 2 * B);
    download(host.grad_tilt, a.grad_tilt, 2);
    download(host.loss_per_position, a.loss_per_position, B);
    double loss = 0.0;
    download(likelihood ? &loss : nullptr, a.loss, 1);
    MSPT_CUDA_CHECK(cudaStreamSynchronize(st));
    if (likelihood && host.loss != nullptr) *host.loss = loss;
  } catch (...) {
    // Leave nothing queued that still reads the caller's memory, and clear a non-sticky error so the
    // engine can be used again.
    cudaStreamSynchronize(st);
    cudaGetLastError();
    throw;
  }
}

void MultisliceCuda::run_device(const MultisliceArgs<float>& a, int device, cudaStream_t stream, bool synchronize) {
  validate(a);
  if (device != dev_->device)
    throw std::invalid_argument("device: this engine was made for cuda:" + std::to_string(dev_->device) +
                                ", the arrays are on cuda:" + std::to_string(device));
  DeviceGuard guard(device);
  CallScope scope(*dev_, stream);
  try {
    if (synchronize && a.batch > 0) {
      // The caller accepts a wait: check the windows on the host, as a host-array call does, before any
      // kernel reads the object.
      std::vector<double> positions(size_t(2 * a.batch));
      copy_async(positions.data(), a.positions, positions.size(), cudaMemcpyDeviceToHost, stream);
      MSPT_CUDA_CHECK(cudaStreamSynchronize(stream));
      validate_windows(positions.data(), a.batch, ny_, nx_, a.obj_h, a.obj_w);
    }
    enqueue(a, stream);
    if (synchronize) MSPT_CUDA_CHECK(cudaStreamSynchronize(stream));
  } catch (...) {
    cudaGetLastError();  // clear a non-sticky error; the caller's stream is the caller's to wait for
    throw;
  }
}

void MultisliceCuda::enqueue(const MultisliceArgs<float>& a, cudaStream_t st) {
  using namespace cuda_kernels;
  Device& d = *dev_;
  FftCuda& fft = *d.fft;
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
  const bool want_loss = likelihood && a.loss != nullptr;

  // ---- every buffer first (growing one may wait for the stream), then the work ----
  cplx<float>* probe_spec = d.grow(d.probe_spec, size_t(M) * n);
  cplx<float>* H = d.grow(d.propagator, size_t(n));
  unsigned char* far_band = d.grow(d.far_band, size_t(n));
  double* tilt = want_tilt ? d.grow(d.tilt, size_t(2 * B)) : nullptr;
  double* loss = nullptr;  // [B] per-position losses (zeros for a vjp)
  if (need_dldi) loss = likelihood && a.loss_per_position != nullptr ? a.loss_per_position : d.grow(d.loss, size_t(B));

  int64_t P = 0;  // positions per chunk
  if (B > 0) {
    const size_t plane_set = size_t(M) * n * sizeof(cplx<float>);  // one [M, n] stack
    const size_t wave_sets = backward ? size_t(S) : 1;
    const size_t spectrum_sets = want_tilt ? size_t(S - 1) : 0;
    const size_t grad_sets = backward ? 1 : 0;
    // waves, spectra, far, work, grad, and about one more for cuFFT's work area
    size_t per_position = plane_set * (wave_sets + spectrum_sets + 2 + grad_sets + 1);
    per_position += size_t(n) * sizeof(float) * (1 + (need_dldi ? 1 : 0));  // intensity, dL/dI
    per_position += size_t(ny + nx) * sizeof(cplx<float>) + 2 * sizeof(int64_t);
    size_t free_bytes = 0, total_bytes = 0;
    MSPT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const double available = double(free_bytes) + double(d.chunk_bytes());
    const int64_t fit = static_cast<int64_t>(kMemoryShare * available / double(per_position));
    P = std::max<int64_t>(1, std::min<int64_t>(std::min<int64_t>(kMaxChunk, B), fit));
  }
  const size_t stride = size_t(P) * M * n;  // elements of one [P, M, n] stack
  cplx<float>* waves = d.grow(d.waves, (backward ? size_t(S) : 1) * stride);
  cplx<float>* spectra = want_tilt ? d.grow(d.spectra, size_t(S - 1) * stride) : nullptr;
  cplx<float>* far = d.grow(d.far, stride);
  cplx<float>* work = d.grow(d.work, stride);
  cplx<float>* gradw = backward ? d.grow(d.grad, stride) : nullptr;
  float* intensity = d.grow(d.intensity, size_t(P) * n);
  float* dldi = need_dldi ? d.grow(d.dldi, size_t(P) * n) : nullptr;
  cplx<float>* ramp_y = d.grow(d.ramp_y, size_t(P) * ny);
  cplx<float>* ramp_x = d.grow(d.ramp_x, size_t(P) * nx);
  int64_t* window = d.grow(d.window, size_t(2 * P));
  fft.reserve(M);
  if (P > 0) {
    fft.reserve(P * M);
    if (B % P != 0) fft.reserve((B % P) * M);
  }
  // Without a backward pass one wave buffer is reused slice after slice.
  auto wave_at = [&](int s) { return backward ? waves + size_t(s) * stride : waves; };
  // Spectrum entering slice s, s in [1, S).
  auto spectrum_at = [&](int s) { return spectra + size_t(s - 1) * stride; };
  const float* given = likelihood ? a.data : a.grad_intensities;  // [B, ny, nx] shifted

  // ---- per-call constants and zeroed accumulators ----
  prepare_kernel<<<plane_grid(n, 1), kThreads, 0, st>>>(a.prop, a.bandlimit_farfield, H, far_band);
  MSPT_CUDA_CHECK_LAUNCH("prepare_kernel");
  fft.forward(a.probe, probe_spec, M);
  if (want_slices && !a.accumulate_slices) zero(a.grad_slices, object_count, st);
  if (want_probe) zero(a.grad_probe, size_t(M) * n, st);  // the probe gradient's spectra accumulate here
  if (want_tilt) zero(tilt, size_t(2 * B), st);

  for (int64_t first = 0; first < B; first += P) {
    const int64_t count = std::min<int64_t>(P, B - first);
    const int64_t K = count * M;  // (position, mode) planes in this chunk
    const dim3 grid_k = plane_grid(n, K), grid_p = plane_grid(n, count);
    const unsigned blocks_p = static_cast<unsigned>(count);

    // ---- forward ----
    window_kernel<<<blocks_p, 128, 0, st>>>(a.positions, first, ny, nx, a.obj_h, a.obj_w, window, ramp_y, ramp_x);
    MSPT_CUDA_CHECK_LAUNCH("window_kernel");
    shifted_probe_kernel<<<grid_k, kThreads, 0, st>>>(probe_spec, ramp_y, ramp_x, M, ny, nx, K, inv_n, work);
    MSPT_CUDA_CHECK_LAUNCH("shifted_probe_kernel");
    fft.backward(work, wave_at(0), K);
    for (int s = 0; s < S; ++s) {
      transmit_kernel<<<grid_k, kThreads, 0, st>>>(wave_at(s), a.slices + s * obj_plane, a.obj_w, window, M, ny, nx,
                                                   K, work);
      MSPT_CUDA_CHECK_LAUNCH("transmit_kernel");
      if (s < S - 1) {
        fft.forward(work, work, K);
        propagate_kernel<<<grid_k, kThreads, 0, st>>>(work, H, n, K, want_tilt ? spectrum_at(s + 1) : nullptr);
        MSPT_CUDA_CHECK_LAUNCH("propagate_kernel");
        fft.backward(work, wave_at(s + 1), K);
      } else {
        if (a.exit_waves != nullptr)
          copy_async(a.exit_waves + size_t(first) * M * n, work, size_t(K) * n, cudaMemcpyDeviceToDevice, st);
        fft.forward(work, far, K);
        intensity_kernel<<<grid_p, kThreads, 0, st>>>(far, far_band, M, ny, nx, count, inv_n, intensity,
                                                      a.intensities != nullptr ? a.intensities + first * n : nullptr);
        MSPT_CUDA_CHECK_LAUNCH("intensity_kernel");
      }
    }
    if (!need_dldi) continue;

    // ---- dL/dI, unshifted ----
    dldi_kernel<<<blocks_p, kThreads, 0, st>>>(intensity, given + first * n, far_band, likelihood, a.likelihood, a.eps,
                                               ny, nx, dldi, loss + first);
    MSPT_CUDA_CHECK_LAUNCH("dldi_kernel");
    if (!backward) continue;

    // ---- backward ----
    farfield_backward_kernel<<<grid_k, kThreads, 0, st>>>(far, dldi, far_band, M, n, K, inv_n, work);
    MSPT_CUDA_CHECK_LAUNCH("farfield_backward_kernel");
    fft.backward(work, gradw, K);
    for (int s = S - 1; s >= 0; --s) {
      slice_backward_kernel<<<grid_p, kThreads, 0, st>>>(wave_at(s), gradw, a.slices + s * obj_plane, a.obj_w,
                                                         window, M, ny, nx, count,
                                                         want_slices ? a.grad_slices + s * obj_plane : nullptr);
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
                                                          a.grad_positions + 2 * first);
      MSPT_CUDA_CHECK_LAUNCH("position_grad_kernel");
    }
    if (want_probe) {
      probe_grad_kernel<<<plane_grid(n, M), kThreads, 0, st>>>(work, ramp_y, ramp_x, M, ny, nx, count, inv_n,
                                                               a.grad_probe);
      MSPT_CUDA_CHECK_LAUNCH("probe_grad_kernel");
    }
  }

  // ---- totals ----
  if (want_probe) fft.backward(a.grad_probe, a.grad_probe, M);
  if (want_tilt || want_loss) {
    totals_kernel<<<1, 32, 0, st>>>(want_tilt ? tilt : nullptr, want_loss ? loss : nullptr, B,
                                    2 * kPi * a.prop.dz_A, a.grad_tilt, a.loss);
    MSPT_CUDA_CHECK_LAUNCH("totals_kernel");
  }
}

}  // namespace mspt
