// mspt._core (and mspt._core_avx2, the same source built for AVX2 + FMA): the CPU backend (OpenMP + FFTW).
// Always built; imports without a GPU.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/multislice_binding.h"
#include "cpu/fft_cpu.h"
#include "cpu/likelihood_cpu.h"
#include "cpu/linear_ops_cpu.h"
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

bool is_double(const py::array& arr) { return arr.dtype().is(py::dtype::of<std::complex<double>>()); }

template <class T>
py::array propagate_py(const py::array& waves, const mspt::PropagationParams& p, bool adjoint) {
  using C = std::complex<T>;
  const py::ssize_t K = waves.ndim() == 3 ? waves.shape(0) : -1;
  const C* in = mspt::check_array<C>("waves", waves, {K, p.ny, p.nx}, false);
  py::array_t<C> out({K, py::ssize_t(p.ny), py::ssize_t(p.nx)});
  {
    py::gil_scoped_release release;
    mspt::propagate_cpu<T>(reinterpret_cast<const mspt::cplx<T>*>(in), K, p, adjoint,
                           reinterpret_cast<mspt::cplx<T>*>(out.mutable_data()));
  }
  return out;
}

template <class T>
py::array fourier_shift_py(const py::array& waves, const py::array& shifts, bool adjoint) {
  using C = std::complex<T>;
  const py::ssize_t K = waves.ndim() == 3 ? waves.shape(0) : -1;
  const C* in = mspt::check_array<C>("waves", waves, {K, -1, -1}, false);
  const double* s = mspt::check_array<double>("shifts_px", shifts, {K, 2}, false);
  const int ny = int(waves.shape(1)), nx = int(waves.shape(2));
  py::array_t<C> out({K, py::ssize_t(ny), py::ssize_t(nx)});
  {
    py::gil_scoped_release release;
    mspt::fourier_shift_cpu<T>(reinterpret_cast<const mspt::cplx<T>*>(in), K, ny, nx, s, adjoint,
                               reinterpret_cast<mspt::cplx<T>*>(out.mutable_data()));
  }
  return out;
}

template <class T>
py::array extract_windows_py(const py::array& object, const py::array& positions, int ny, int nx) {
  using C = std::complex<T>;
  const C* obj = mspt::check_array<C>("object", object, {-1, -1}, false);
  const py::ssize_t B = positions.ndim() == 2 ? positions.shape(0) : -1;
  const double* pos = mspt::check_array<double>("positions_px", positions, {B, 2}, false);
  py::array_t<C> out({B, py::ssize_t(ny), py::ssize_t(nx)});
  {
    py::gil_scoped_release release;
    mspt::extract_windows_cpu<T>(reinterpret_cast<const mspt::cplx<T>*>(obj), object.shape(0), object.shape(1), pos, B,
                                 ny, nx, reinterpret_cast<mspt::cplx<T>*>(out.mutable_data()));
  }
  return out;
}

template <class T>
py::array overlap_add_py(const py::array& patches, const py::array& positions, py::ssize_t obj_h, py::ssize_t obj_w) {
  using C = std::complex<T>;
  const py::ssize_t B = positions.ndim() == 2 ? positions.shape(0) : -1;
  const C* in = mspt::check_array<C>("patches", patches, {B, -1, -1}, false);
  const double* pos = mspt::check_array<double>("positions_px", positions, {B, 2}, false);
  py::array_t<C> out({obj_h, obj_w});
  {
    py::gil_scoped_release release;
    mspt::overlap_add_cpu<T>(reinterpret_cast<const mspt::cplx<T>*>(in), pos, B, int(patches.shape(1)),
                             int(patches.shape(2)), obj_h, obj_w, reinterpret_cast<mspt::cplx<T>*>(out.mutable_data()));
  }
  return out;
}

}  // namespace

#ifndef MSPT_MODULE_NAME
#define MSPT_MODULE_NAME _core
#endif
#ifndef MSPT_CPU_ISA
#define MSPT_CPU_ISA "baseline"
#endif

PYBIND11_MODULE(MSPT_MODULE_NAME, m) {
  m.doc() = "mspt CPU backend: multislice operators on OpenMP + FFTW";
  mspt::bind_multislice<mspt::MultisliceCpu<float>, float>(
      m, "MultisliceCpu32", "Multislice plan on the CPU, single precision (the production path).");
  mspt::bind_multislice<mspt::MultisliceCpu<double>, double>(
      m, "MultisliceCpu64", "Multislice plan on the CPU, double precision (the reference path for tests).");
  m.def("likelihood32", &likelihood_py<float>, "intensity"_a, "data"_a, "kind"_a, "eps"_a, "mask"_a = py::none());
  m.def("likelihood64", &likelihood_py<double>, "intensity"_a, "data"_a, "kind"_a, "eps"_a, "mask"_a = py::none());
  py::class_<mspt::PropagationParams>(m, "PropagationParams", py::module_local())
      .def(py::init([](int ny, int nx, double dy, double dx, double wavelength, double dz, double tan_ty, double tan_tx,
                       double cutoff) {
             return mspt::PropagationParams{ny, nx, dy, dx, wavelength, dz, tan_ty, tan_tx, cutoff};
           }),
           "ny"_a, "nx"_a, "dy_A"_a, "dx_A"_a, "wavelength_A"_a, "dz_A"_a, "tan_tilt_y"_a, "tan_tilt_x"_a,
           "cutoff_invA"_a);
  m.def(
      "propagate",
      [](const py::array& w, const mspt::PropagationParams& p, bool adjoint) {
        return is_double(w) ? propagate_py<double>(w, p, adjoint) : propagate_py<float>(w, p, adjoint);
      },
      "waves"_a, "params"_a, "adjoint"_a);
  m.def(
      "fourier_shift",
      [](const py::array& w, const py::array& s, bool adjoint) {
        return is_double(w) ? fourier_shift_py<double>(w, s, adjoint) : fourier_shift_py<float>(w, s, adjoint);
      },
      "waves"_a, "shifts_px"_a, "adjoint"_a);
  m.def(
      "extract_windows",
      [](const py::array& o, const py::array& pos, int ny, int nx) {
        return is_double(o) ? extract_windows_py<double>(o, pos, ny, nx) : extract_windows_py<float>(o, pos, ny, nx);
      },
      "object"_a, "positions_px"_a, "ny"_a, "nx"_a);
  m.def(
      "overlap_add",
      [](const py::array& p, const py::array& pos, py::ssize_t h, py::ssize_t w) {
        return is_double(p) ? overlap_add_py<double>(p, pos, h, w) : overlap_add_py<float>(p, pos, h, w);
      },
      "patches"_a, "positions_px"_a, "obj_h"_a, "obj_w"_a);
  m.def(
      "cpu_supports",
      [](const std::string& feature) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
        if (feature == "avx2") return bool(__builtin_cpu_supports("avx2"));
        if (feature == "fma") return bool(__builtin_cpu_supports("fma"));
#endif
        (void)feature;
        return false;
      },
      "feature"_a, "Whether this processor has an instruction-set feature (\"avx2\", \"fma\").");
  m.def("build_info", []() {
    py::dict d;
    d["fft"] = "FFTW " + mspt::fftw_version();
    d["fftw_planner"] = mspt::fftw_planner_name();
    d["openmp_threads"] = omp_get_max_threads();
    d["isa"] = MSPT_CPU_ISA;
#ifdef MSPT_VERSION
    d["version"] = MSPT_VERSION;
#endif
    return d;
  });
}
