// The Python face of a multislice engine (CPU or CUDA): one `run` that validates every array against the
// plan's shape, fills MultisliceArgs and runs with the GIL released. Shared by _core and _core_cuda so
// both backends take exactly the same arguments; the array checks (multislice_args) also serve the CUDA
// engine's device-pointer entry point.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <complex>
#include <type_traits>
#include <vector>

#include "bindings/check_array.h"
#include "mspt/multislice_args.h"

namespace mspt {
namespace py = pybind11;
using namespace pybind11::literals;

// The engine's tape type (Engine::Tape), or void for an engine that keeps none (the CUDA engine).
template <class Engine, class = void>
struct EngineTape {
  using type = void;
};
template <class Engine>
struct EngineTape<Engine, std::void_t<typename Engine::Tape>> {
  using type = typename Engine::Tape;
};

// A tape argument: None, or a tape of the engine's type (bound as MultisliceTape32/64).
template <class Engine, class T>
MultisliceTape<T>* tape_argument(const py::object& tape) {
  using Tape = typename EngineTape<Engine>::type;
  if (tape.is_none()) return nullptr;
  if constexpr (std::is_void_v<Tape>) {
    throw py::value_error("tape: this backend keeps no forward tape (it recomputes the forward pass); pass None");
  } else {
    if (!py::isinstance<Tape>(tape))
      throw py::value_error("tape: expected a tape of this engine's precision, got " +
                            std::string(py::str(py::type::of(tape))));
    return &tape.cast<Tape&>();
  }
}

// MultisliceArgs from the Python arguments of a run: every array is checked against the shapes that the
// slices, probe and positions define. `Arrays` reads an array argument: HostArrays (NumPy buffers) here, or
// DeviceArrays (cuda/device_arrays.h: descriptors of device memory) for the CUDA engine's run_device, so
// both entry points check their arrays by the same rules.
template <class T, class Arrays>
MultisliceArgs<T> multislice_args(Arrays& arrays, const py::object& slices, const py::object& probe,
                                  const py::object& positions, double dz_A, double wavelength_A, double dy_A,
                                  double dx_A, double tan_tilt_y, double tan_tilt_x, double cutoff_invA,
                                  bool bandlimit_farfield, const py::object& intensities, const py::object& exit_waves,
                                  int source, const py::object& grad_intensities, const py::object& data,
                                  int likelihood, double eps, const py::object& grad_slices,
                                  const py::object& grad_probe, const py::object& grad_positions,
                                  const py::object& grad_tilt, const py::object& loss_per_position) {
  using C = std::complex<T>;
  MultisliceArgs<T> a;
  const std::vector<py::ssize_t> slices_shape = arrays.shape("slices", slices);
  const py::ssize_t S = slices_shape.size() == 3 ? slices_shape[0] : -1;
  a.slices = reinterpret_cast<const cplx<T>*>(arrays.template required<C>("slices", slices, {S, -1, -1}, false));
  a.n_slices = slices_shape[0];
  a.obj_h = slices_shape[1];
  a.obj_w = slices_shape[2];
  const std::vector<py::ssize_t> probe_shape = arrays.shape("probe", probe);
  const py::ssize_t M = probe_shape.size() == 3 ? probe_shape[0] : -1;
  const py::ssize_t ny = probe_shape.size() == 3 ? probe_shape[1] : -1;
  const py::ssize_t nx = probe_shape.size() == 3 ? probe_shape[2] : -1;
  a.probe = reinterpret_cast<const cplx<T>*>(arrays.template required<C>("probe", probe, {M, ny, nx}, false));
  a.modes = int(M);
  const std::vector<py::ssize_t> positions_shape = arrays.shape("positions_px", positions);
  const py::ssize_t B = positions_shape.size() == 2 ? positions_shape[0] : -1;
  a.positions = arrays.template required<double>("positions_px", positions, {B, 2}, false);
  a.batch = B;
  a.prop = PropagationParams{int(ny), int(nx), dy_A, dx_A, wavelength_A, dz_A, tan_tilt_y, tan_tilt_x, cutoff_invA};
  a.bandlimit_farfield = bandlimit_farfield;
  a.intensities = arrays.template optional<T>("intensities", intensities, {B, ny, nx}, true);
  a.exit_waves =
      reinterpret_cast<cplx<T>*>(arrays.template optional<C>("exit_waves", exit_waves, {B, M, ny, nx}, true));
  a.source = static_cast<GradientSource>(source);
  a.grad_intensities = arrays.template optional<T>("grad_intensities", grad_intensities, {B, ny, nx}, false);
  a.data = arrays.template optional<T>("data", data, {B, ny, nx}, false);
  if (a.source == GradientSource::kGiven && grad_intensities.is_none())
    throw py::value_error("grad_intensities: required for a vector-Jacobian product");
  if (a.source == GradientSource::kLikelihood && data.is_none())
    throw py::value_error("data: required for a likelihood gradient");
  a.likelihood = likelihood;
  a.eps = T(eps);
  a.grad_slices = reinterpret_cast<cplx<T>*>(
      arrays.template optional<C>("grad_slices", grad_slices, {S, a.obj_h, a.obj_w}, true));
  a.grad_probe = reinterpret_cast<cplx<T>*>(arrays.template optional<C>("grad_probe", grad_probe, {M, ny, nx}, true));
  a.grad_positions = arrays.template optional<double>("grad_positions", grad_positions, {B, 2}, true);
  a.grad_tilt = arrays.template optional<double>("grad_tilt", grad_tilt, {2}, true);
  a.loss_per_position = arrays.template optional<double>("loss_per_position", loss_per_position, {B}, true);
  return a;
}

// Binds an engine's constructor and its host-array `run`; returns the class so that a backend can add its
// own entry points (the CUDA engine's run_device).
template <class Engine, class T>
py::class_<Engine> bind_multislice(py::module_& m, const char* name, const char* doc) {
  py::class_<Engine> cls(m, name, doc, py::module_local());
  cls.def(py::init<int, int, int, int, int>(), "ny"_a, "nx"_a, "n_slices"_a, "modes"_a, "threads"_a = 0)
      .def_property_readonly("threads", &Engine::threads)
      .def_property_readonly("scratch_bytes", &Engine::scratch_bytes)
      .def(
          "run",
          [](Engine& engine, const py::array& slices, const py::array& probe, const py::array& positions, double dz_A,
             double wavelength_A, double dy_A, double dx_A, double tan_tilt_y, double tan_tilt_x, double cutoff_invA,
             bool bandlimit_farfield, const py::object& intensities, const py::object& exit_waves, int source,
             const py::object& grad_intensities, const py::object& data, int likelihood, double eps,
             const py::object& grad_slices, const py::object& grad_probe, const py::object& grad_positions,
             const py::object& grad_tilt, const py::object& loss_per_position, const py::object& tape,
             bool accumulate_slices) {
            HostArrays arrays;
            MultisliceArgs<T> a = multislice_args<T>(
                arrays, slices, probe, positions, dz_A, wavelength_A, dy_A, dx_A, tan_tilt_y, tan_tilt_x, cutoff_invA,
                bandlimit_farfield, intensities, exit_waves, source, grad_intensities, data, likelihood, eps,
                grad_slices, grad_probe, grad_positions, grad_tilt, loss_per_position);
            a.tape = tape_argument<Engine, T>(tape);
            a.accumulate_slices = accumulate_slices;
            double loss = 0;
            a.loss = &loss;
            {
              py::gil_scoped_release release;
              engine.run(a);
            }
            return loss;
          },
          "slices"_a, "probe"_a, "positions_px"_a, "dz_A"_a, "wavelength_A"_a, "dy_A"_a, "dx_A"_a, "tan_tilt_y"_a,
          "tan_tilt_x"_a, "cutoff_invA"_a, "bandlimit_farfield"_a, "intensities"_a = py::none(),
          "exit_waves"_a = py::none(), "source"_a = 0, "grad_intensities"_a = py::none(), "data"_a = py::none(),
          "likelihood"_a = 0, "eps"_a = 1e-6, "grad_slices"_a = py::none(), "grad_probe"_a = py::none(),
          "grad_positions"_a = py::none(), "grad_tilt"_a = py::none(), "loss_per_position"_a = py::none(),
          "tape"_a = py::none(), "accumulate_slices"_a = false,
          "Run the multislice model (and its gradient) on one batch of positions; returns the summed loss. "
          "With a tape, a forward run (source 0) records its state there and a vector-Jacobian product "
          "(source 1) replays it instead of running the forward pass again. With accumulate_slices the "
          "slice gradient is added to grad_slices instead of overwriting it.");
  return cls;
}

}  // namespace mspt
