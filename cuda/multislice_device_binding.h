// The CUDA multislice engine's entry point on device memory: `run_device` takes the arguments of `run`
// (cpp/bindings/multislice_binding.h), each array as a device-array descriptor (cuda/device_arrays.h), plus
// a device for the one-double `loss`, the CUDA device, the stream (cudaStream_t as an integer, 0: the
// legacy default stream) and whether to wait for the work. Arrays are checked by the same rules as run's.
#pragma once

#include <pybind11/pybind11.h>
#include <stdint.h>

#include "bindings/multislice_binding.h"
#include "device_arrays.h"
#include "multislice_cuda.h"

namespace mspt {

inline void bind_multislice_device(py::class_<MultisliceCuda>& cls) {
  using namespace pybind11::literals;
  cls.def(py::init<int, int, int, int, int, int>(), "ny"_a, "nx"_a, "n_slices"_a, "modes"_a, "threads"_a = 0,
          "device"_a = -1)
      .def_property_readonly("device", &MultisliceCuda::device)
      .def(
          "run_device",
          [](MultisliceCuda& engine, const py::object& slices, const py::object& probe, const py::object& positions,
             double dz_A, double wavelength_A, double dy_A, double dx_A, double tan_tilt_y, double tan_tilt_x,
             double cutoff_invA, bool bandlimit_farfield, const py::object& intensities, const py::object& exit_waves,
             int source, const py::object& grad_intensities, const py::object& data, int likelihood, double eps,
             const py::object& grad_slices, const py::object& grad_probe, const py::object& grad_positions,
             const py::object& grad_tilt, const py::object& loss, const py::object& loss_per_position, int device,
             uintptr_t stream, bool synchronize, bool accumulate_slices) {
            DeviceArrays arrays(device);
            MultisliceArgs<float> a = multislice_args<float>(
                arrays, slices, probe, positions, dz_A, wavelength_A, dy_A, dx_A, tan_tilt_y, tan_tilt_x, cutoff_invA,
                bandlimit_farfield, intensities, exit_waves, source, grad_intensities, data, likelihood, eps,
                grad_slices, grad_probe, grad_positions, grad_tilt, loss_per_position);
            a.loss = arrays.optional<double>("loss", loss, {1}, true);
            a.accumulate_slices = accumulate_slices;
            arrays.verify_memory();
            py::gil_scoped_release release;
            engine.run_device(a, device, reinterpret_cast<CUstream_st*>(stream), synchronize);
          },
          "slices"_a, "probe"_a, "positions_px"_a, "dz_A"_a, "wavelength_A"_a, "dy_A"_a, "dx_A"_a, "tan_tilt_y"_a,
          "tan_tilt_x"_a, "cutoff_invA"_a, "bandlimit_farfield"_a, "intensities"_a = py::none(),
          "exit_waves"_a = py::none(), "source"_a = 0, "grad_intensities"_a = py::none(), "data"_a = py::none(),
          "likelihood"_a = 0, "eps"_a = 1e-6, "grad_slices"_a = py::none(), "grad_probe"_a = py::none(),
          "grad_positions"_a = py::none(), "grad_tilt"_a = py::none(), "loss"_a = py::none(),
          "loss_per_position"_a = py::none(), py::kw_only(), "device"_a, "stream"_a = 0, "synchronize"_a = false,
          "accumulate_slices"_a = false,
          "run on device memory: every array is a descriptor (pointer, shape, dtype name) of C-contiguous memory "
          "of CUDA device `device`, outputs included (written in place); `loss` is a (1,) float64 array that "
          "receives a likelihood call's summed loss. The work is queued on `stream` (cudaStream_t as an "
          "integer; 0: the legacy default stream) after what is queued there. With `synchronize` the positions "
          "are checked on the host first (ValueError naming positions_px[b], as in run) and the call returns "
          "once the work is done; without it nothing waits, and a position whose window leaves the object "
          "makes every result that depends on it NaN. With accumulate_slices the slice gradient is added to "
          "grad_slices instead of overwriting it.");
}

}  // namespace mspt
