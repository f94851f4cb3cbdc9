#include "fft_cuda.h"

#include <stdexcept>

#include "cuda_check.h"

namespace mspt {

namespace {
constexpr size_t kMaxPlans = 6;
}

FftCuda::FftCuda(int ny, int nx, cudaStream_t stream) : ny_(ny), nx_(nx), stream_(stream) {
  if (ny < 1 || nx < 1) throw std::invalid_argument("FFT grid must be at least 1x1");
}

FftCuda::~FftCuda() {
  // Plans may still be queued on the stream: wait before freeing what they use.
  cudaStreamSynchronize(stream_);
  for (Plan& p : plans_) cufftDestroy(p.handle);
}

cufftHandle FftCuda::plan_for(int64_t batch) {
  for (Plan& p : plans_) {
    if (p.batch == batch) {
      p.last_use = ++clock_;
      return p.handle;
    }
  }
  if (plans_.size() >= kMaxPlans) {
    size_t oldest = 0;
    for (size_t i = 1; i < plans_.size(); ++i)
      if (plans_[i].last_use < plans_[oldest].last_use) oldest = i;
    MSPT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    MSPT_CUFFT_CHECK(cufftDestroy(plans_[oldest].handle));
    plans_.erase(plans_.begin() + static_cast<std::ptrdiff_t>(oldest));
  }
  cufftHandle handle;
  MSPT_CUFFT_CHECK(cufftCreate(&handle));
  size_t work_bytes = 0;
  try {
    MSPT_CUFFT_CHECK(cufftSetAutoAllocation(handle, 0));
    long long dims[2] = {ny_, nx_};
    const long long plane = static_cast<long long>(ny_) * nx_;
    // Contiguous planes: element (b, y, x) at b * plane + y * nx + x, for input and output.
    MSPT_CUFFT_CHECK(cufftMakePlanMany64(handle, 2, dims, nullptr, 1, plane, nullptr, 1, plane, CUFFT_C2C,
                                         static_cast<long long>(batch), &work_bytes));
    if (work_bytes > workspace_.capacity()) {
      // The old work area may be in use by queued transforms.
      MSPT_CUDA_CHECK(cudaStreamSynchronize(stream_));
      workspace_.ensure(work_bytes);
    }
  } catch (...) {
    cufftDestroy(handle);
    throw;
  }
  plans_.push_back(Plan{batch, handle, ++clock_});
  return handle;
}

void FftCuda::exec(const cplx<float>* in, cplx<float>* out, int64_t batch, int direction) {
  if (batch <= 0) return;
  const cufftHandle handle = plan_for(batch);
  // Bound at every call: the stream may have changed since this plan last ran.
  MSPT_CUFFT_CHECK(cufftSetStream(handle, stream_));
  // The shared work area may have moved since this plan last ran (none is held while no plan needs one).
  if (workspace_.data() != nullptr) MSPT_CUFFT_CHECK(cufftSetWorkArea(handle, workspace_.data()));
  // cuFFT takes non-const input; C2C transforms do not modify it when out-of-place.
  MSPT_CUFFT_CHECK(cufftExecC2C(handle, reinterpret_cast<cufftComplex*>(const_cast<cplx<float>*>(in)),
                                reinterpret_cast<cufftComplex*>(out), direction));
}

void FftCuda::forward(const cplx<float>* in, cplx<float>* out, int64_t batch) { exec(in, out, batch, CUFFT_FORWARD); }

void FftCuda::backward(const cplx<float>* in, cplx<float>* out, int64_t batch) {
  exec(in, out, batch, CUFFT_INVERSE);
}

}  // namespace mspt
