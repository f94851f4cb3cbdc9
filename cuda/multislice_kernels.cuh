// Grid launches of the multislice kernel bodies (kernels/multislice_body.h) for a chunk of P probe
// positions and M modes at once: the CUDA counterpart of the loops in cpu/multislice_cpu.cpp.
// No arithmetic of the model is written here; each kernel indexes its element and calls the body.
//
// Layouts (C order, per chunk):
//   plane      one ny x nx grid, n = ny * nx elements, unshifted FFT order unless named "shifted"
//   [P, M, n]  waves / spectra of every (position, mode) pair: plane k = p * M + m
//   [P, n]     per-position planes (intensities, dL/dI)
//   [P, 2]     per-position window origins (r0, c0) and pairs of derivatives
//
// "Plane kernels" run a 2D grid: x covers the n elements of a plane, y walks the planes (grid-stride, so
// any number of planes fits the 65535 limit of gridDim.y). "Position kernels" run one block per position
// and reduce over that position's planes in double precision.
// Included by multislice_cuda.cu only (the kernels have external linkage).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "block_reduce.cuh"
#include "kernels/multislice_body.h"
#include "mspt/complex.h"
#include "mspt/multislice_args.h"

namespace mspt {
namespace cuda_kernels {

constexpr int kThreads = 256;  // a multiple of 32, as block_sum2 needs

// Launch shape of a plane kernel over `planes` planes of n elements (n < 2^31, planes >= 1).
inline dim3 plane_grid(int n, int64_t planes) {
  const unsigned bx = static_cast<unsigned>((int64_t(n) + kThreads - 1) / kThreads);
  const unsigned by = static_cast<unsigned>(planes < 65535 ? planes : 65535);
  return dim3(bx, by, 1);
}

// Element of the calling thread in a plane kernel; false past the end of the plane.
__device__ __forceinline__ bool plane_element(int n, int nx, int& i, int& iy, int& ix) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n) return false;
  i = static_cast<int>(e);
  iy = i / nx;
  ix = i - iy * nx;
  return true;
}

// Propagator H / n and the far-field band of one call.
//   H         [n]  propagator<float>
//   far_band  [n]  1 where the model predicts the far field (inside the band, or everywhere without
//                  the far-field band limit), 0 elsewhere
__global__ void prepare_kernel(PropagationParams p, bool bandlimit_farfield, cplx<float>* H, unsigned char* far_band) {
  int i, iy, ix;
  if (!plane_element(p.ny * p.nx, p.nx, i, iy, ix)) return;
  H[i] = propagator<float>(p, iy, ix);
  far_band[i] = bandlimit_farfield ? (inside_band(p, iy, ix) ? 1 : 0) : 1;
}

// One block per position of the chunk: window origin and the separable sub-pixel shift ramps.
//   positions  [B, 2]  (y, x) of all positions; the chunk starts at `first`
//   window     [P, 2]  (r0, c0)
//   ramp_y     [P, ny], ramp_x [P, nx]  shift_ramp_1d of the fractional parts
// The host checks the windows before the call where it can read the positions (host arrays, or a caller
// that asked for synchronous semantics). Where it cannot, this kernel is the guard: a position that is not
// finite or whose window leaves the H x W object (H >= ny, W >= nx) gets the window at (0, 0), so that no
// kernel reads or writes outside the object, and NaN ramps, so that every result that depends on it (its
// pattern, its loss, its gradients, and the object and probe gradients it adds to) is NaN, not quietly wrong.
__global__ void window_kernel(const double* positions, int64_t first, int ny, int nx, int64_t obj_h, int64_t obj_w,
                              int64_t* window, cplx<float>* ramp_y, cplx<float>* ramp_x) {
  const int64_t p = blockIdx.x;
  const double y = positions[2 * (first + p)], x = positions[2 * (first + p) + 1];
  const bool finite = isfinite(y) && isfinite(x);
  const ProbeWindow w = probe_window(finite ? y : 0.0, finite ? x : 0.0, ny, nx);
  // Compared as r0 <= H - ny (not r0 + ny <= H), which no far-away position can overflow.
  const bool inside = finite && w.r0 >= 0 && w.c0 >= 0 && w.r0 <= obj_h - ny && w.c0 <= obj_w - nx;
  if (threadIdx.x == 0) {
    window[2 * p] = inside ? w.r0 : 0;
    window[2 * p + 1] = inside ? w.c0 : 0;
  }
  const float nan = __int_as_float(0x7fc00000);
  const cplx<float> poison = make_cplx<float>(nan, nan);
  for (int j = threadIdx.x; j < ny; j += blockDim.x)
    ramp_y[p * ny + j] = inside ? shift_ramp_1d<float>(j, ny, w.frac_y) : poison;
  for (int j = threadIdx.x; j < nx; j += blockDim.x)
    ramp_x[p * nx + j] = inside ? shift_ramp_1d<float>(j, nx, w.frac_x) : poison;
}

// Spectrum of the shifted probe, scaled by 1/n so that the unnormalised inverse FFT gives the wave.
//   probe_spec  [M, n]     F(probe)
//   out         [P, M, n]  F(probe) * ramp / n
__global__ void shifted_probe_kernel(const cplx<float>* probe_spec, const cplx<float>* ramp_y,
                                     const cplx<float>* ramp_x, int modes, int ny, int nx, int64_t planes,
                                     float inv_n, cplx<float>* out) {
  const int n = ny * nx;
  int i, iy, ix;
  if (!plane_element(n, nx, i, iy, ix)) return;
  for (int64_t k = blockIdx.y; k < planes; k += gridDim.y) {
    const int64_t p = k / modes;
    const int m = static_cast<int>(k - p * modes);
    const cplx<float> ry = ramp_y[p * ny + iy] * inv_n;
    out[k * n + i] = probe_spec[int64_t(m) * n + i] * (ry * ramp_x[p * nx + ix]);
  }
}

// Transmission through one slice.
//   psi     [P, M, n]  wave entering the slice
//   slice   [H, W]     transmission function (row stride obj_w)
//   window  [P, 2]
//   out     [P, M, n]  psi * O(window)
__global__ void transmit_kernel(const cplx<float>* psi, const cplx<float>* slice, int64_t obj_w,
                                const int64_t* window, int modes, int ny, int nx, int64_t planes,
                                cplx<float>* out) {
  const int n = ny * nx;
  int i, iy, ix;
  if (!plane_element(n, nx, i, iy, ix)) return;
  for (int64_t k = blockIdx.y; k < planes; k += gridDim.y) {
    const int64_t p = k / modes;
    out[k * n + i] = transmit(psi[k * n + i], slice, obj_w, window[2 * p], window[2 * p + 1], iy, ix);
  }
}

// Propagation in Fourier space: spec *= H, optionally keeping a copy of the product (for the tilt
// derivative).
//   spec  [K, n] in/out;  H [n];  keep [K, n] or null
__global__ void propagate_kernel(cplx<float>* spec, const cplx<float>* H, int n, int64_t planes, cplx<float>* keep) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n) return;
  const int i = static_cast<int>(e);
  for (int64_t k = blockIdx.y; k < planes; k += gridDim.y) {
    const cplx<float> v = spec[k * n + i] * H[i];
    spec[k * n + i] = v;
    if (keep != nullptr) keep[k * n + i] = v;
  }
}

// Adjoint of the propagation: spec = conj(H) * spec.   spec [K, n] in/out;  H [n]
__global__ void propagate_adjoint_kernel(cplx<float>* spec, const cplx<float>* H, int n, int64_t planes) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n) return;
  const int i = static_cast<int>(e);
  for (int64_t k = blockIdx.y; k < planes; k += gridDim.y) spec[k * n + i] = conj_mul(H[i], spec[k * n + i]);
}

// Far-field intensity summed over modes (modes added in order, as on the CPU).
//   far        [P, M, n]  unnormalised spectra of the exit waves
//   intensity  [P, n]     unshifted
//   shifted    [P, n]     the same, zero frequency at (ny/2, nx/2); null when not requested
__global__ void intensity_kernel(const cplx<float>* far, const unsigned char* far_band, int modes, int ny, int nx,
                                 int64_t positions, float inv_n, float* intensity, float* shifted) {
  const int n = ny * nx;
  int i, iy, ix;
  if (!plane_element(n, nx, i, iy, ix)) return;
  const bool in_band = far_band[i] != 0;
  for (int64_t p = blockIdx.y; p < positions; p += gridDim.y) {
    float sum = 0.0f;
    for (int m = 0; m < modes; ++m) sum += farfield_intensity(far[(p * modes + m) * n + i], in_band, inv_n);
    intensity[p * n + i] = sum;
    if (shifted != nullptr) shifted[p * n + int64_t(shifted_index(iy, ny)) * nx + shifted_index(ix, nx)] = sum;
  }
}

// One block per position: dL/dI (unshifted) from the caller's gradient or from the likelihood, and the
// position's loss. Bins outside the far-field band carry no information for the likelihood: they get
// no loss and a zero gradient, as on the CPU.
//   intensity  [P, n] unshifted;  given [P, n] shifted (dL/dI or counts);  dldi [P, n];  loss [P]
__global__ void dldi_kernel(const float* intensity, const float* given, const unsigned char* far_band,
                            bool from_likelihood, int likelihood, float eps, int ny, int nx, float* dldi,
                            double* loss) {
  const int n = ny * nx;
  const int64_t p = blockIdx.x;
  double sum = 0.0, unused = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int iy = i / nx, ix = i - iy * nx;
    const float v = given[p * n + int64_t(shifted_index(iy, ny)) * nx + shifted_index(ix, nx)];
    float g = 0.0f;
    if (!from_likelihood) {
      g = v;
    } else if (far_band[i] != 0) {
      sum += likelihood_element(likelihood, intensity[p * n + i], v, eps, &g);
    }
    dldi[p * n + i] = g;
  }
  block_sum2(sum, unused);
  if (threadIdx.x == 0) loss[p] = from_likelihood ? sum : 0.0;
}

// Back through the far field: the gradient w.r.t. each mode's unnormalised spectrum.
//   far [P, M, n];  dldi [P, n];  out [P, M, n]
__global__ void farfield_backward_kernel(const cplx<float>* far, const float* dldi, const unsigned char* far_band,
                                         int modes, int n, int64_t planes, float inv_n, cplx<float>* out) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n) return;
  const int i = static_cast<int>(e);
  const bool in_band = far_band[i] != 0;
  for (int64_t k = blockIdx.y; k < planes; k += gridDim.y) {
    const int64_t p = k / modes;
    out[k * n + i] = farfield_backward(far[k * n + i], dldi[p * n + i], in_band, inv_n);
  }
}

// Back through one slice, for every mode of a position: the object gradient sum_m conj(psi) * g is
// added to the slice's gradient (atomics: windows of different positions overlap, so the order of the
// additions, and the last bits of the result, vary from run to run), then g <- conj(O) * g.
//   psi         [P, M, n]  wave entering the slice
//   grad        [P, M, n]  in: dL/d(transmitted wave), out: dL/dpsi
//   slice       [H, W];  window [P, 2]
//   grad_slice  [H, W]     accumulated; null when the object gradient is not requested
__global__ void slice_backward_kernel(const cplx<float>* psi, cplx<float>* grad, const cplx<float>* slice,
                                      int64_t obj_w, const int64_t* window, int modes, int ny, int nx,
                                      int64_t positions, cplx<float>* grad_slice) {
  const int n = ny * nx;
  int i, iy, ix;
  if (!plane_element(n, nx, i, iy, ix)) return;
  for (int64_t p = blockIdx.y; p < positions; p += gridDim.y) {
    const int64_t r0 = window[2 * p], c0 = window[2 * p + 1];
    cplx<float> patch = make_cplx<float>(0.0f, 0.0f);
    for (int m = 0; m < modes; ++m) {
      const int64_t j = (p * modes + m) * n + i;
      const cplx<float> g = grad[j];
      if (grad_slice != nullptr) patch = patch + conj_mul(psi[j], g);
      grad[j] = transmit_adjoint(g, slice, obj_w, r0, c0, iy, ix);
    }
    if (grad_slice != nullptr) {
      cplx<float>* dst = grad_slice + (r0 + iy) * obj_w + (c0 + ix);
      atomicAdd(&dst->re, patch.re);
      atomicAdd(&dst->im, patch.im);
    }
  }
}

// One block per position: this slice's share of dL/d(tan t) before the factor 2 pi dz,
// sum over modes and bins of k * Im(conj(G) * S), added to the position's running totals.
//   grad_spec  [P, M, n]  F(dL/dpsi_s);  spec [P, M, n] propagated spectrum entering slice s
//   tilt       [P, 2]     accumulated (ky term, kx term), 1/A
__global__ void tilt_kernel(const cplx<float>* grad_spec, const cplx<float>* spec, PropagationParams prop,
                            int modes, double* tilt) {
  const int ny = prop.ny, nx = prop.nx, n = ny * nx;
  const int64_t p = blockIdx.x;
  double ty = 0.0, tx = 0.0;
  for (int m = 0; m < modes; ++m) {
    const int64_t base = (p * modes + m) * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int iy = i / nx, ix = i - iy * nx;
      const double im = conj_mul(grad_spec[base + i], spec[base + i]).im;
      ty += freq_y_invA(prop, iy) * im;
      tx += freq_x_invA(prop, ix) * im;
    }
  }
  block_sum2(ty, tx);
  if (threadIdx.x == 0) {
    tilt[2 * p] += ty;
    tilt[2 * p + 1] += tx;
  }
}

// One block per position: dL/d(y, x) in pixels from the gradient w.r.t. the shifted probe.
//   grad_spec  [P, M, n]  F(dL/d(shifted probe));  probe_spec [M, n];  ramps [P, ny], [P, nx]
//   grad_pos   [P, 2]     written
__global__ void position_grad_kernel(const cplx<float>* grad_spec, const cplx<float>* probe_spec,
                                     const cplx<float>* ramp_y, const cplx<float>* ramp_x, int modes, int ny,
                                     int nx, float inv_n, double* grad_pos) {
  const int n = ny * nx;
  const int64_t p = blockIdx.x;
  double py = 0.0, px = 0.0;
  for (int m = 0; m < modes; ++m) {
    const int64_t base = (p * modes + m) * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int iy = i / nx, ix = i - iy * nx;
      const cplx<float> ramp = (ramp_y[p * ny + iy] * inv_n) * ramp_x[p * nx + ix];
      const double im = conj_mul(grad_spec[base + i], probe_spec[int64_t(m) * n + i] * ramp).im;
      py += fft_freq(iy, ny) * im;
      px += fft_freq(ix, nx) * im;
    }
  }
  block_sum2(py, px);
  if (threadIdx.x == 0) {
    grad_pos[2 * p] = 2 * kPi * py;
    grad_pos[2 * p + 1] = 2 * kPi * px;
  }
}

// Probe gradient in Fourier space: acc[m] += sum over the chunk's positions, in position order, of
// conj(ramp) * F(dL/d(shifted probe)). Deterministic (no atomics): one thread per (mode, bin).
//   grad_spec [P, M, n];  ramps [P, ny], [P, nx];  acc [M, n] accumulated
__global__ void probe_grad_kernel(const cplx<float>* grad_spec, const cplx<float>* ramp_y, const cplx<float>* ramp_x,
                                  int modes, int ny, int nx, int64_t positions, float inv_n, cplx<float>* acc) {
  const int n = ny * nx;
  int i, iy, ix;
  if (!plane_element(n, nx, i, iy, ix)) return;
  for (int64_t m = blockIdx.y; m < modes; m += gridDim.y) {
    cplx<float> sum = acc[m * n + i];
    for (int64_t p = 0; p < positions; ++p) {
      const cplx<float> ramp = (ramp_y[p * ny + iy] * inv_n) * ramp_x[p * nx + ix];
      sum = sum + conj_mul(ramp, grad_spec[(p * modes + m) * n + i]);
    }
    acc[m * n + i] = sum;
  }
}

// One thread: the call's totals, summed in position order in double as the CPU engine sums them (explicit
// roundings, so that no multiply-add is fused and the bits match the host sum of the same terms).
//   tilt_terms  [B, 2] per-position tilt sums before the factor `tilt_scale` (2 pi dz), or null
//   loss_terms  [B]    per-position losses, or null
//   grad_tilt   [2]    written when tilt_terms is given;  loss [1] written when loss_terms is given
__global__ void totals_kernel(const double* tilt_terms, const double* loss_terms, int64_t batch, double tilt_scale,
                              double* grad_tilt, double* loss) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  if (tilt_terms != nullptr) {
    double ty = 0.0, tx = 0.0;
    for (int64_t b = 0; b < batch; ++b) {
      ty = __dadd_rn(ty, __dmul_rn(tilt_scale, tilt_terms[2 * b]));
      tx = __dadd_rn(tx, __dmul_rn(tilt_scale, tilt_terms[2 * b + 1]));
    }
    grad_tilt[0] = ty;
    grad_tilt[1] = tx;
  }
  if (loss_terms != nullptr) {
    double total = 0.0;
    for (int64_t b = 0; b < batch; ++b) total = __dadd_rn(total, loss_terms[b]);
    *loss = total;
  }
}

}  // namespace cuda_kernels
}  // namespace mspt
