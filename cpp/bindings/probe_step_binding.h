// The Python face of the windowed probe step (cpu/probe_step_cpu.h): arrays checked against the probe's
// shape and precision, the work run with the GIL released.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <complex>

#include "bindings/check_array.h"
#include "cpu/probe_step_cpu.h"

namespace mspt {
namespace py = pybind11;

template <class T>
double windowed_probe_step_typed(const py::array& probe, const py::array& grad, const py::array& slice,
                                 const py::array& positions, double step, double curvature, double floor_fraction,
                                 int threads) {
  using C = std::complex<T>;
  ProbeStepArgs<T> a;
  a.probe = reinterpret_cast<cplx<T>*>(check_array<C>("probe", probe, {-1, -1, -1}, true));
  a.modes = int(probe.shape(0));
  a.ny = int(probe.shape(1));
  a.nx = int(probe.shape(2));
  a.grad = reinterpret_cast<const cplx<T>*>(check_array<C>("grad", grad, {a.modes, a.ny, a.nx}, false));
  a.slice = reinterpret_cast<const cplx<T>*>(check_array<C>("slice", slice, {-1, -1}, false));
  a.obj_h = slice.shape(0);
  a.obj_w = slice.shape(1);
  const py::ssize_t B = positions.ndim() == 2 ? positions.shape(0) : -1;
  a.positions = check_array<double>("positions_px", positions, {B, 2}, false);
  a.batch = B;
  a.step = T(step);
  a.curvature = T(curvature);
  a.floor_fraction = T(floor_fraction);
  a.threads = threads;
  py::gil_scoped_release release;
  return double(windowed_probe_step_cpu<T>(a));
}

inline void bind_probe_step(py::module_& m) {
  using namespace pybind11::literals;
  m.def(
      "windowed_probe_step",
      [](const py::array& probe, const py::array& grad, const py::array& slice, const py::array& positions,
         double step, double curvature, double floor_fraction, int threads) {
        if (probe.dtype().is(py::dtype::of<std::complex<double>>()))
          return windowed_probe_step_typed<double>(probe, grad, slice, positions, step, curvature, floor_fraction,
                                                   threads);
        return windowed_probe_step_typed<float>(probe, grad, slice, positions, step, curvature, floor_fraction,
                                                threads);
      },
      "probe"_a, "grad"_a, "slice"_a, "positions_px"_a, "step"_a, "curvature"_a, "floor_fraction"_a, "threads"_a = 0,
      "The preconditioned probe step of one batch: every mode updated in place with gains from the entrance "
      "slice's power over the batch's windows; returns the batch's largest coverage.");
}

}  // namespace mspt
