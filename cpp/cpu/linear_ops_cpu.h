// The linear building blocks of the multislice model as standalone CPU operators, each with its exact
// adjoint: Fresnel propagation, Fourier (sub-pixel) shift, and window extraction / overlap-add. They use
// the same kernel bodies as the multislice engine, so their dot-product tests cover the engine's parts.
#pragma once

#include <stdint.h>

#include "kernels/multislice_body.h"
#include "mspt/complex.h"

namespace mspt {

// waves [K, ny, nx] -> out [K, ny, nx]: F^-1(H F psi), or F^-1(conj(H) F psi) when adjoint.
template <class T>
void propagate_cpu(const cplx<T>* waves, int64_t count, const PropagationParams& p, bool adjoint, cplx<T>* out);

// waves [K, ny, nx] shifted by shifts_px [K, 2] (y, x) pixels: F^-1(exp(-2 pi i k.s) F psi); the adjoint
// shifts by -s.
template <class T>
void fourier_shift_cpu(const cplx<T>* waves, int64_t count, int ny, int nx, const double* shifts_px, bool adjoint,
                       cplx<T>* out);

// object [H, W] -> patches [B, ny, nx] at the probe windows of positions_px [B, 2].
template <class T>
void extract_windows_cpu(const cplx<T>* object, int64_t obj_h, int64_t obj_w, const double* positions_px,
                         int64_t batch, int ny, int nx, cplx<T>* patches);

// The adjoint: patches [B, ny, nx] summed into object [H, W] (overwritten) in position order.
template <class T>
void overlap_add_cpu(const cplx<T>* patches, const double* positions_px, int64_t batch, int ny, int nx, int64_t obj_h,
                     int64_t obj_w, cplx<T>* object);

// The summed intensity of one real patch [ny, nx] placed at every probe window: out [H, W] (overwritten),
// deterministic (rows in parallel, positions in order). The illumination of a batch, without B copies.
template <class T>
void overlap_add_patch_cpu(const T* patch, const double* positions_px, int64_t batch, int ny, int nx, int64_t obj_h,
                           int64_t obj_w, T* out);

// The summed |object window|^2 over the probe windows: out [ny, nx] (overwritten), deterministic; on
// `threads` threads (0: OpenMP's default).
template <class T>
void window_power_cpu(const cplx<T>* object, int64_t obj_h, int64_t obj_w, const double* positions_px, int64_t batch,
                      int ny, int nx, int threads, T* out);

}  // namespace mspt
