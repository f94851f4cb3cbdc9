// Multislice kernel bodies: the per-element arithmetic of the multislice model and its vector-Jacobian
// product, written once and called by both backends (cpu/multislice_cpu.cpp loops over them with OpenMP,
// cuda/multislice_cuda.cu launches them on a grid). A CPU test of these bodies is a test of the GPU's
// arithmetic.
//
// Conventions (see DESIGN.md):
//   * grids are (ny, nx), C order, unshifted FFT order unless a name says "shifted";
//   * FFTs are unnormalised (FFTW / cuFFT); the 1/n factors live in the bodies below so that the model is
//     the orthonormal one: far field = F(psi)/sqrt(n), intensities sum to the probe's norm;
//   * a gradient of a real loss L w.r.t. a complex z is dL/dRe(z) + i dL/dIm(z) (PyTorch's convention).
#pragma once

#include <stdint.h>

#include "mspt/complex.h"

namespace mspt {

constexpr double kPi = 3.14159265358979323846;

// Frequency of FFT bin i on an n-point grid, in cycles per sample (numpy.fft.fftfreq).
MSPT_HD double fft_freq(int i, int n) {
  return (i < (n + 1) / 2 ? i : i - n) / static_cast<double>(n);
}

// Row/column of the fftshifted array that holds unshifted bin u (zero frequency at n/2).
MSPT_HD int shifted_index(int u, int n) { return (u + n / 2) % n; }

// Where a probe window sits on the object: the ny x nx window covers rows [r0, r0 + ny) and columns
// [c0, c0 + nx); the probe is Fourier-shifted by (frac_y, frac_x) pixels inside it. round() is
// floor(v + 0.5) everywhere, so the CPU, the GPU and Python agree at exact halves.
struct ProbeWindow {
  int64_t r0, c0;
  double frac_y, frac_x;
};

MSPT_HD ProbeWindow probe_window(double y_px, double x_px, int ny, int nx) {
  const double ry = floor(y_px + 0.5), rx = floor(x_px + 0.5);
  return ProbeWindow{static_cast<int64_t>(ry) - ny / 2, static_cast<int64_t>(rx) - nx / 2, y_px - ry, x_px - rx};
}

// The fractional part of a probe position is a Fourier shift: exp(-2 pi i k f), k in cycles/pixel.
// The ramp is separable, so backends may evaluate it per row and per column.
template <class T>
MSPT_HD cplx<T> shift_ramp_1d(int i, int n, double frac_px) {
  return expi(static_cast<T>(-2.0 * kPi * fft_freq(i, n) * frac_px));
}

// Everything that defines the propagator and the band limit of one call.
struct PropagationParams {
  int ny, nx;
  double dy_A, dx_A;          // real-space sampling
  double wavelength_A;
  double dz_A;                // slice thickness
  double tan_tilt_y, tan_tilt_x;  // beam tilt (mistilt)
  double cutoff_invA;         // band limit radius; <= 0 disables it
};

MSPT_HD double freq_y_invA(const PropagationParams& p, int iy) { return fft_freq(iy, p.ny) / p.dy_A; }
MSPT_HD double freq_x_invA(const PropagationParams& p, int ix) { return fft_freq(ix, p.nx) / p.dx_A; }

// 1 inside the band limit (|k| < cutoff, strict as abTEM), 0 outside.
MSPT_HD bool inside_band(const PropagationParams& p, int iy, int ix) {
  if (p.cutoff_invA <= 0) return true;
  const double ky = freq_y_invA(p, iy), kx = freq_x_invA(p, ix);
  return ky * ky + kx * kx < p.cutoff_invA * p.cutoff_invA;
}

// Band-limited Fresnel propagator over dz with beam tilt, divided by n so that F^-1(H F psi) needs no
// further scaling: exp(-i pi lambda dz |k|^2 - 2 pi i dz (ky tan ty + kx tan tx)) / n.
template <class T>
MSPT_HD cplx<T> propagator(const PropagationParams& p, int iy, int ix) {
  if (!inside_band(p, iy, ix)) return make_cplx<T>(0, 0);
  const double ky = freq_y_invA(p, iy), kx = freq_x_invA(p, ix);
  const double phase = -kPi * p.wavelength_A * p.dz_A * (ky * ky + kx * kx) -
                       2.0 * kPi * p.dz_A * (ky * p.tan_tilt_y + kx * p.tan_tilt_x);
  return expi(static_cast<T>(phase)) * static_cast<T>(1.0 / (double(p.ny) * p.nx));
}

// Transmission through a slice window: psi * O[r0 + iy, c0 + ix].
template <class T>
MSPT_HD cplx<T> transmit(cplx<T> psi, const cplx<T>* slice, int64_t obj_w, int64_t r0, int64_t c0, int iy, int ix) {
  return psi * slice[(r0 + iy) * obj_w + (c0 + ix)];
}

// Backward through the transmission: the wave's gradient is conj(O) * g.
template <class T>
MSPT_HD cplx<T> transmit_adjoint(cplx<T> grad, const cplx<T>* slice, int64_t obj_w, int64_t r0, int64_t c0, int iy,
                                 int ix) {
  return conj_mul(slice[(r0 + iy) * obj_w + (c0 + ix)], grad);
}

// Far-field intensity of one mode at an unshifted bin: |F psi|^2 / n inside the band, 0 outside.
template <class T>
MSPT_HD T farfield_intensity(cplx<T> spectrum, bool in_band, T inv_n) {
  return in_band ? norm2(spectrum) * inv_n : T(0);
}

// Gradient w.r.t. the unnormalised spectrum F psi of one mode, given dL/dI at that bin: 2 g F(psi) / n.
// Applying the unnormalised inverse FFT to it gives dL/dpsi.
template <class T>
MSPT_HD cplx<T> farfield_backward(cplx<T> spectrum, T grad_intensity, bool in_band, T inv_n) {
  return in_band ? spectrum * (T(2) * grad_intensity * inv_n) : make_cplx<T>(0, 0);
}

// Likelihoods of measured counts d given a modelled intensity i, and dL/di.
// Poisson: the deviance i - d + d log(d / i) (0 at a perfect fit), gradient 1 - d / i.
// Amplitude (Gaussian on sqrt): (sqrt(i) - sqrt(d))^2, gradient 1 - sqrt(d) / sqrt(i).
// eps keeps both finite where the model predicts no electrons.
// `log` is the logarithm to use: the C library's by default, a vectorisable one in the CPU loops.
enum LikelihoodKind : int { kPoisson = 0, kAmplitude = 1 };

struct LibmLog {
  template <class T>
  MSPT_HD T operator()(T x) const {
    return m_log(x);
  }
};

template <class T, class Log = LibmLog>
MSPT_HD T likelihood_element(int kind, T i, T d, T eps, T* grad, Log log = Log()) {
  const T ie = i + eps;
  if (kind == kPoisson) {
    *grad = T(1) - d / ie;
    const T log_term = d > T(0) ? d * log(d / ie) : T(0);
    return ie - d + log_term;
  }
  const T sq = m_sqrt(ie);
  const T sd = m_sqrt(d > T(0) ? d : T(0));
  *grad = T(1) - sd / sq;
  return (sq - sd) * (sq - sd);
}

}  // namespace mspt
