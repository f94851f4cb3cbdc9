// The Python face of the engine's batch steps: the windowed object step and the whole-stack constraint
// (cpu/object_step_cpu.h), the windowed probe step (cpu/probe_step_cpu.h). Arrays are checked against the
// updated array's shape and precision; the work runs with the GIL released.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <complex>
#include <vector>

#include "bindings/check_array.h"
#include "cpu/object_step_cpu.h"
#include "cpu/probe_step_cpu.h"

namespace mspt {
namespace py = pybind11;

// What the object and the probe steps share: the batch's positions (checked) and the step's scalars.
template <class Args>
void set_batch_step(Args& a, const py::array& positions, double step, double curvature, double floor_fraction,
                    int threads) {
  using T = decltype(a.step);
  const py::ssize_t B = positions.ndim() == 2 ? positions.shape(0) : -1;
  a.positions = check_array<double>("positions_px", positions, {B, 2}, false);
  a.batch = B;
  a.step = T(step);
  a.curvature = T(curvature);
  a.floor_fraction = T(floor_fraction);
  a.threads = threads;
}

template <class T>
double windowed_object_step_typed(const py::array& slices, const py::array& grad, const py::array& probe_intensity,
                                  const py::array& positions, double step, double curvature, double floor_fraction,
                                  int constraint, int threads) {
  using C = std::complex<T>;
  ObjectStepArgs<T> a;
  a.slices = reinterpret_cast<cplx<T>*>(check_array<C>("slices", slices, {-1, -1, -1}, true));
  a.n_slices = slices.shape(0);
  a.obj_h = slices.shape(1);
  a.obj_w = slices.shape(2);
  a.grad = reinterpret_cast<cplx<T>*>(check_array<C>("grad", grad, {a.n_slices, a.obj_h, a.obj_w}, true));
  a.probe_intensity = check_array<T>("probe_intensity", probe_intensity, {-1, -1}, false);
  a.ny = int(probe_intensity.shape(0));
  a.nx = int(probe_intensity.shape(1));
  set_batch_step(a, positions, step, curvature, floor_fraction, threads);
  a.constraint = constraint;
  py::gil_scoped_release release;
  return double(windowed_object_step_cpu<T>(a));
}

template <class T>
void constrain_object_typed(const py::array& slices, int constraint, int threads) {
  using C = std::complex<T>;
  const std::vector<py::ssize_t> any_shape(size_t(slices.ndim()), -1);
  cplx<T>* values = reinterpret_cast<cplx<T>*>(check_array<C>("slices", slices, any_shape, true));
  const int64_t count = int64_t(slices.size());
  py::gil_scoped_release release;
  constrain_object_cpu<T>(values, count, constraint, threads);
}

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
  set_batch_step(a, positions, step, curvature, floor_fraction, threads);
  py::gil_scoped_release release;
  return double(windowed_probe_step_cpu<T>(a));
}

inline void bind_batch_steps(py::module_& m) {
  using namespace pybind11::literals;
  m.def(
      "constrain_object",
      [](const py::array& slices, int constraint, int threads) {
        if (slices.dtype().is(py::dtype::of<std::complex<double>>()))
          constrain_object_typed<double>(slices, constraint, threads);
        else
          constrain_object_typed<float>(slices, constraint, threads);
      },
      "slices"_a, "constraint"_a, "threads"_a = 0,
      "The object constraint on every value of a C-contiguous complex array, in place.");
  m.def(
      "windowed_object_step",
      [](const py::array& slices, const py::array& grad, const py::array& probe_intensity, const py::array& positions,
         double step, double curvature, double floor_fraction, int constraint, int threads) {
        if (slices.dtype().is(py::dtype::of<std::complex<double>>()))
          return windowed_object_step_typed<double>(slices, grad, probe_intensity, positions, step, curvature,
                                                    floor_fraction, constraint, threads);
        return windowed_object_step_typed<float>(slices, grad, probe_intensity, positions, step, curvature,
                                                 floor_fraction, constraint, threads);
      },
      "slices"_a, "grad"_a, "probe_intensity"_a, "positions_px"_a, "step"_a, "curvature"_a, "floor_fraction"_a,
      "constraint"_a, "threads"_a = 0,
      "The preconditioned object step of one batch over the union of its probe windows: slices updated and "
      "constrained in place, grad zeroed where it was read; returns the batch's largest illumination.");
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
