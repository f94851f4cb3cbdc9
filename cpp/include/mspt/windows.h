// Host-side checks done before any work starts, so a bad call is a clear error instead of an out-of-bounds
// read: the arguments match the engine's plan, and every probe window lies inside the object.
#pragma once

#include <stdint.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/multislice_body.h"

namespace mspt {

// The probe and slice counts of a call against the shape an engine was planned for.
inline void validate_plan_shape(const PropagationParams& prop, int64_t n_slices, int modes, int ny, int nx,
                                int plan_slices, int plan_modes) {
  if (prop.ny != ny || prop.nx != nx || modes != plan_modes) {
    throw std::invalid_argument("probe: this plan expects shape (" + std::to_string(plan_modes) + ", " +
                                std::to_string(ny) + ", " + std::to_string(nx) + "), got (" + std::to_string(modes) +
                                ", " + std::to_string(prop.ny) + ", " + std::to_string(prop.nx) + ")");
  }
  if (n_slices != plan_slices) {
    throw std::invalid_argument("slices: this plan expects " + std::to_string(plan_slices) + " slices, got " +
                                std::to_string(n_slices));
  }
}

inline void validate_windows(const double* positions, int64_t batch, int ny, int nx, int64_t obj_h, int64_t obj_w) {
  for (int64_t b = 0; b < batch; ++b) {
    const double y = positions[2 * b], x = positions[2 * b + 1];
    if (!std::isfinite(y) || !std::isfinite(x)) {
      throw std::invalid_argument("positions_px: expected finite (y, x) pixel positions, got (" + std::to_string(y) +
                                  ", " + std::to_string(x) + ") at index " + std::to_string(b));
    }
    const ProbeWindow w = probe_window(y, x, ny, nx);
    if (w.r0 < 0 || w.c0 < 0 || w.r0 + ny > obj_h || w.c0 + nx > obj_w) {
      throw std::invalid_argument("positions_px[" + std::to_string(b) + "] = (" + std::to_string(y) + ", " +
                                  std::to_string(x) + ") puts the " + std::to_string(ny) + "x" + std::to_string(nx) +
                                  " probe window at rows [" + std::to_string(w.r0) + ", " + std::to_string(w.r0 + ny) +
                                  "), columns [" + std::to_string(w.c0) + ", " + std::to_string(w.c0 + nx) +
                                  ") outside the " + std::to_string(obj_h) + "x" + std::to_string(obj_w) +
                                  " object; pad the object");
    }
  }
}

}  // namespace mspt
