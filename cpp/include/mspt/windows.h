// Host-side check that every probe window lies inside the object, done before any work starts so a bad
// position is a clear error instead of an out-of-bounds read.
#pragma once

#include <stdint.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/multislice_body.h"

namespace mspt {

inline void validate_windows(const double* positions, int64_t batch, int ny, int nx, int64_t obj_h, int64_t obj_w) {
  for (int64_t b = 0; b < batch; ++b) {
    const double y = positions[2 * b], x = positions[2 * b + 1];
    if (!std::isfinite(y) || !std::isfinite(x)) {
      throw std::invalid_argument("positions_px[" + std::to_string(b) + "] is not finite");
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
