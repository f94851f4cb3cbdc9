// Every CUDA runtime and cuFFT call goes through one of these macros, so a failure becomes a
// std::runtime_error (a RuntimeError in Python) that names the call and the error, instead of a status code
// that nobody reads. Kernel launches are checked with MSPT_CUDA_CHECK_LAUNCH right after the launch.
#pragma once

#include <cuda_runtime.h>
#include <cufft.h>

#include <stdexcept>
#include <string>

namespace mspt {

inline void cuda_check(cudaError_t status, const char* call) {
  if (status == cudaSuccess) return;
  throw std::runtime_error(std::string("CUDA error in ") + call + ": " + cudaGetErrorName(status) + " (" +
                           cudaGetErrorString(status) + ")");
}

// cuFFT has no error-string function; the names are those of cufftResult (cufft.h).
inline const char* cufft_error_name(cufftResult status) {
  switch (static_cast<int>(status)) {
    case 0x0: return "CUFFT_SUCCESS";
    case 0x1: return "CUFFT_INVALID_PLAN";
    case 0x2: return "CUFFT_ALLOC_FAILED (out of device memory)";
    case 0x3: return "CUFFT_INVALID_TYPE";
    case 0x4: return "CUFFT_INVALID_VALUE";
    case 0x5: return "CUFFT_INTERNAL_ERROR";
    case 0x6: return "CUFFT_EXEC_FAILED";
    case 0x7: return "CUFFT_SETUP_FAILED (is a GPU driver installed?)";
    case 0x8: return "CUFFT_INVALID_SIZE";
    case 0x9: return "CUFFT_UNALIGNED_DATA";
    case 0xB: return "CUFFT_INVALID_DEVICE";
    case 0xD: return "CUFFT_NO_WORKSPACE";
    case 0xE: return "CUFFT_NOT_IMPLEMENTED";
    case 0x10: return "CUFFT_NOT_SUPPORTED";
    case 0x11: return "CUFFT_MISSING_DEPENDENCY";
    case 0x12: return "CUFFT_NVRTC_FAILURE";
    case 0x13: return "CUFFT_NVJITLINK_FAILURE";
    case 0x14: return "CUFFT_NVSHMEM_FAILURE";
    default: return "unknown cufftResult";
  }
}

inline void cufft_check(cufftResult status, const char* call) {
  if (status == CUFFT_SUCCESS) return;
  throw std::runtime_error(std::string("cuFFT error in ") + call + ": " + cufft_error_name(status) + " (code " +
                           std::to_string(static_cast<int>(status)) + ")");
}

}  // namespace mspt

#define MSPT_CUDA_CHECK(call) ::mspt::cuda_check((call), #call)
#define MSPT_CUFFT_CHECK(call) ::mspt::cufft_check((call), #call)
// After a <<<...>>> launch: configuration errors surface here, faults in the kernel at the next sync.
#define MSPT_CUDA_CHECK_LAUNCH(kernel_name) ::mspt::cuda_check(cudaGetLastError(), "launch of " kernel_name)
