// CUDA backend of the multislice operator, with the interface of MultisliceCpu<float>
// (cpu/multislice_cpu.h) so that one binding template serves both, plus an entry point on device memory.
//
// Two ways in, one implementation (`enqueue`):
//   * run_device takes device pointers (the caller's arrays, used in place, and the caller's output buffers)
//     on a given device and stream, and queues the work on that stream. It does not wait for the work
//     unless asked to (`synchronize`).
//   * run takes host pointers, like the CPU engine: it uploads the inputs into staging buffers on the
//     engine's device, queues the same work on the engine's own stream, downloads the requested outputs and
//     waits for them.
// Positions are processed in chunks (batched over position and mode, one cuFFT call per transform of the
// whole chunk).
//
// Scratch buffers belong to the engine, grow to the largest call seen and are reused. Every call's stream
// first waits (on the GPU, through an event) for the previous call's work, so calls on different streams
// never share a buffer in flight; the host waits only where a buffer or the FFT work area must grow (a call
// with a larger shape than any before) and, with `synchronize`, for the call itself.
//
// Results agree with the CPU backend to float32 rounding but are not bitwise reproducible: the object
// gradient is accumulated with atomic additions (overlapping windows meet in a run-dependent order), and
// per-position reductions use tree sums. The probe gradient, the tilt gradient and the loss are summed in
// position order.
//
// This header needs no CUDA headers: the device state lives behind a pointer (multislice_cuda.cu), and a
// stream is a CUstream_st* (what cudaStream_t names).
#pragma once

#include <stddef.h>

#include <memory>

#include "mspt/multislice_args.h"

struct CUstream_st;

namespace mspt {

class MultisliceCuda {
 public:
  // A plan for probe windows of ny x nx, S slices and M modes on CUDA device `device` (-1: the current
  // device). `threads` is accepted for interface parity with the CPU engine and ignored.
  MultisliceCuda(int ny, int nx, int n_slices, int modes, int threads, int device = -1);
  ~MultisliceCuda();
  MultisliceCuda(const MultisliceCuda&) = delete;
  MultisliceCuda& operator=(const MultisliceCuda&) = delete;

  // Same semantics as MultisliceCpu<float>::run, except that it takes no tape (args.tape must be null); all
  // pointers in `args` are host pointers. Returns once the outputs are written.
  void run(const MultisliceArgs<float>& args);

  // The same computation on device memory of device `device` (which must be this engine's): every pointer
  // in `args` is a device pointer, except that `loss` is a device pointer to one double too (written for a
  // likelihood call when not null). Work is queued on `stream` (null: the legacy default stream) and ordered
  // after the work already queued there; with `synchronize` the positions are read back and checked before
  // any kernel runs (std::invalid_argument naming positions_px[b], as in `run`) and the call returns once
  // the work is done. Without it nothing waits, and a position whose window leaves the object turns every
  // result that depends on it into NaN (see window_kernel) instead of raising.
  void run_device(const MultisliceArgs<float>& args, int device, CUstream_st* stream, bool synchronize);

  int threads() const { return 0; }
  int device() const;
  // Bytes of device memory held by this plan (scratch, staging and FFT work area).
  size_t scratch_bytes() const;

 private:
  struct Device;
  class CallScope;
  void validate(const MultisliceArgs<float>& args) const;
  void enqueue(const MultisliceArgs<float>& args, CUstream_st* stream);

  int ny_, nx_, n_slices_, modes_;
  std::unique_ptr<Device> dev_;
};

}  // namespace mspt
