// mspt._core (and mspt._core_avx2, the same source built for AVX2 + FMA): the CPU backend (OpenMP + FFTW).
// Always built; imports without a GPU.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/multislice_binding.h"
#include "bindings/multislice_tape_binding.h"
#include "bindings/batch_steps_binding.h"
#include "cpu/fft_cpu.h"
#include "cpu/likelihood_cpu.h"
#include "cpu/linear_ops_cpu.h"
#include "cpu/multislice_cpu.h"
#include "cpu/projector_cpu.h"

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

// rotations [T, 3, 3] and shifts_A [T, 2] of the poses; returns T.
py::ssize_t check_poses(const py::array& rotations, const py::array& shifts, const double** rot, const double** shift) {
  const py::ssize_t T = rotations.ndim() == 3 ? rotations.shape(0) : -1;
  *rot = mspt::check_array<double>("rotation", rotations, {T, 3, 3}, false);
  *shift = mspt::check_array<double>("shifts_A", shifts, {T, 2}, false);
  return T;
}

template <void (*Project)(const float*, const mspt::ProjectorGeometry&, const double*, const double*, int64_t, int,
                          float*)>
py::array project_py(const py::array& volume, const py::array& rotations, const py::array& shifts, double voxel_A,
                     int py_, int px, double pixel_A, double step_A, int threads) {
  const float* vol = mspt::check_array<float>("volume", volume, {-1, -1, -1}, false);
  const double *rot, *shift;
  const py::ssize_t T = check_poses(rotations, shifts, &rot, &shift);
  const auto g = mspt::make_projector_geometry(int(volume.shape(0)), int(volume.shape(1)), int(volume.shape(2)), py_,
                                               px, voxel_A, pixel_A, step_A);
  py::array_t<float> out({T, py::ssize_t(py_), py::ssize_t(px)});
  {
    py::gil_scoped_release release;
    Project(vol, g, rot, shift, T, threads, out.mutable_data());
  }
  return out;
}

py::array backproject_py(const py::array& projections, const py::array& rotations, const py::array& shifts,
                         double voxel_A, int nz, int ny, int nx, double pixel_A, double step_A, int threads) {
  const double *rot, *shift;
  const py::ssize_t T = check_poses(rotations, shifts, &rot, &shift);
  const float* proj = mspt::check_array<float>("projections", projections, {T, -1, -1}, false);
  const auto g = mspt::make_projector_geometry(nz, ny, nx, int(projections.shape(1)), int(projections.shape(2)),
                                               voxel_A, pixel_A, step_A);
  py::array_t<float> out({py::ssize_t(nz), py::ssize_t(ny), py::ssize_t(nx)});
  {
    py::gil_scoped_release release;
    mspt::backproject_cpu(proj, g, rot, shift, T, threads, out.mutable_data());
  }
  return out;
}

py::tuple project_pose_vjp_py(const py::array& grad_projections, const py::array& volume, const py::array& rotations,
                              const py::array& shifts, double voxel_A, double pixel_A, double step_A, int threads) {
  const float* vol = mspt::check_array<float>("volume", volume, {-1, -1, -1}, false);
  const double *rot, *shift;
  const py::ssize_t T = check_poses(rotations, shifts, &rot, &shift);
  const float* grad = mspt::check_array<float>("grad_projections", grad_projections, {T, -1, -1}, false);
  const auto g = mspt::make_projector_geometry(int(volume.shape(0)), int(volume.shape(1)), int(volume.shape(2)),
                                               int(grad_projections.shape(1)), int(grad_projections.shape(2)),
                                               voxel_A, pixel_A, step_A);
  py::array_t<double> d_rot({T, py::ssize_t(3)});
  py::array_t<double> d_shift({T, py::ssize_t(2)});
  {
    py::gil_scoped_release release;
    mspt::project_pose_vjp_cpu(vol, g, rot, shift, grad, T, threads, d_rot.mutable_data(), d_shift.mutable_data());
  }
  return py::make_tuple(d_rot, d_shift);
}

py::array illumination_py(const py::array& patch, const py::array& positions, py::ssize_t obj_h, py::ssize_t obj_w) {
  const float* p = mspt::check_array<float>("patch", patch, {-1, -1}, false);
  const py::ssize_t B = positions.ndim() == 2 ? positions.shape(0) : -1;
  const double* pos = mspt::check_array<double>("positions_px", positions, {B, 2}, false);
  py::array_t<float> out({obj_h, obj_w});
  {
    py::gil_scoped_release release;
    mspt::overlap_add_patch_cpu<float>(p, pos, B, int(patch.shape(0)), int(patch.shape(1)), obj_h, obj_w,
                                       out.mutable_data());
  }
  return out;
}

py::array window_power_py(const py::array& object, const py::array& positions, int ny, int nx, int threads) {
  using C = std::complex<float>;
  const C* obj = mspt::check_array<C>("object", object, {-1, -1}, false);
  const py::ssize_t B = positions.ndim() == 2 ? positions.shape(0) : -1;
  const double* pos = mspt::check_array<double>("positions_px", positions, {B, 2}, false);
  py::array_t<float> out({py::ssize_t(ny), py::ssize_t(nx)});
  {
    py::gil_scoped_release release;
    mspt::window_power_cpu<float>(reinterpret_cast<const mspt::cplx<float>*>(obj), object.shape(0), object.shape(1),
                                  pos, B, ny, nx, threads, out.mutable_data());
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
  mspt::bind_multislice_tape<float>(m, "MultisliceTape32");
  mspt::bind_multislice_tape<double>(m, "MultisliceTape64");
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
  m.def("_project_pixelwise", &project_py<mspt::project_pixelwise_cpu>, "volume"_a, "rotation"_a, "shifts_A"_a,
        "voxel_size_A"_a, "py"_a, "px"_a, "pixel_size_A"_a, "step_A"_a, "threads"_a = 0,
        "project computed pixel by pixel with the CUDA kernel's body (for tests).");
  m.def("project", &project_py<mspt::project_cpu>, "volume"_a, "rotation"_a, "shifts_A"_a, "voxel_size_A"_a, "py"_a, "px"_a,
        "pixel_size_A"_a, "step_A"_a, "threads"_a = 0,
        "Line integrals of volume (Z, Y, X) float32 along z after each pose -> (T, Py, Px) float32.");
  m.def("backproject", &backproject_py, "projections"_a, "rotation"_a, "shifts_A"_a, "voxel_size_A"_a, "nz"_a,
        "ny"_a, "nx"_a, "pixel_size_A"_a, "step_A"_a, "threads"_a = 0,
        "The exact transpose of project: projections (T, Py, Px) float32 -> volume (Z, Y, X) float32.");
  m.def("project_pose_vjp", &project_pose_vjp_py, "grad_projections"_a, "volume"_a, "rotation"_a, "shifts_A"_a,
        "voxel_size_A"_a, "pixel_size_A"_a, "step_A"_a, "threads"_a = 0,
        "Pose part of the vector-Jacobian product of project -> (dL/dw (T, 3), dL/d(dy, dx) (T, 2)) float64, "
        "w the rotation vector of the update R <- exp([w]x) R.");
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
  m.def("illumination", &illumination_py, "patch"_a, "positions_px"_a, "obj_h"_a, "obj_w"_a,
        "Sum of one float32 patch placed at every probe window (the illumination of a batch).");
  mspt::bind_batch_steps(m);
  m.def("window_power", &window_power_py, "object"_a, "positions_px"_a, "ny"_a, "nx"_a, "threads"_a = 0,
        "Sum over probe windows of |complex64 object window|^2 (threads 0: OpenMP's default).");
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
