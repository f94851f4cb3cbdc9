// The arguments of one multislice call, shared by the CPU and CUDA backends. Pointers are host pointers for
// the CPU; for the CUDA engine they are device pointers of the call's device (its host-array entry point
// stages host arrays through device buffers it owns first); shapes are given in comments.
// A null output pointer means "not requested".
#pragma once

#include <stdint.h>

#include "kernels/multislice_body.h"
#include "mspt/complex.h"

namespace mspt {

enum class GradientSource : int {
  kNone = 0,        // forward only
  kGiven = 1,       // dL/dI supplied by the caller (multislice_vjp)
  kLikelihood = 2,  // dL/dI from a likelihood against measured counts (fused loss and gradient)
};

// The forward state kept for a later vector-Jacobian product (CPU backend only: cpu/multislice_tape.h).
template <class T>
class MultisliceTape;

template <class T>
struct MultisliceArgs {
  // Inputs.
  const cplx<T>* slices = nullptr;  // [S, H, W] transmission functions, entrance -> exit
  int64_t n_slices = 0, obj_h = 0, obj_w = 0;
  const cplx<T>* probe = nullptr;   // [M, ny, nx] probe modes, real space, centred at (ny/2, nx/2)
  int modes = 0;
  const double* positions = nullptr;  // [B, 2] (y, x) window centres in object pixels
  int64_t batch = 0;
  PropagationParams prop{};         // grid, sampling, wavelength, dz, tilt, band limit
  bool bandlimit_farfield = true;   // zero the far field outside the band limit

  // Forward outputs.
  T* intensities = nullptr;         // [B, ny, nx], zero frequency at (ny/2, nx/2)
  cplx<T>* exit_waves = nullptr;    // [B, M, ny, nx], after the last slice, real space

  // Gradient request.
  GradientSource source = GradientSource::kNone;
  const T* grad_intensities = nullptr;  // [B, ny, nx] dL/dI (kGiven), shifted like intensities
  const T* data = nullptr;              // [B, ny, nx] measured counts (kLikelihood), shifted
  int likelihood = kPoisson;
  T eps = T(1e-6);

  // Gradient outputs (overwritten, not accumulated, except grad_slices with accumulate_slices).
  cplx<T>* grad_slices = nullptr;   // [S, H, W]
  // The slice gradient is added to grad_slices' content: a reconstruction keeps one zeroed buffer and clears
  // only the windows it used, instead of clearing the whole object every batch.
  bool accumulate_slices = false;
  cplx<T>* grad_probe = nullptr;    // [M, ny, nx]
  double* grad_positions = nullptr; // [B, 2] dL/d(y, x) in pixels
  double* grad_tilt = nullptr;      // [2] dL/d(tan ty, tan tx)
  double* loss = nullptr;           // [1] summed over the batch (kLikelihood)
  double* loss_per_position = nullptr;  // [B] (kLikelihood), optional

  // Optional (CPU backend): a forward run (kNone) records its state here; a vector-Jacobian product
  // (kGiven) replays it instead of running the forward pass again.
  MultisliceTape<T>* tape = nullptr;

  // Whether any gradient output is requested.
  bool wants_gradient() const {
    return grad_slices != nullptr || grad_probe != nullptr || grad_positions != nullptr || grad_tilt != nullptr;
  }
  // Whether the backward pass runs: a likelihood call that asks for no gradient stops after the loss.
  bool runs_backward() const { return source != GradientSource::kNone && wants_gradient(); }
};

}  // namespace mspt
