// The Python face of a multislice tape (cpu/multislice_tape.h): made by Python for one call's shape, filled
// by a forward run and read by vector-Jacobian products; opaque otherwise.
#pragma once

#include <pybind11/pybind11.h>

#include "cpu/multislice_tape.h"

namespace mspt {
namespace py = pybind11;

template <class T>
void bind_multislice_tape(py::module_& m, const char* name) {
  using namespace pybind11::literals;
  using Tape = MultisliceTape<T>;
  py::class_<Tape>(m, name, py::module_local(),
                   "The forward state of one multislice call (waves entering each slice, far fields, and the "
                   "propagated spectra with_spectra), kept for its vector-Jacobian products.")
      .def(py::init([](int64_t batch, int n_slices, int modes, int ny, int nx, bool with_spectra) {
             py::gil_scoped_release release;  // allocation of a large buffer
             return new Tape(batch, n_slices, modes, ny, nx, with_spectra);
           }),
           "batch"_a, "n_slices"_a, "modes"_a, "ny"_a, "nx"_a, "with_spectra"_a)
      .def_property_readonly("nbytes", &Tape::bytes)
      .def_property_readonly(
          "shape", [](const Tape& t) { return py::make_tuple(t.batch(), t.n_slices(), t.modes(), t.ny(), t.nx()); },
          "(batch, n_slices, modes, ny, nx) the tape was made for.")
      .def_property_readonly("recorded", &Tape::recorded)
      .def_property_readonly("with_spectra", &Tape::with_spectra)
      .def_static("bytes_for", &Tape::bytes_for, "batch"_a, "n_slices"_a, "modes"_a, "ny"_a, "nx"_a,
                  "with_spectra"_a, "Bytes a tape of this shape holds.");
}

}  // namespace mspt
