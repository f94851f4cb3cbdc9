// Python bindings of the CUDA projector: `project`, `backproject` and `project_pose_vjp` with the argument
// names, shapes and validation of the CPU backend's functions of the same names (mspt._core), so that the
// Python layer calls either module the same way. `threads` is accepted for parity and ignored.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/check_array.h"
#include "kernels/projector_body.h"
#include "projector_cuda.h"

namespace mspt {
namespace projector_binding {

namespace py = pybind11;

// rotations [T, 3, 3] and shifts_A [T, 2] of the poses; returns T.
inline py::ssize_t check_poses(const py::array& rotations, const py::array& shifts, const double** rot,
                               const double** shift) {
  const py::ssize_t T = rotations.ndim() == 3 ? rotations.shape(0) : -1;
  *rot = check_array<double>("rotation", rotations, {T, 3, 3}, false);
  *shift = check_array<double>("shifts_A", shifts, {T, 2}, false);
  return T;
}

inline py::array project(const py::array& volume, const py::array& rotations, const py::array& shifts,
                         double voxel_A, int py_, int px, double pixel_A, double step_A, int threads) {
  (void)threads;
  const float* vol = check_array<float>("volume", volume, {-1, -1, -1}, false);
  const double *rot, *shift;
  const py::ssize_t T = check_poses(rotations, shifts, &rot, &shift);
  const auto g = make_projector_geometry(int(volume.shape(0)), int(volume.shape(1)), int(volume.shape(2)), py_, px,
                                         voxel_A, pixel_A, step_A);
  py::array_t<float> out({T, py::ssize_t(py_), py::ssize_t(px)});
  {
    py::gil_scoped_release release;
    ProjectorCuda engine;
    engine.project(vol, g, rot, shift, T, out.mutable_data());
  }
  return out;
}

inline py::array backproject(const py::array& projections, const py::array& rotations, const py::array& shifts,
                             double voxel_A, int nz, int ny, int nx, double pixel_A, double step_A, int threads) {
  (void)threads;
  const double *rot, *shift;
  const py::ssize_t T = check_poses(rotations, shifts, &rot, &shift);
  const float* proj = check_array<float>("projections", projections, {T, -1, -1}, false);
  const auto g = make_projector_geometry(nz, ny, nx, int(projections.shape(1)), int(projections.shape(2)), voxel_A,
                                         pixel_A, step_A);
  py::array_t<float> out({py::ssize_t(nz), py::ssize_t(ny), py::ssize_t(nx)});
  {
    py::gil_scoped_release release;
    ProjectorCuda engine;
    engine.backproject(proj, g, rot, shift, T, out.mutable_data());
  }
  return out;
}

inline py::tuple project_pose_vjp(const py::array& grad_projections, const py::array& volume,
                                  const py::array& rotations, const py::array& shifts, double voxel_A, double pixel_A,
                                  double step_A, int threads) {
  (void)threads;
  const float* vol = check_array<float>("volume", volume, {-1, -1, -1}, false);
  const double *rot, *shift;
  const py::ssize_t T = check_poses(rotations, shifts, &rot, &shift);
  const float* grad = check_array<float>("grad_projections", grad_projections, {T, -1, -1}, false);
  const auto g = make_projector_geometry(int(volume.shape(0)), int(volume.shape(1)), int(volume.shape(2)),
                                         int(grad_projections.shape(1)), int(grad_projections.shape(2)), voxel_A,
                                         pixel_A, step_A);
  py::array_t<double> d_rot({T, py::ssize_t(3)});
  py::array_t<double> d_shift({T, py::ssize_t(2)});
  {
    py::gil_scoped_release release;
    ProjectorCuda engine;
    engine.pose_vjp(vol, g, rot, shift, grad, T, d_rot.mutable_data(), d_shift.mutable_data());
  }
  return py::make_tuple(d_rot, d_shift);
}

}  // namespace projector_binding

inline void bind_projector_cuda(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("project", &projector_binding::project, "volume"_a, "rotation"_a, "shifts_A"_a, "voxel_size_A"_a, "py"_a,
        "px"_a, "pixel_size_A"_a, "step_A"_a, "threads"_a = 0,
        "Line integrals of volume (Z, Y, X) float32 along z after each pose -> (T, Py, Px) float32, on the "
        "current CUDA device. `threads` is ignored.");
  m.def("backproject", &projector_binding::backproject, "projections"_a, "rotation"_a, "shifts_A"_a,
        "voxel_size_A"_a, "nz"_a, "ny"_a, "nx"_a, "pixel_size_A"_a, "step_A"_a, "threads"_a = 0,
        "The transpose of project on the current CUDA device: projections (T, Py, Px) float32 -> volume "
        "(Z, Y, X) float32. Accumulated with atomic additions, so not bitwise deterministic. `threads` is "
        "ignored.");
  m.def("project_pose_vjp", &projector_binding::project_pose_vjp, "grad_projections"_a, "volume"_a, "rotation"_a,
        "shifts_A"_a, "voxel_size_A"_a, "pixel_size_A"_a, "step_A"_a, "threads"_a = 0,
        "Pose part of the vector-Jacobian product of project on the current CUDA device -> (dL/dw (T, 3), "
        "dL/d(dy, dx) (T, 2)) float64. `threads` is ignored.");
}

}  // namespace mspt
