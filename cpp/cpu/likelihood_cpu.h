// Likelihood of measured counts under modelled intensities, and its gradient, on the CPU (the same
// likelihood_element body the fused multislice gradient uses).
#pragma once

#include <stddef.h>

#include "kernels/multislice_body.h"

namespace mspt {

// Returns the summed loss; grad[k] = dL/dintensity[k]. mask (optional, 1 = use) drops pixels.
template <class T>
double likelihood_cpu(const T* intensity, const T* data, const unsigned char* mask, size_t count, int kind, T eps,
                      T* grad) {
  double loss = 0;
#pragma omp parallel for reduction(+ : loss) schedule(static) if (count > (size_t(1) << 16))
  for (long long k = 0; k < (long long)count; ++k) {
    if (mask != nullptr && !mask[k]) {
      grad[k] = T(0);
      continue;
    }
    T g;
    loss += likelihood_element(kind, intensity[k], data[k], eps, &g);
    grad[k] = g;
  }
  return loss;
}

}  // namespace mspt
