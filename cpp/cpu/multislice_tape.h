// The forward state of a multislice call, kept so that its vector-Jacobian product does not run the forward
// pass a second time (CPU backend; the CUDA backend recomputes, which is cheap there).
//
// Per probe position b and mode m it holds what the backward pass reads: the wave entering every slice,
// the far-field spectra and, for the tilt gradient only, the propagated spectra entering slices 1 .. S-1.
// Memory: B x M x (2S, or S + 1 without the tilt spectra) planes of ny x nx complex values, e.g. 50 MB for
// 64 positions, 5 slices, one mode and a 128^2 complex64 window (see bytes_for).
//
// A forward run (GradientSource::kNone) records it; vector-Jacobian products (kGiven) replay it, any number
// of times. A replay checks that the call has the recording's positions, geometry and shapes; that the
// slices and probe are unchanged is the caller's promise (they are not copied).
#pragma once

#include <stdint.h>

#include <vector>

#include "cpu/fft_cpu.h"
#include "mspt/multislice_args.h"

namespace mspt {

template <class T>
class MultisliceTape {
 public:
  MultisliceTape(int64_t batch, int n_slices, int modes, int ny, int nx, bool with_spectra);

  // Bytes a tape of this shape holds, before it is made (callers decide against a memory limit).
  static size_t bytes_for(int64_t batch, int n_slices, int modes, int ny, int nx, bool with_spectra);
  size_t bytes() const { return bytes_for(batch_, n_slices_, modes_, ny_, nx_, with_spectra_); }
  bool with_spectra() const { return with_spectra_; }
  int64_t batch() const { return batch_; }
  int n_slices() const { return n_slices_; }
  int modes() const { return modes_; }
  int ny() const { return ny_; }
  int nx() const { return nx_; }
  bool recorded() const { return recorded_; }

  // A forward run about to write this tape: the shapes must fit; the previous recording is forgotten.
  void start_recording(const MultisliceArgs<T>& a);
  void finish_recording() { recorded_ = true; }
  // A vector-Jacobian product about to read it: throws std::invalid_argument naming what differs from the
  // recording call.
  void check_replay(const MultisliceArgs<T>& a) const;

  // Planes of ny x nx values, each aligned like the FFT plans' buffers.
  cplx<T>* wave(int64_t b, int s, int m) { return waves_.data() + ((size_t(b) * n_slices_ + s) * modes_ + m) * plane_; }
  cplx<T>* far(int64_t b, int m) { return far_.data() + (size_t(b) * modes_ + m) * plane_; }
  // The propagated spectrum entering slice s, 1 <= s < S (with_spectra only).
  cplx<T>* spectrum(int64_t b, int s, int m) {
    return spectra_.data() + ((size_t(b) * (n_slices_ - 1) + (s - 1)) * modes_ + m) * plane_;
  }

 private:
  void check_shape(const MultisliceArgs<T>& a) const;

  int64_t batch_;
  int n_slices_, modes_, ny_, nx_;
  size_t plane_;
  bool with_spectra_;
  AlignedBuffer<cplx<T>> waves_;    // [B, S, M, plane]
  AlignedBuffer<cplx<T>> far_;      // [B, M, plane]
  AlignedBuffer<cplx<T>> spectra_;  // [B, S - 1, M, plane], empty without the tilt spectra
  // The recording call, for the replay checks.
  bool recorded_ = false;
  PropagationParams prop_{};
  bool bandlimit_farfield_ = false;
  int64_t obj_h_ = 0, obj_w_ = 0;
  std::vector<double> positions_;  // [B, 2]
};

}  // namespace mspt
