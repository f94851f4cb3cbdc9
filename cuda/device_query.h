// What the CUDA runtime sees: device count, a status line for error messages, and per-device facts.
// None of these throw when there is no driver or no GPU; that is the answer they report.
#pragma once

#include <stddef.h>

#include <string>
#include <vector>

namespace mspt {

struct CudaDeviceInfo {
  int index;
  std::string name;
  int major, minor;  // compute capability
  size_t total_memory_bytes;
  int multiprocessors;
};

// Number of usable CUDA devices; 0 when the driver or the devices are missing.
int cuda_device_count();
// "2 CUDA device(s): NVIDIA H100 80GB HBM3 (sm_90), ..." or why there are none.
std::string cuda_device_status();
std::vector<CudaDeviceInfo> cuda_device_info();
// Versions: the CUDA runtime this module was built with (linked statically), the driver, cuFFT.
int cuda_runtime_version_built();
int cuda_driver_version();  // 0 when there is no driver
int cufft_version();        // -1 when cuFFT cannot tell
// "13.0" for 13000.
std::string version_string(int cuda_version);

// The calling thread's current CUDA device (std::runtime_error naming the call when the runtime cannot
// tell, e.g. without a driver).
int cuda_current_device();

// What memory an address lies in, for the checks of device-pointer arguments: unregistered host memory,
// page-locked host memory, device memory or managed memory, and for the last two the device that holds
// it. std::runtime_error naming the call when the runtime cannot tell (no driver).
enum class MemoryKind { kHost, kPinnedHost, kDevice, kManaged };
struct PointerLocation {
  MemoryKind kind;
  int device;  // for kDevice and kManaged
};
PointerLocation pointer_location(const void* address);

}  // namespace mspt
