// Batched 2D complex-to-complex FFTs on the GPU (cuFFT), the counterpart of cpu/fft_cpu.h.
//
// One FftCuda serves one (ny, nx) grid and keeps a plan per batch size (a few, least recently used first
// out); the plans share one work area that this object owns, so plans for a chunk of positions and for
// the last, shorter chunk do not each hold their own scratch. Transforms are unnormalised in both
// directions, like FFTW's: forward uses exp(-2 pi i k x / n), backward exp(+2 pi i k x / n).
// All work is queued on the object's current stream: the one given at construction, or another one set
// for a call (set_stream). Whoever changes the stream orders the new stream after the work queued on the old
// one (the engines make it wait for an event), since the plans' work area is shared; and the stream that is
// current when the object is destroyed must still exist (the engines set their own stream back after a call).
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

  // Queue the following transforms on `stream` (see the note above on ordering).
  void set_stream(cudaStream_t stream) { stream_ = stream; }
  cudaStream_t stream() const { return stream_; }

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
