// mspt._core_cuda: the CUDA backend (cuFFT + kernels launching the shared kernel bodies). Built only where
// a CUDA compiler and cuFFT were found; imports without a GPU or driver (the CUDA runtime is linked
// statically and talks to the driver only when asked), so `device_count()` can answer 0 instead of the
// import failing. Compiled by the host compiler: no CUDA header is needed here. Every operator has a
// host-array entry point (NumPy in and out) and a device-memory one (descriptors of the caller's device
// arrays, the caller's stream), which Python's mspt.ops uses for CUDA arrays.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/multislice_binding.h"
#include "device_query.h"
#include "multislice_cuda.h"
#include "multislice_device_binding.h"
#include "projector_binding.h"

namespace py = pybind11;
using namespace pybind11::literals;

PYBIND11_MODULE(_core_cuda, m) {
  m.doc() = "mspt CUDA backend: multislice operators on cuFFT and the tomographic projector";
  auto multislice = mspt::bind_multislice<mspt::MultisliceCuda, float>(
      m, "MultisliceCuda32",
      "Multislice plan on one CUDA device (`device`, default the current one), single precision. `run` takes "
      "and returns NumPy arrays; `run_device` works on device memory in place, on the caller's stream. Device "
      "buffers are kept and reused across calls. Results match the CPU backend to float32 rounding but are "
      "not bitwise reproducible (the object gradient is accumulated with atomic additions).");
  mspt::bind_multislice_device(multislice);
  mspt::bind_projector_cuda(m);
  m.def("current_device", &mspt::cuda_current_device,
        "The calling thread's current CUDA device as this module's runtime sees it (RuntimeError without a "
        "driver).");
  m.def("device_count", &mspt::cuda_device_count,
        "Number of usable CUDA devices; 0 (not an error) when there is no driver or no GPU.");
  m.def("device_status", &mspt::cuda_device_status,
        "One line for users: the devices found, or why there are none.");
  m.def(
      "device_info",
      []() {
        py::list out;
        for (const mspt::CudaDeviceInfo& info : mspt::cuda_device_info()) {
          py::dict d;
          d["index"] = info.index;
          d["name"] = info.name;
          d["compute_capability"] = 10 * info.major + info.minor;  // 90 for sm_90
          d["total_memory_bytes"] = info.total_memory_bytes;
          d["multiprocessors"] = info.multiprocessors;
          out.append(d);
        }
        return out;
      },
      "One dict per device: index, name, compute_capability (10 * major + minor, e.g. 90), "
      "total_memory_bytes, "
      "multiprocessors. Empty without a driver or GPU.");
  m.def("build_info", []() {
    py::dict d;
    d["cuda_runtime"] = mspt::version_string(mspt::cuda_runtime_version_built());
    const int driver = mspt::cuda_driver_version();
    d["cuda_driver"] = driver > 0 ? mspt::version_string(driver) : std::string("none");
    const int cufft = mspt::cufft_version();  // major * 1000 + minor * 100 + patch
    d["cufft"] = cufft < 0 ? std::string("cuFFT") : "cuFFT " + std::to_string(cufft / 1000) + "." +
                                                        std::to_string((cufft % 1000) / 100) + "." +
                                                        std::to_string(cufft % 100);
    d["fft"] = d["cufft"];
#ifdef MSPT_CUDA_ARCHITECTURES
    d["cuda_architectures"] = MSPT_CUDA_ARCHITECTURES;
#endif
#ifdef MSPT_VERSION
    d["version"] = MSPT_VERSION;
#endif
    return d;
  });
}
