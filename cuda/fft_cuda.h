// Batched 2D complex-to-complex FFTs on the GPU (cuFFT), the counterpart of cpu/fft_cpu.h.
//
// One FftCuda serves one (ny, nx) grid and keeps a plan per batch size (a few, least recently used first
// out); the plans share one work area that this object owns, so plans for a chunk of positions and for
// the last, shorter chunk do not each hold their own scratch. Transforms are unnormalised in both
// directions, like FFTW's: forward uses exp(-2 pi i k x / n), backward exp(+2 pi i k x / n).
// All work is queued on the stream given at construction.
#pragma once

#include <cuda_runtime.h>
#include <cufft.h>
#include <stdint.h>

#include <vector>

#include "device_buffer.h"
#include "mspt/complex.h"

namespace mspt {

class FftCuda {
 public:
  FftCuda(int ny, int nx, cudaStream_t stream);
  ~FftCuda();
  FftCuda(const FftCuda&) = delete;
  FftCuda& operator=(const FftCuda&) = delete;

  // `batch` contiguous ny x nx planes; in == out is allowed (in place).
  void forward(const cplx<float>* in, cplx<float>* out, int64_t batch);   // [batch, ny, nx]
  void backward(const cplx<float>* in, cplx<float>* out, int64_t batch);  // [batch, ny, nx]

  // Makes the plan for `batch` now (and its work area), so that no allocation happens between kernels.
  void reserve(int64_t batch) { plan_for(batch); }

  size_t workspace_bytes() const { return workspace_.bytes(); }

 private:
  struct Plan {
    int64_t batch;
    cufftHandle handle;
    uint64_t last_use;
  };

  cufftHandle plan_for(int64_t batch);
  void exec(const cplx<float>* in, cplx<float>* out, int64_t batch, int direction);

  int ny_, nx_;
  cudaStream_t stream_;
  std::vector<Plan> plans_;
  DeviceBuffer<unsigned char> workspace_;
  uint64_t clock_ = 0;
};

}  // namespace mspt
