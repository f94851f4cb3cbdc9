// Makes one CUDA device current for a scope and restores the caller's current device when the scope ends,
// so a call on the arrays' device (which need not be the current one) leaves the thread as it found it.
#pragma once

#include <cuda_runtime.h>

#include "cuda_check.h"

namespace mspt {

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    MSPT_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) {
      MSPT_CUDA_CHECK(cudaSetDevice(device));
      changed_ = true;
    }
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);  // nowhere to report a failure from a destructor
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

}  // namespace mspt
