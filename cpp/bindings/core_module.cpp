// mspt._core: the CPU backend (OpenMP + FFTW). Always built; imports without a GPU.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/multislice_binding.h"
#include "cpu/fft_cpu.h"
#include "cpu/likelihood_cpu.h"
#include "cpu/multislice_cpu.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

template <class T>
py::tuple likelihood_py(const py::array& intensity, const py::array& data, int kind, double eps,
                        const py::object& mask) {
  std::vector<py::ssize_t> shape(intensity.shape(), intensity.shape() + intensity.ndim());
  const T* i = mspt::check_array<T>("intensity", intensity, shape, false);
  const T* d = mspt::check_array<T>("data", data, shape, false);
  const unsigned char* w = nullptr;
  if (!mask.is_none()) {
    w = reinterpret_cast<const unsigned char*>(mspt::check_array<bool>("mask", py::cast<py::array>(mask), shape, false));
  }
  py::array_t<T> grad(shape);
  double loss = 0;
  {
    py::gil_scoped_release release;
    loss = mspt::likelihood_cpu<T>(i, d, w, size_t(intensity.size()), kind, T(eps), grad.mutable_data());
  }
  return py::make_tuple(loss, grad);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "mspt CPU backend: multislice operators on OpenMP + FFTW";
  mspt::bind_multislice<mspt::MultisliceCpu<float>, float>(
      m, "MultisliceCpu32", "Multislice plan on the CPU, single precision (the production path).");
  mspt::bind_multislice<mspt::MultisliceCpu<double>, double>(
      m, "MultisliceCpu64", "Multislice plan on the CPU, double precision (the reference path for tests).");
  m.def("likelihood32", &likelihood_py<float>, "intensity"_a, "data"_a, "kind"_a, "eps"_a, "mask"_a = py::none());
  m.def("likelihood64", &likelihood_py<double>, "intensity"_a, "data"_a, "kind"_a, "eps"_a, "mask"_a = py::none());
  m.def("build_info", []() {
    py::dict d;
    d["fft"] = "FFTW " + mspt::fftw_version();
    d["fftw_planner"] = mspt::fftw_planner_name();
    d["openmp_threads"] = omp_get_max_threads();
#ifdef MSPT_VERSION
    d["version"] = MSPT_VERSION;
#endif
    return d;
  });
}
