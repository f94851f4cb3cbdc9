// Device arrays at the binding boundary. The Python layer passes each array that lives in CUDA memory as a
// descriptor (pointer, shape, dtype name), e.g. (0x7f..., (5, 128, 128), "complex64"), C-contiguous by
// contract; DeviceArrays checks it as check_array checks a host array (dtype, shape, a non-null aligned
// pointer: ValueError naming the argument), and then, in one pass over all of a call's arrays, that the
// memory really is device memory of the call's device (first and last byte), so that a host pointer or an
// array of another GPU is a clear error instead of an illegal-address fault. It has the interface of
// HostArrays (cpp/bindings/check_array.h), so one set of shape rules serves host and device calls.
// Compiled by the host compiler: no CUDA header is needed here.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <stdint.h>

#include <complex>
#include <string>
#include <vector>

#include "bindings/check_array.h"
#include "device_query.h"

namespace mspt {

template <class Scalar>
struct DeviceDtype;
template <>
struct DeviceDtype<float> {
  static constexpr const char* name = "float32";
};
template <>
struct DeviceDtype<double> {
  static constexpr const char* name = "float64";
};
template <>
struct DeviceDtype<std::complex<float>> {
  static constexpr const char* name = "complex64";
};

class DeviceArrays {
 public:
  // Arrays of one call, all on CUDA device `device`.
  explicit DeviceArrays(int device) : device_(device) {}

  std::vector<py::ssize_t> shape(const char* name, const py::object& obj) const { return parse(name, obj).shape; }

  template <class Scalar>
  Scalar* required(const char* name, const py::object& obj, const std::vector<py::ssize_t>& shape, bool writable) {
    (void)writable;  // device memory has no read-only flag; outputs are fresh buffers by contract
    const Descriptor d = parse(name, obj);
    const std::string expected = DeviceDtype<Scalar>::name;
    if (d.dtype != expected)
      throw py::value_error(std::string(name) + ": expected dtype " + expected + ", got " + d.dtype);
    bool ok = d.shape.size() == shape.size();
    for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || shape[i] == d.shape[i];
    if (!ok)
      throw py::value_error(std::string(name) + ": expected shape " + shape_str(shape) + ", got " + shape_str(d.shape));
    size_t count = 1;
    for (py::ssize_t extent : d.shape) count *= size_t(extent);
    if (count == 0) return nullptr;  // nothing is read or written through it
    if (d.pointer == 0) throw py::value_error(std::string(name) + ": a null device pointer for a non-empty array");
    if (d.pointer % alignof(Scalar) != 0)
      throw py::value_error(std::string(name) + ": device pointer not aligned to its " + expected + " elements");
    pending_.push_back(Pending{name, d.pointer, count * sizeof(Scalar)});
    return reinterpret_cast<Scalar*>(d.pointer);
  }

  template <class Scalar>
  Scalar* optional(const char* name, const py::object& obj, const std::vector<py::ssize_t>& shape, bool writable) {
    if (obj.is_none()) return nullptr;
    return required<Scalar>(name, obj, shape, writable);
  }

  // After every array of the call is read: the device exists, and each array's first and last byte lie in
  // memory of that device (a RuntimeError without a driver, from the runtime's answer).
  void verify_memory() const {
    const int count = cuda_device_count();
    if (count == 0) throw std::runtime_error("device pointers given, but " + cuda_device_status());
    if (device_ < 0 || device_ >= count)
      throw py::value_error("device: cuda:" + std::to_string(device_) + " does not exist (" + std::to_string(count) +
                            " CUDA device(s))");
    for (const Pending& p : pending_) {
      check_location(p.name, p.pointer, "");
      check_location(p.name, p.pointer + p.bytes - 1, " (its last byte: the shape overstates the buffer?)");
    }
  }

  int device() const { return device_; }

 private:
  struct Descriptor {
    uintptr_t pointer;
    std::vector<py::ssize_t> shape;
    std::string dtype;
  };
  struct Pending {
    const char* name;
    uintptr_t pointer;
    size_t bytes;
  };

  static Descriptor parse(const char* name, const py::object& obj) {
    const std::string expected = std::string(name) + ": expected a device array (pointer, shape, dtype name)";
    if (!py::isinstance<py::tuple>(obj) || py::len(obj) != 3) throw py::value_error(expected);
    const py::tuple t = py::reinterpret_borrow<py::tuple>(obj);
    try {
      Descriptor d{t[0].cast<uintptr_t>(), t[1].cast<std::vector<py::ssize_t>>(), t[2].cast<std::string>()};
      for (py::ssize_t extent : d.shape)
        if (extent < 0) throw py::value_error(std::string(name) + ": negative extent in the device array's shape");
      return d;
    } catch (const py::cast_error&) {
      throw py::value_error(expected);
    }
  }

  void check_location(const char* name, uintptr_t address, const char* which) const {
    const PointerLocation where = pointer_location(reinterpret_cast<const void*>(address));
    const bool on_device = where.kind == MemoryKind::kDevice || where.kind == MemoryKind::kManaged;
    if (!on_device) {
      const char* what = where.kind == MemoryKind::kPinnedHost ? "page-locked host memory" : "host memory";
      throw py::value_error(std::string(name) + ": expected memory of cuda:" + std::to_string(device_) + ", got " +
                            what + which);
    }
    if (where.kind == MemoryKind::kDevice && where.device != device_)
      throw py::value_error(std::string(name) + ": expected memory of cuda:" + std::to_string(device_) +
                            ", got memory of cuda:" + std::to_string(where.device) + which);
  }

  int device_;
  std::vector<Pending> pending_;
};

}  // namespace mspt
