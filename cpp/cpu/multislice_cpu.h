// CPU backend of the multislice operator: OpenMP over probe positions, each position's forward pass and
// vector-Jacobian product run by one thread on its own scratch, FFTW plans shared.
//
// Results do not depend on the number of threads: every per-position contribution (object patch, probe
// spectrum, position and tilt derivatives, loss) is stored per position and summed in position order.
//
// A likelihood call that asks for no gradient (a loss-only evaluation) stops after the forward pass and the
// likelihood, keeping no per-slice waves; its loss equals a gradient call's bit for bit.
//
// A vector-Jacobian product can start from the state its forward run recorded in a tape
// (cpu/multislice_tape.h) instead of running the forward pass again. Spectra that the propagator's band
// limit confines to a band of rows are transformed by BandFft2 (cpu/fft_cpu.h), which skips the other rows.
#pragma once

#include <array>
#include <memory>
#include <utility>
#include <vector>

#include "cpu/fft_cpu.h"
#include "cpu/multislice_tape.h"
#include "mspt/multislice_args.h"

namespace mspt {

template <class T>
class MultisliceCpu {
 public:
  using Tape = MultisliceTape<T>;  // the forward state a vector-Jacobian product can replay


  // A plan for probe windows of ny x nx, S slices and M modes, run on `threads` threads (0: OpenMP's
  // default). Buffers are allocated here and reused by every call.
  MultisliceCpu(int ny, int nx, int n_slices, int modes, int threads);

  void run(const MultisliceArgs<T>& args);

  int threads() const { return threads_; }
  // Bytes held by this plan's plane buffers (for memory reports): per thread, per call and, once a
  // gradient w.r.t. the slices or the probe has been asked for, per chunk of positions.
  size_t scratch_bytes() const;

 private:
  struct ThreadScratch {
    AlignedBuffer<cplx<T>> waves;    // [S, M, plane] wave entering each slice
    AlignedBuffer<cplx<T>> spectra;  // [S - 1, M, plane] propagated spectra (for the tilt gradient)
    AlignedBuffer<cplx<T>> far;      // [M, plane] far-field spectra
    AlignedBuffer<cplx<T>> work, grad, tmp, band;  // [plane]; band: the band-limited transforms' work plane
    AlignedBuffer<T> intensity, dldi;        // [plane] unshifted
    std::vector<cplx<T>> ramp_y, ramp_x;     // [ny], [nx]
    std::vector<cplx<T>> tilt_cols, pos_cols;  // [nx] per-column derivative sums (plain, ky-weighted)
  };

  // Where one position's forward state lives: in the call's tape if it has one, else in the thread's
  // scratch. Strides are in elements; a zero stride reuses one plane (forward-only passes stay in cache).
  struct PositionState {
    cplx<T>* waves;  // wave entering slice s, mode m
    size_t wave_slice, wave_mode;
    cplx<T>* spectra;  // propagated spectrum entering slice s (1 <= s < S), mode m
    size_t spectrum_slice, spectrum_mode;
    cplx<T>* far;  // far-field spectrum of mode m
    size_t far_mode;
    cplx<T>* wave(int s, int m) const { return waves + s * wave_slice + m * wave_mode; }
    cplx<T>* spectrum(int s, int m) const { return spectra + (s - 1) * spectrum_slice + m * spectrum_mode; }
    cplx<T>* far_field(int m) const { return far + m * far_mode; }
  };

  // Transforms of a spectrum inside the propagator's band (zero outside it): band-pruned where that pays,
  // the full 2D transform otherwise. `far_field` selects the far field's band (none without bandlimit).
  void band_forward(const cplx<T>* in, cplx<T>* out, ThreadScratch& sc, bool far_field = false) const;
  void band_backward(const cplx<T>* in, cplx<T>* out, ThreadScratch& sc, bool far_field = false) const;
  // Calls f(iy) for the rows a propagated spectrum can be nonzero in (the band's; all without band pruning).
  // Work on a propagated spectrum skips the others: band_forward zeroes them, band_backward never reads them.
  template <class F>
  void for_band_rows(F f) const {
    for (const auto& rows : band_rows_)
      for (int iy = rows.first; iy < rows.second; ++iy) f(iy);
  }
  void prepare(const MultisliceArgs<T>& args);
  void fill_tables(const MultisliceArgs<T>& args);
  PositionState position_state(const MultisliceArgs<T>& args, int64_t b, ThreadScratch& sc) const;
  void process_position(const MultisliceArgs<T>& args, int64_t b, int slot, ThreadScratch& sc);
  void forward_position(const MultisliceArgs<T>& args, int64_t b, const ProbeWindow& win, const PositionState& st,
                        ThreadScratch& sc);
  // dL/dI of position b into sc.dldi (unshifted) and its loss into loss_terms_ (kLikelihood).
  void loss_position(const MultisliceArgs<T>& a, int64_t b, ThreadScratch& sc);
  void backward_position(const MultisliceArgs<T>& args, int64_t b, int slot, const ProbeWindow& win,
                         const PositionState& st, ThreadScratch& sc);
  void scatter_chunk(const MultisliceArgs<T>& args, int64_t first, int64_t count);

  int ny_, nx_, n_slices_, modes_, threads_;
  size_t n_, plane_;
  int64_t chunk_;
  bool in_order_ = false;  // one thread: each position adds its own gradients to the totals
  std::shared_ptr<const Fft2Plan<T>> fft_;
  std::shared_ptr<const BandFft2<T>> band_fft_;  // the propagator's band rows (null: full transforms)
  bool far_field_banded_ = false;                // the far field has the same band (bandlimit_farfield)
  std::array<std::pair<int, int>, 2> band_rows_{};  // [begin, end) of the band's low and high rows
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
