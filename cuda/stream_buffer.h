// Scratch memory for one call, allocated and freed in stream order (cudaMallocAsync / cudaFreeAsync):
// the memory is valid for the work queued on `stream` after the allocation and goes back to the device's
// pool once the work queued before the free has run, without the host waiting for it. On a device
// without memory pools it falls back to cudaMalloc, and the free then waits for the stream.
// Allocated on the current device (callers hold a DeviceGuard).
#pragma once

#include <cuda_runtime.h>
#include <stddef.h>

#include <stdexcept>
#include <string>

#include "cuda_check.h"

namespace mspt {

template <class T>
class StreamBuffer {
 public:
  StreamBuffer(size_t count, cudaStream_t stream) : stream_(stream) {
    if (count == 0) return;
    int device = 0, pools = 0;
    MSPT_CUDA_CHECK(cudaGetDevice(&device));
    MSPT_CUDA_CHECK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device));
    pooled_ = pools != 0;
    void* p = nullptr;
    const cudaError_t status =
        pooled_ ? cudaMallocAsync(&p, count * sizeof(T), stream) : cudaMalloc(&p, count * sizeof(T));
    if (status != cudaSuccess) {
      cudaGetLastError();  // clear the (non-sticky) allocation error
      throw std::runtime_error(std::string("CUDA error in ") + (pooled_ ? "cudaMallocAsync(" : "cudaMalloc(") +
                               std::to_string(count * sizeof(T)) + " bytes): " + cudaGetErrorName(status) + " (" +
                               cudaGetErrorString(status) + ")");
    }
    data_ = static_cast<T*>(p);
  }
  ~StreamBuffer() {
    if (data_ == nullptr) return;
    // A destructor has nowhere to report a failure; a failed free leaks at worst.
    if (pooled_) {
      cudaFreeAsync(data_, stream_);
    } else {
      cudaStreamSynchronize(stream_);
      cudaFree(data_);
    }
  }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;

  T* data() const { return data_; }

 private:
  T* data_ = nullptr;
  cudaStream_t stream_;
  bool pooled_ = false;
};

}  // namespace mspt
