// CPU backend of the multislice operator: OpenMP over probe positions, each position's forward pass and
// vector-Jacobian product run by one thread on its own scratch, FFTW plans shared.
//
// Results do not depend on the number of threads: every per-position contribution (object patch, probe
// spectrum, position and tilt derivatives, loss) is stored per position and summed in position order.
#pragma once

#include <memory>
#include <vector>

#include "cpu/fft_cpu.h"
#include "mspt/multislice_args.h"

namespace mspt {

template <class T>
class MultisliceCpu {
 public:
  // A plan for probe windows of ny x nx, S slices and M modes, run on `threads` threads (0: OpenMP's
  // default). Buffers are allocated here and reused by every call.
  MultisliceCpu(int ny, int nx, int n_slices, int modes, int threads);

  void run(const MultisliceArgs<T>& args);

  int threads() const { return threads_; }
  // Bytes held by this plan's buffers (for memory reports).
  size_t scratch_bytes() const;

 private:
  struct ThreadScratch {
    AlignedBuffer<cplx<T>> waves;    // [S, M, plane] wave entering each slice
    AlignedBuffer<cplx<T>> spectra;  // [S, M, plane] propagated spectra (for the tilt gradient)
    AlignedBuffer<cplx<T>> far;      // [M, plane] far-field spectra
    AlignedBuffer<cplx<T>> work, grad, tmp;  // [plane]
    AlignedBuffer<T> intensity, dldi;        // [plane] unshifted
    std::vector<cplx<T>> ramp_y, ramp_x;     // [ny], [nx]
    std::vector<T> tilt_col, tilt_colk, pos_col, pos_colk;  // [nx] per-column derivative sums
  };

  void prepare(const MultisliceArgs<T>& args);
  void fill_tables(const MultisliceArgs<T>& args);
  void process_position(const MultisliceArgs<T>& args, int64_t b, int slot, ThreadScratch& sc);
  void scatter_chunk(const MultisliceArgs<T>& args, int64_t first, int64_t count);

  int ny_, nx_, n_slices_, modes_, threads_;
  size_t n_, plane_;
  int64_t chunk_;
  std::shared_ptr<const Fft2Plan<T>> fft_;
  std::vector<ThreadScratch> scratch_;
  // Geometry tables (propagator, bands, frequencies), refilled only when the geometry changes.
  PropagationParams table_params_{};
  bool table_bandlimit_ = false;
  bool tables_ready_ = false;
  // Per call, shared by all threads.
  AlignedBuffer<cplx<T>> probe_spectra_;  // [M, plane] F(probe)
  AlignedBuffer<cplx<T>> probe_acc_;      // [M, plane] summed probe gradient spectra
  AlignedBuffer<cplx<T>> propagator_;     // [plane] H / n
  std::vector<unsigned char> in_band_;    // [n] inside the propagator's band limit
  std::vector<unsigned char> far_band_;   // [n] far-field bins the model predicts
  std::vector<double> ky_invA_, kx_invA_, ky_px_, kx_px_;
  // Per chunk of positions, reduced in position order after the chunk.
  AlignedBuffer<cplx<T>> patch_grads_;    // [chunk, S, plane] object gradient windows
  AlignedBuffer<cplx<T>> probe_grads_;    // [chunk, M, plane] probe gradient spectra
  std::vector<int64_t> chunk_r0_, chunk_c0_;
  std::vector<double> tilt_terms_;        // [B, 2]
  std::vector<double> loss_terms_;        // [B]
};

}  // namespace mspt
