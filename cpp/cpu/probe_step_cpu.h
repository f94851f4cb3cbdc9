// The ptychography engine's probe update after one batch, in one call: the batch's coverage (the entrance
// slice's |O|^2 summed over the batch's probe windows, on the probe's grid) and the preconditioned step of
// every probe mode
//     P -= step * dL/dP / (curvature * (coverage + floor_fraction * max coverage)).
// It mirrors the object's step (object_step_cpu.h), with the roles of probe and object swapped.
#pragma once

#include <stdint.h>

#include "mspt/complex.h"

namespace mspt {

template <class T>
struct ProbeStepArgs {
  cplx<T>* probe = nullptr;           // [M, ny, nx] updated in place
  const cplx<T>* grad = nullptr;      // [M, ny, nx] dL/dP
  int modes = 0, ny = 0, nx = 0;
  const cplx<T>* slice = nullptr;     // [H, W] the entrance slice
  int64_t obj_h = 0, obj_w = 0;
  const double* positions = nullptr;  // [B, 2] window centres (object pixels)
  int64_t batch = 0;
  T step = T(1), curvature = T(1), floor_fraction = T(0.1);
  int threads = 0;                    // 0: OpenMP's default
};

// Runs the update; returns the batch's largest coverage.
template <class T>
T windowed_probe_step_cpu(const ProbeStepArgs<T>& args);

}  // namespace mspt
