// CUDA backend of the multislice operator, with the interface of MultisliceCpu<float>
// (cpu/multislice_cpu.h) so that one binding template serves both.
//
// `run` takes host pointers, like the CPU engine: it copies the inputs into device buffers that the engine
// owns and reuses across calls (no allocation when shapes repeat), processes the positions in chunks
// (batched over position and mode, one cuFFT call per transform of the whole chunk), and copies the
// requested outputs back before returning.
//
// Results agree with the CPU backend to float32 rounding but are not bitwise reproducible: the object
// gradient is accumulated with atomic additions (overlapping windows meet in a run-dependent order), and
// per-position reductions use tree sums. The probe gradient is summed in position order.
//
// This header needs no CUDA headers: the device state lives behind a pointer (multislice_cuda.cu).
#pragma once

#include <stddef.h>

#include <memory>

#include "mspt/multislice_args.h"

namespace mspt {

class MultisliceCuda {
 public:
  // A plan for probe windows of ny x nx, S slices and M modes on the current CUDA device. `threads` is
  // accepted for interface parity with the CPU engine and ignored.
  MultisliceCuda(int ny, int nx, int n_slices, int modes, int threads);
  ~MultisliceCuda();
  MultisliceCuda(const MultisliceCuda&) = delete;
  MultisliceCuda& operator=(const MultisliceCuda&) = delete;

  // Same semantics as MultisliceCpu<float>::run, except that it takes no tape (args.tape must be null); all
  // pointers in `args` are host pointers.
  void run(const MultisliceArgs<float>& args);

  int threads() const { return 0; }
  // Bytes of device memory held by this plan (buffers and FFT work area).
  size_t scratch_bytes() const;

 private:
  struct Device;
  void run_on_device(const MultisliceArgs<float>& args);

  int ny_, nx_, n_slices_, modes_;
  std::unique_ptr<Device> dev_;
};

}  // namespace mspt
