#include "cpu/probe_step_cpu.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "cpu/linear_ops_cpu.h"
#include "kernels/object_step_body.h"

namespace mspt {

template <class T>
T windowed_probe_step_cpu(const ProbeStepArgs<T>& a) {
  if (a.modes < 1 || a.ny < 1 || a.nx < 1)
    throw std::invalid_argument("probe: expected a non-empty (modes, ny, nx) stack");
  if (a.batch < 1) throw std::invalid_argument("positions_px: expected at least one position");
  const size_t n = size_t(a.ny) * a.nx;
  // The coverage (window_power_cpu checks that every window lies inside the slice), then the gains in place.
  std::vector<T> gain(n);
  window_power_cpu(a.slice, a.obj_h, a.obj_w, a.positions, a.batch, a.ny, a.nx, a.threads, gain.data());
  const T peak = *std::max_element(gain.begin(), gain.end());
  const T floor = a.floor_fraction * peak;
  for (T& value : gain) value = step_gain(value, floor, a.curvature, a.step);
  for (int m = 0; m < a.modes; ++m) {
    cplx<T>* p = a.probe + size_t(m) * n;
    const cplx<T>* g = a.grad + size_t(m) * n;
    for (size_t i = 0; i < n; ++i) p[i] = preconditioned_update(p[i], g[i], gain[i]);
  }
  return peak;
}

template float windowed_probe_step_cpu<float>(const ProbeStepArgs<float>&);
template double windowed_probe_step_cpu<double>(const ProbeStepArgs<double>&);

}  // namespace mspt
