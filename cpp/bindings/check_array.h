// Validation at the binding boundary: every array that reaches a kernel has the dtype, shape and layout
// the kernel assumes; anything else is a ValueError that names the argument and what was expected.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <complex>
#include <sstream>
#include <string>
#include <vector>

namespace mspt {
namespace py = pybind11;

// -1 in `shape` accepts any extent on that axis.
inline std::string shape_str(const std::vector<py::ssize_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) os << ", ";
    if (shape[i] < 0)
      os << "*";
    else
      os << shape[i];
  }
  os << (shape.size() == 1 ? ",)" : ")");
  return os.str();
}

template <class Scalar>
Scalar* check_array(const char* name, const py::array& arr, const std::vector<py::ssize_t>& shape, bool writable) {
  const auto expected = py::dtype::of<Scalar>();
  if (!arr.dtype().is(expected)) {
    throw py::value_error(std::string(name) + ": expected dtype " + std::string(py::str(expected)) + ", got " +
                          std::string(py::str(arr.dtype())));
  }
  std::vector<py::ssize_t> got(arr.shape(), arr.shape() + arr.ndim());
  bool ok = got.size() == shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || shape[i] == got[i];
  if (!ok) {
    throw py::value_error(std::string(name) + ": expected shape " + shape_str(shape) + ", got " + shape_str(got));
  }
  if (!(arr.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) + ": expected a C-contiguous array");
  }
  if (writable && !arr.writeable()) throw py::value_error(std::string(name) + ": expected a writable array");
  return static_cast<Scalar*>(const_cast<void*>(arr.data()));
}

// Optional arguments arrive as None.
template <class Scalar>
Scalar* check_optional(const char* name, const py::object& obj, const std::vector<py::ssize_t>& shape,
                       bool writable) {
  if (obj.is_none()) return nullptr;
  return check_array<Scalar>(name, py::cast<py::array>(obj), shape, writable);
}

// How a binding reads array arguments that are host (NumPy) arrays. Bindings written against this interface
// (shape, required, optional) also take device arrays through DeviceArrays (cuda/device_arrays.h), so the
// shape rules of an operator are written once for both.
struct HostArrays {
  std::vector<py::ssize_t> shape(const char* name, const py::object& obj) const {
    (void)name;
    const py::array arr = py::cast<py::array>(obj);
    return std::vector<py::ssize_t>(arr.shape(), arr.shape() + arr.ndim());
  }
  template <class Scalar>
  Scalar* required(const char* name, const py::object& obj, const std::vector<py::ssize_t>& shape,
                   bool writable) const {
    return check_array<Scalar>(name, py::cast<py::array>(obj), shape, writable);
  }
  template <class Scalar>
  Scalar* optional(const char* name, const py::object& obj, const std::vector<py::ssize_t>& shape,
                   bool writable) const {
    return check_optional<Scalar>(name, obj, shape, writable);
  }
};

}  // namespace mspt
