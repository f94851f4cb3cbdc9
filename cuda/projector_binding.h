// Python bindings of the CUDA projector.
//
// `project`, `backproject` and `project_pose_vjp` take NumPy arrays, with the argument names, shapes and
// validation of the CPU backend's functions of the same names (mspt._core), so that the Python layer calls
// either module the same way; `threads` is accepted for parity and ignored. The `*_device` functions take
// the same arguments as device-array descriptors (cuda/device_arrays.h), the output buffers too, plus the
// CUDA device, the stream (cudaStream_t as an integer, 0: the legacy default stream) and whether to wait
// for the work. One set of shape rules (the *_args templates) checks both.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <stdint.h>

#include <vector>

#include "bindings/check_array.h"
#include "device_arrays.h"
#include "kernels/projector_body.h"
#include "projector_cuda.h"

namespace mspt {
namespace projector_binding {

namespace py = pybind11;

// The poses of a call: rotations [T, 3, 3] and shifts_A [T, 2].
struct Poses {
  const double* rotations;
  const double* shifts;
  py::ssize_t count;
};

template <class Arrays>
Poses poses(Arrays& arrays, const py::object& rotations, const py::object& shifts) {
  const std::vector<py::ssize_t> shape = arrays.shape("rotation", rotations);
  const py::ssize_t T = shape.size() == 3 ? shape[0] : -1;
  Poses p{};
  p.rotations = arrays.template required<double>("rotation", rotations, {T, 3, 3}, false);
  p.shifts = arrays.template required<double>("shifts_A", shifts, {T, 2}, false);
  p.count = T;
  return p;
}

// project: volume [Z, Y, X] float32 and the poses -> projections [T, py, px].
struct ProjectArgs {
  const float* volume;
  Poses poses;
  ProjectorGeometry g;
};

template <class Arrays>
ProjectArgs project_args(Arrays& arrays, const py::object& volume, const py::object& rotations,
                         const py::object& shifts, double voxel_A, int py_, int px, double pixel_A, double step_A) {
  const float* vol = arrays.template required<float>("volume", volume, {-1, -1, -1}, false);
  const std::vector<py::ssize_t> shape = arrays.shape("volume", volume);
  const Poses p = poses(arrays, rotations, shifts);
  return ProjectArgs{vol, p,
                     make_projector_geometry(int(shape[0]), int(shape[1]), int(shape[2]), py_, px, voxel_A, pixel_A,
                                             step_A)};
}

// backproject: projections [T, Py, Px] float32 and the poses -> volume [nz, ny, nx].
struct BackprojectArgs {
  const float* projections;
  Poses poses;
  ProjectorGeometry g;
};

template <class Arrays>
BackprojectArgs backproject_args(Arrays& arrays, const py::object& projections, const py::object& rotations,
                                 const py::object& shifts, double voxel_A, int nz, int ny, int nx, double pixel_A,
                                 double step_A) {
  const Poses p = poses(arrays, rotations, shifts);
  const float* proj = arrays.template required<float>("projections", projections, {p.count, -1, -1}, false);
  const std::vector<py::ssize_t> shape = arrays.shape("projections", projections);
  return BackprojectArgs{
      proj, p, make_projector_geometry(nz, ny, nx, int(shape[1]), int(shape[2]), voxel_A, pixel_A, step_A)};
}

// project_pose_vjp: cotangents [T, Py, Px] float32, volume [Z, Y, X] float32 and the poses.
struct PoseVjpArgs {
  const float* grad;
  const float* volume;
  Poses poses;
  ProjectorGeometry g;
};

template <class Arrays>
PoseVjpArgs pose_vjp_args(Arrays& arrays, const py::object& grad_projections, const py::object& volume,
                          const py::object& rotations, const py::object& shifts, double voxel_A, double pixel_A,
                          double step_A) {
  const float* vol = arrays.template required<float>("volume", volume, {-1, -1, -1}, false);
  const std::vector<py::ssize_t> vshape = arrays.shape("volume", volume);
  const Poses p = poses(arrays, rotations, shifts);
  const float* grad = arrays.template required<float>("grad_projections", grad_projections, {p.count, -1, -1}, false);
  const std::vector<py::ssize_t> gshape = arrays.shape("grad_projections", grad_projections);
  return PoseVjpArgs{grad, vol, p,
                     make_projector_geometry(int(vshape[0]), int(vshape[1]), int(vshape[2]), int(gshape[1]),
                                             int(gshape[2]), voxel_A, pixel_A, step_A)};
}

// ---- host arrays ----

inline py::array project(const py::array& volume, const py::array& rotations, const py::array& shifts,
                         double voxel_A, int py_, int px, double pixel_A, double step_A, int threads) {
  (void)threads;
  HostArrays arrays;
  const ProjectArgs a = project_args(arrays, volume, rotations, shifts, voxel_A, py_, px, pixel_A, step_A);
  py::array_t<float> out({a.poses.count, py::ssize_t(py_), py::ssize_t(px)});
  {
    py::gil_scoped_release release;
    ProjectorCuda engine;
    engine.project(a.volume, a.g, a.poses.rotations, a.poses.shifts, a.poses.count, out.mutable_data());
  }
  return out;
}

inline py::array backproject(const py::array& projections, const py::array& rotations, const py::array& shifts,
                             double voxel_A, int nz, int ny, int nx, double pixel_A, double step_A, int threads) {
  (void)threads;
  HostArrays arrays;
  const BackprojectArgs a = backproject_args(arrays, projections, rotations, shifts, voxel_A, nz, ny, nx, pixel_A,
                                             step_A);
  py::array_t<float> out({py::ssize_t(nz), py::ssize_t(ny), py::ssize_t(nx)});
  {
    py::gil_scoped_release release;
    ProjectorCuda engine;
    engine.backproject(a.projections, a.g, a.poses.rotations, a.poses.shifts, a.poses.count, out.mutable_data());
  }
  return out;
}

inline py::tuple project_pose_vjp(const py::array& grad_projections, const py::array& volume,
                                  const py::array& rotations, const py::array& shifts, double voxel_A, double pixel_A,
                                  double step_A, int threads) {
  (void)threads;
  HostArrays arrays;
  const PoseVjpArgs a = pose_vjp_args(arrays, grad_projections, volume, rotations, shifts, voxel_A, pixel_A, step_A);
  py::array_t<double> d_rot({a.poses.count, py::ssize_t(3)});
  py::array_t<double> d_shift({a.poses.count, py::ssize_t(2)});
  {
    py::gil_scoped_release release;
    ProjectorCuda engine;
    engine.pose_vjp(a.volume, a.g, a.poses.rotations, a.poses.shifts, a.grad, a.poses.count, d_rot.mutable_data(),
                    d_shift.mutable_data());
  }
  return py::make_tuple(d_rot, d_shift);
}

// ---- device arrays ----

inline CUstream_st* as_stream(uintptr_t stream) { return reinterpret_cast<CUstream_st*>(stream); }

inline void project_device(const py::object& volume, const py::object& rotations, const py::object& shifts,
                           double voxel_A, int py_, int px, double pixel_A, double step_A, const py::object& out,
                           int device, uintptr_t stream, bool synchronize) {
  DeviceArrays arrays(device);
  const ProjectArgs a = project_args(arrays, volume, rotations, shifts, voxel_A, py_, px, pixel_A, step_A);
  float* projections = arrays.required<float>("out", out, {a.poses.count, py_, px}, true);
  arrays.verify_memory();
  py::gil_scoped_release release;
  project_cuda(a.volume, a.g, a.poses.rotations, a.poses.shifts, a.poses.count, projections, device,
               as_stream(stream), synchronize);
}

inline void backproject_device(const py::object& projections, const py::object& rotations, const py::object& shifts,
                               double voxel_A, int nz, int ny, int nx, double pixel_A, double step_A,
                               const py::object& out, int device, uintptr_t stream, bool synchronize) {
  DeviceArrays arrays(device);
  const BackprojectArgs a = backproject_args(arrays, projections, rotations, shifts, voxel_A, nz, ny, nx, pixel_A,
                                             step_A);
  float* volume = arrays.required<float>("out", out, {nz, ny, nx}, true);
  arrays.verify_memory();
  py::gil_scoped_release release;
  backproject_cuda(a.projections, a.g, a.poses.rotations, a.poses.shifts, a.poses.count, volume, device,
                   as_stream(stream), synchronize);
}

inline void project_pose_vjp_device(const py::object& grad_projections, const py::object& volume,
                                    const py::object& rotations, const py::object& shifts, double voxel_A,
                                    double pixel_A, double step_A, const py::object& d_rotation,
                                    const py::object& d_shifts, int device, uintptr_t stream, bool synchronize) {
  DeviceArrays arrays(device);
  const PoseVjpArgs a = pose_vjp_args(arrays, grad_projections, volume, rotations, shifts, voxel_A, pixel_A, step_A);
  double* d_rot = arrays.required<double>("d_rotation", d_rotation, {a.poses.count, 3}, true);
  double* d_shift = arrays.required<double>("d_shifts", d_shifts, {a.poses.count, 2}, true);
  arrays.verify_memory();
  py::gil_scoped_release release;
  project_pose_vjp_cuda(a.volume, a.g, a.poses.rotations, a.poses.shifts, a.grad, a.poses.count, d_rot, d_shift,
                        device, as_stream(stream), synchronize);
}

}  // namespace projector_binding

inline void bind_projector_cuda(pybind11::module_& m) {
  namespace py = pybind11;
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
  m.def("project_device", &projector_binding::project_device, "volume"_a, "rotation"_a, "shifts_A"_a,
        "voxel_size_A"_a, "py"_a, "px"_a, "pixel_size_A"_a, "step_A"_a, "out"_a, py::kw_only(), "device"_a,
        "stream"_a = 0, "synchronize"_a = false,
        "project on device memory: arrays are descriptors (pointer, shape, dtype name) of C-contiguous memory "
        "of CUDA device `device`; writes out (T, py, px) float32. Queued on `stream` (cudaStream_t as an "
        "integer, 0: the legacy default stream); waits for the work only with `synchronize`.");
  m.def("backproject_device", &projector_binding::backproject_device, "projections"_a, "rotation"_a, "shifts_A"_a,
        "voxel_size_A"_a, "nz"_a, "ny"_a, "nx"_a, "pixel_size_A"_a, "step_A"_a, "out"_a, py::kw_only(), "device"_a,
        "stream"_a = 0, "synchronize"_a = false,
        "backproject on device memory (see project_device); writes out (nz, ny, nx) float32.");
  m.def("project_pose_vjp_device", &projector_binding::project_pose_vjp_device, "grad_projections"_a, "volume"_a,
        "rotation"_a, "shifts_A"_a, "voxel_size_A"_a, "pixel_size_A"_a, "step_A"_a, "d_rotation"_a, "d_shifts"_a,
        py::kw_only(), "device"_a, "stream"_a = 0, "synchronize"_a = false,
        "project_pose_vjp on device memory (see project_device); writes d_rotation (T, 3) and d_shifts (T, 2) "
        "float64.");
}

}  // namespace mspt
