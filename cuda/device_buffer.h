// An owned device allocation that only grows: `ensure(count)` reallocates when more elements are needed
// than it holds and otherwise keeps the memory, so an engine called again with the same shapes makes no
// cudaMalloc. Contents are not preserved across a reallocation (every user rewrites its buffer per call).
#pragma once

#include <cuda_runtime.h>

#include <stddef.h>

#include <string>
#include <utility>

#include "cuda_check.h"

namespace mspt {

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept { swap(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      swap(other);
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  // At least `count` elements, uninitialised. Returns the (possibly new) pointer.
  T* ensure(size_t count) {
    if (count <= capacity_) return data_;
    release();
    void* p = nullptr;
    const cudaError_t status = cudaMalloc(&p, count * sizeof(T));
    if (status != cudaSuccess) {
      cudaGetLastError();  // clear the (non-sticky) allocation error
      throw std::runtime_error("CUDA error in cudaMalloc(" + std::to_string(count * sizeof(T)) +
                               " bytes): " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) +
                               "); use fewer positions per call or a smaller object");
    }
    data_ = static_cast<T*>(p);
    capacity_ = count;
    return data_;
  }

  void release() noexcept {
    if (data_ != nullptr) cudaFree(data_);  // a failure here has nowhere to go; the context is gone anyway
    data_ = nullptr;
    capacity_ = 0;
  }

  T* data() const { return data_; }
  size_t capacity() const { return capacity_; }
  size_t bytes() const { return capacity_ * sizeof(T); }

 private:
  void swap(DeviceBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(capacity_, other.capacity_);
  }

  T* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace mspt
