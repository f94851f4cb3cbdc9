// The ptychography engine's object update after one batch, over the union of the batch's probe windows
// only: the batch's illumination (its probe intensity summed at every window), the preconditioned step
//     O -= step * dL/dO / (curvature * (illumination + floor_fraction * max illumination)),
// the object constraint, and the gradient cleared where it was read. Outside the windows the gradient is
// zero and the step changes nothing, so this equals the whole-object update (the constraint is a
// projection: pixels that already satisfy it stay put) at a cost that follows the batch, not the object.
#pragma once

#include <stdint.h>

#include "mspt/complex.h"

namespace mspt {

template <class T>
struct ObjectStepArgs {
  cplx<T>* slices = nullptr;          // [S, H, W] updated in place
  cplx<T>* grad = nullptr;            // [S, H, W] dL/dO, zero outside the windows; zeroed inside them
  int64_t n_slices = 0, obj_h = 0, obj_w = 0;
  const T* probe_intensity = nullptr; // [ny, nx] summed over modes
  int ny = 0, nx = 0;
  const double* positions = nullptr;  // [B, 2] window centres (object pixels)
  int64_t batch = 0;
  T step = T(1), curvature = T(1), floor_fraction = T(0.1);
  int constraint = 0;                 // ObjectConstraint
  int threads = 0;                    // 0: OpenMP's default
};

// Runs the update; returns the largest illumination of the batch.
template <class T>
T windowed_object_step_cpu(const ObjectStepArgs<T>& args);

// The object constraint (ObjectConstraint) on every one of `count` transmission values, in place: the
// engine projects the whole stack once per pass (the windowed step projects only a batch's windows).
template <class T>
void constrain_object_cpu(cplx<T>* values, int64_t count, int constraint, int threads);

}  // namespace mspt
