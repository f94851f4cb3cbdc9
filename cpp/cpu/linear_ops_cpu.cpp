#include "cpu/linear_ops_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/fft_cpu.h"
#include "mspt/windows.h"

namespace mspt {
namespace {

// Below this many elements a parallel region costs more than it saves (and stalls behind any busy core).
constexpr int64_t kParallelThreshold = int64_t(1) << 16;
constexpr int64_t kLightLoopThreshold = int64_t(1) << 21;

// Runs fn(k, spectrum) between a forward and an inverse FFT of every wave, one wave per thread.
template <class T, class SpectrumOp>
void filter_waves(const cplx<T>* waves, int64_t count, int ny, int nx, cplx<T>* out, SpectrumOp fn) {
  const size_t n = size_t(ny) * nx;
  auto fft = Fft2Plan<T>::get(ny, nx);
#pragma omp parallel if (count * int64_t(n) > kParallelThreshold)
  {
    AlignedBuffer<cplx<T>> a(n), b(n);
#pragma omp for schedule(static)
    for (int64_t k = 0; k < count; ++k) {
      std::memcpy(static_cast<void*>(a.data()), waves + size_t(k) * n, n * sizeof(cplx<T>));
      fft->forward(a.data(), b.data());
      fn(k, b.data());
      fft->backward(b.data(), a.data());
      std::memcpy(static_cast<void*>(out + size_t(k) * n), a.data(), n * sizeof(cplx<T>));
    }
  }
}

}  // namespace

template <class T>
void propagate_cpu(const cplx<T>* waves, int64_t count, const PropagationParams& p, bool adjoint, cplx<T>* out) {
  const int ny = p.ny, nx = p.nx;
  std::vector<cplx<T>> H(size_t(ny) * nx);
  for (int iy = 0; iy < ny; ++iy)
    for (int ix = 0; ix < nx; ++ix) {
      const cplx<T> h = propagator<T>(p, iy, ix);
      H[size_t(iy) * nx + ix] = adjoint ? conj(h) : h;
    }
  filter_waves<T>(waves, count, ny, nx, out, [&](int64_t, cplx<T>* spec) {
    for (size_t i = 0; i < H.size(); ++i) spec[i] = spec[i] * H[i];
  });
}

template <class T>
void fourier_shift_cpu(const cplx<T>* waves, int64_t count, int ny, int nx, const double* shifts_px, bool adjoint,
                       cplx<T>* out) {
  const T inv_n = T(1.0 / (double(ny) * nx));
  const double sign = adjoint ? -1.0 : 1.0;
  filter_waves<T>(waves, count, ny, nx, out, [&](int64_t k, cplx<T>* spec) {
    const double sy = sign * shifts_px[2 * k], sx = sign * shifts_px[2 * k + 1];
    std::vector<cplx<T>> rx(nx);
    for (int ix = 0; ix < nx; ++ix) rx[ix] = shift_ramp_1d<T>(ix, nx, sx);
    for (int iy = 0; iy < ny; ++iy) {
      const cplx<T> ry = shift_ramp_1d<T>(iy, ny, sy) * inv_n;
      for (int ix = 0; ix < nx; ++ix) spec[size_t(iy) * nx + ix] = spec[size_t(iy) * nx + ix] * (ry * rx[ix]);
    }
  });
}

template <class T>
void extract_windows_cpu(const cplx<T>* object, int64_t obj_h, int64_t obj_w, const double* positions_px,
                         int64_t batch, int ny, int nx, cplx<T>* patches) {
  validate_windows(positions_px, batch, ny, nx, obj_h, obj_w);
#pragma omp parallel for schedule(static) if (batch * ny * nx > kParallelThreshold)
  for (int64_t b = 0; b < batch; ++b) {
    const ProbeWindow w = probe_window(positions_px[2 * b], positions_px[2 * b + 1], ny, nx);
    const cplx<T> one = make_cplx<T>(1, 0);
    cplx<T>* dst = patches + size_t(b) * ny * nx;
    for (int iy = 0; iy < ny; ++iy)
      for (int ix = 0; ix < nx; ++ix) dst[size_t(iy) * nx + ix] = transmit(one, object, obj_w, w.r0, w.c0, iy, ix);
  }
}

template <class T>
void overlap_add_cpu(const cplx<T>* patches, const double* positions_px, int64_t batch, int ny, int nx, int64_t obj_h,
                     int64_t obj_w, cplx<T>* object) {
  validate_windows(positions_px, batch, ny, nx, obj_h, obj_w);
  std::vector<ProbeWindow> windows(batch);
  for (int64_t b = 0; b < batch; ++b) windows[b] = probe_window(positions_px[2 * b], positions_px[2 * b + 1], ny, nx);
  // Parallel over object rows, positions in order: deterministic, no two threads write one element.
#pragma omp parallel for schedule(static) if (batch * ny * nx > kParallelThreshold)
  for (int64_t row = 0; row < obj_h; ++row) {
    cplx<T>* dst = object + row * obj_w;
    std::memset(static_cast<void*>(dst), 0, obj_w * sizeof(cplx<T>));
    for (int64_t b = 0; b < batch; ++b) {
      const ProbeWindow& w = windows[b];
      if (row < w.r0 || row >= w.r0 + ny) continue;
      const cplx<T>* src = patches + (size_t(b) * ny + (row - w.r0)) * nx;
      for (int ix = 0; ix < nx; ++ix) dst[w.c0 + ix] = dst[w.c0 + ix] + src[ix];
    }
  }
}

template <class T>
void overlap_add_patch_cpu(const T* patch, const double* positions_px, int64_t batch, int ny, int nx, int64_t obj_h,
                           int64_t obj_w, T* out) {
  validate_windows(positions_px, batch, ny, nx, obj_h, obj_w);
  std::vector<ProbeWindow> windows(batch);
  for (int64_t b = 0; b < batch; ++b) windows[b] = probe_window(positions_px[2 * b], positions_px[2 * b + 1], ny, nx);
#pragma omp parallel for schedule(static) if (batch * ny * nx > kParallelThreshold)
  for (int64_t row = 0; row < obj_h; ++row) {
    T* dst = out + row * obj_w;
    std::fill(dst, dst + obj_w, T(0));
    for (int64_t b = 0; b < batch; ++b) {
      const ProbeWindow& w = windows[b];
      if (row < w.r0 || row >= w.r0 + ny) continue;
      const T* src = patch + (row - w.r0) * nx;
      for (int ix = 0; ix < nx; ++ix) dst[w.c0 + ix] += src[ix];
    }
  }
}

template <class T>
void window_power_cpu(const cplx<T>* object, int64_t obj_h, int64_t obj_w, const double* positions_px, int64_t batch,
                      int ny, int nx, int threads, T* out) {
  validate_windows(positions_px, batch, ny, nx, obj_h, obj_w);
  const int team = threads > 0 ? threads : omp_get_max_threads();
  // One multiply-add per element: a team pays only on far larger sums than a batch's (32 windows of 64^2
  // took 117 us on 2 threads against 55 us on 1).
#pragma omp parallel for num_threads(team) schedule(static) if (batch * ny * nx > kLightLoopThreshold)
  for (int iy = 0; iy < ny; ++iy) {
    T* dst = out + int64_t(iy) * nx;
    std::fill(dst, dst + nx, T(0));
    for (int64_t b = 0; b < batch; ++b) {
      const ProbeWindow w = probe_window(positions_px[2 * b], positions_px[2 * b + 1], ny, nx);
      const cplx<T>* src = object + (w.r0 + iy) * obj_w + w.c0;
      for (int ix = 0; ix < nx; ++ix) dst[ix] += norm2(src[ix]);
    }
  }
}

#define MSPT_INSTANTIATE(T)                                                                                        \
  template void propagate_cpu<T>(const cplx<T>*, int64_t, const PropagationParams&, bool, cplx<T>*);              \
  template void fourier_shift_cpu<T>(const cplx<T>*, int64_t, int, int, const double*, bool, cplx<T>*);           \
  template void extract_windows_cpu<T>(const cplx<T>*, int64_t, int64_t, const double*, int64_t, int, int,        \
                                       cplx<T>*);                                                                  \
  template void overlap_add_cpu<T>(const cplx<T>*, const double*, int64_t, int, int, int64_t, int64_t, cplx<T>*); \
  template void overlap_add_patch_cpu<T>(const T*, const double*, int64_t, int, int, int64_t, int64_t, T*);       \
  template void window_power_cpu<T>(const cplx<T>*, int64_t, int64_t, const double*, int64_t, int, int, int, T*);
MSPT_INSTANTIATE(float)
MSPT_INSTANTIATE(double)
#undef MSPT_INSTANTIATE

}  // namespace mspt
