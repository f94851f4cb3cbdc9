#include "device_query.h"

#include <cuda_runtime.h>
#include <cufft.h>

#include "cuda_check.h"

namespace mspt {

namespace {

// cudaGetDeviceCount's status; the error it leaves behind is cleared so later calls start clean.
cudaError_t device_count_status(int* count) {
  *count = 0;
  const cudaError_t status = cudaGetDeviceCount(count);
  if (status != cudaSuccess) {
    *count = 0;
    cudaGetLastError();
  }
  return status;
}

}  // namespace

std::string version_string(int cuda_version) {
  return std::to_string(cuda_version / 1000) + "." + std::to_string((cuda_version % 1000) / 10);
}

int cuda_device_count() {
  int count = 0;
  device_count_status(&count);
  return count;
}

std::string cuda_device_status() {
  int count = 0;
  const cudaError_t status = device_count_status(&count);
  if (status != cudaSuccess) {
    std::string text = std::string("no usable CUDA device: cudaGetDeviceCount failed with ") + cudaGetErrorName(status) +
                       " (" + cudaGetErrorString(status) + ")";
    if (status == cudaErrorInsufficientDriver) {
      const int driver = cuda_driver_version();
      const int runtime = cuda_runtime_version_built();
      if (driver == 0) {
        text += "; no NVIDIA driver was found (libcuda.so.1 could not be loaded)";
      } else {
        text += "; the installed driver supports CUDA " + version_string(driver) + ", this module needs CUDA " +
                version_string(runtime) + ": update the NVIDIA driver";
      }
    }
    return text;
  }
  if (count == 0) return "no CUDA device found";
  std::string text = std::to_string(count) + " CUDA device(s): ";
  bool first = true;
  for (const CudaDeviceInfo& info : cuda_device_info()) {
    if (!first) text += ", ";
    first = false;
    text += info.name + " (sm_" + std::to_string(info.major) + std::to_string(info.minor) + ", " +
            std::to_string(info.total_memory_bytes >> 20) + " MiB)";
  }
  return text;
}

std::vector<CudaDeviceInfo> cuda_device_info() {
  std::vector<CudaDeviceInfo> result;
  int count = 0;
  if (device_count_status(&count) != cudaSuccess) return result;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    result.push_back(CudaDeviceInfo{i, prop.name, prop.major, prop.minor, prop.totalGlobalMem, prop.multiProcessorCount});
  }
  return result;
}

int cuda_runtime_version_built() { return CUDART_VERSION; }

int cuda_driver_version() {
  int version = 0;
  if (cudaDriverGetVersion(&version) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return version;
}

int cufft_version() {
  int version = -1;
  if (cufftGetVersion(&version) != CUFFT_SUCCESS) return -1;
  return version;
}

int cuda_current_device() {
  int device = 0;
  const cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) {
    cudaGetLastError();  // leave no error behind for later calls
    cuda_check(status, "cudaGetDevice");
  }
  return device;
}

PointerLocation pointer_location(const void* address) {
  cudaPointerAttributes attributes;
  const cudaError_t status = cudaPointerGetAttributes(&attributes, address);
  if (status != cudaSuccess) {
    cudaGetLastError();
    cuda_check(status, "cudaPointerGetAttributes");
  }
  switch (attributes.type) {
    case cudaMemoryTypeDevice: return PointerLocation{MemoryKind::kDevice, attributes.device};
    case cudaMemoryTypeManaged: return PointerLocation{MemoryKind::kManaged, attributes.device};
    case cudaMemoryTypeHost: return PointerLocation{MemoryKind::kPinnedHost, -1};
    default: return PointerLocation{MemoryKind::kHost, -1};
  }
}

}  // namespace mspt
