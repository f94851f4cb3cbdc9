#include "cpu/multislice_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cpu/denormals.h"
#include "cpu/vector_log.h"
#include "mspt/windows.h"

namespace mspt {
namespace {

// Budget for one chunk's object-gradient windows ([chunk, S, plane]), a share of a typical last-level cache.
constexpr int64_t kChunkCacheBytes = int64_t(4) << 20;

// The (ny, nx) grid `src` in unshifted FFT order copied into `dst` with zero frequency at (ny/2, nx/2)
// (the layout of shifted_index), or back with `to_unshifted`. Whole row segments move at once: no
// division per element, and the copies vectorise.
template <class V>
void shift_copy(const V* src, V* dst, int ny, int nx, bool to_unshifted) {
  const int hx = nx / 2;
  for (int iy = 0; iy < ny; ++iy) {
    const int jy = shifted_index(iy, ny);
    const V* from = src + size_t(to_unshifted ? jy : iy) * nx;
    V* to = dst + size_t(to_unshifted ? iy : jy) * nx;
    if (to_unshifted) {
      std::copy(from + hx, from + nx, to);         // bins 0 .. nx-hx-1
      std::copy(from, from + hx, to + (nx - hx));  // the negative frequencies
    } else {
      std::copy(from, from + (nx - hx), to + hx);
      std::copy(from + (nx - hx), from + nx, to);
    }
  }
}

// The loss of one pattern, `counts` (in place) replaced by dL/dI. The likelihood is a compile-time choice
// and the log vectorisable, so the loop is branch-free and runs a vector of pixels at a time.
template <int Kind, class T>
double likelihood_plane(const T* intensity, const unsigned char* band, size_t n, T eps, T* counts) {
  double loss = 0;
#pragma omp simd reduction(+ : loss)
  for (size_t i = 0; i < n; ++i) {
    T g;
    const T term = likelihood_element(Kind, intensity[i], counts[i], eps, &g, VectorLog());
    const bool reached = band[i] != 0;  // pixels the band-limited model cannot reach carry no information
    loss += reached ? term : T(0);
    counts[i] = reached ? g : T(0);
  }
  return loss;
}

}  // namespace

template <class T>
MultisliceCpu<T>::MultisliceCpu(int ny, int nx, int n_slices, int modes, int threads)
    : ny_(ny), nx_(nx), n_slices_(n_slices), modes_(modes) {
  if (ny < 2 || nx < 2) throw std::invalid_argument("probe window must be at least 2x2 pixels");
  if (n_slices < 1) throw std::invalid_argument("n_slices must be >= 1");
  if (modes < 1) throw std::invalid_argument("modes must be >= 1");
  threads_ = threads > 0 ? threads : omp_get_max_threads();
  n_ = size_t(ny) * nx;
  plane_ = padded_plane(n_);
  // Positions per chunk: enough for every thread to take several (load balance), few enough that the
  // chunk's object-gradient windows stay in the last-level cache until scatter_chunk sums them.
  const int64_t window_bytes = int64_t(n_slices) * int64_t(plane_) * int64_t(sizeof(cplx<T>));
  const int64_t cache_fit = kChunkCacheBytes / window_bytes;
  const int64_t balanced = std::max<int64_t>(16, 4 * int64_t(threads_));
  chunk_ = std::max<int64_t>(2 * int64_t(threads_), std::min(balanced, cache_fit));
  // Whole rounds: every thread takes as many of a chunk's positions (7 on 2 threads left one idle for a
  // position's time in every chunk).
  chunk_ -= chunk_ % threads_;
  // One thread visits the positions in order: each position then adds its gradients to the totals itself,
  // in the order the chunk's reduction would (the same bits), while they are still in cache.
  in_order_ = threads_ == 1;
  fft_ = Fft2Plan<T>::get(ny, nx);
  scratch_.resize(threads_);
  for (auto& sc : scratch_) {
    sc.waves = AlignedBuffer<cplx<T>>(size_t(n_slices) * modes * plane_);
    sc.spectra = AlignedBuffer<cplx<T>>(size_t(n_slices) * modes * plane_);
    sc.far = AlignedBuffer<cplx<T>>(size_t(modes) * plane_);
    sc.work = AlignedBuffer<cplx<T>>(plane_);
    sc.grad = AlignedBuffer<cplx<T>>(plane_);
    sc.tmp = AlignedBuffer<cplx<T>>(plane_);
    sc.band = AlignedBuffer<cplx<T>>(plane_);
    sc.intensity = AlignedBuffer<T>(plane_);
    sc.dldi = AlignedBuffer<T>(plane_);
    sc.ramp_y.resize(ny);
    sc.ramp_x.resize(nx);
    sc.tilt_cols.resize(nx);
    sc.pos_cols.resize(nx);
  }
  probe_spectra_ = AlignedBuffer<cplx<T>>(size_t(modes) * plane_);
  probe_acc_ = AlignedBuffer<cplx<T>>(size_t(modes) * plane_);
  propagator_ = AlignedBuffer<cplx<T>>(plane_);
  in_band_.resize(n_);
  far_band_.resize(n_);
  ky_invA_.resize(ny);
  kx_invA_.resize(nx);
  ky_px_.resize(ny);
  kx_px_.resize(nx);
  chunk_r0_.resize(chunk_);
  chunk_c0_.resize(chunk_);
}

template <class T>
size_t MultisliceCpu<T>::scratch_bytes() const {
  // Summed over the plane buffers themselves (the per-row tables are negligible), so that a memory model
  // can be checked against what is allocated.
  auto bytes = [](const auto& buffer) { return buffer.size() * sizeof(*buffer.data()); };
  size_t total = bytes(probe_spectra_) + bytes(probe_acc_) + bytes(propagator_) + bytes(patch_grads_) +
                 bytes(probe_grads_);
  for (const ThreadScratch& sc : scratch_) {
    total += bytes(sc.waves) + bytes(sc.spectra) + bytes(sc.far) + bytes(sc.work) + bytes(sc.grad) + bytes(sc.tmp) +
             bytes(sc.band) + bytes(sc.intensity) + bytes(sc.dldi);
  }
  return total;
}

template <class T>
void MultisliceCpu<T>::prepare(const MultisliceArgs<T>& a) {
  const PropagationParams& p = a.prop;
  // The tables depend only on the geometry, which a reconstruction keeps from call to call.
  const bool same_geometry = tables_ready_ && std::memcmp(&p, &table_params_, sizeof(p)) == 0 &&
                             a.bandlimit_farfield == table_bandlimit_;
  if (!same_geometry) fill_tables(a);
  // The probe's spectrum, once per call (the input may be unaligned: stage it in scratch).
  ThreadScratch& sc = scratch_[0];
  for (int m = 0; m < modes_; ++m) {
    std::memcpy(static_cast<void*>(sc.work.data()), a.probe + size_t(m) * n_, n_ * sizeof(cplx<T>));
    fft_->forward(sc.work.data(), probe_spectra_.data() + size_t(m) * plane_);
  }
}

template <class T>
void MultisliceCpu<T>::fill_tables(const MultisliceArgs<T>& a) {
  const PropagationParams& p = a.prop;
  for (int iy = 0; iy < ny_; ++iy) {
    ky_invA_[iy] = freq_y_invA(p, iy);
    ky_px_[iy] = fft_freq(iy, ny_);
  }
  for (int ix = 0; ix < nx_; ++ix) {
    kx_invA_[ix] = freq_x_invA(p, ix);
    kx_px_[ix] = fft_freq(ix, nx_);
  }
  for (int iy = 0; iy < ny_; ++iy) {
    for (int ix = 0; ix < nx_; ++ix) {
      const size_t i = size_t(iy) * nx_ + ix;
      propagator_[i] = propagator<T>(p, iy, ix);
      in_band_[i] = inside_band(p, iy, ix);
      far_band_[i] = a.bandlimit_farfield ? in_band_[i] : 1;
    }
  }
  // The band's rows in FFT order: [0, low) and [ny - high, ny); a row is in it if its kx = 0 bin is.
  int low = 0, high = 0;
  while (low < ny_ && in_band_[size_t(low) * nx_]) ++low;
  while (high < ny_ - low && in_band_[size_t(ny_ - 1 - high) * nx_]) ++high;
  band_fft_ = BandFft2<T>::get(ny_, nx_, low, high);
  if (band_fft_ != nullptr)
    band_rows_ = {{{0, low}, {ny_ - high, ny_}}};
  else
    band_rows_ = {{{0, ny_}, {ny_, ny_}}};
  far_field_banded_ = a.bandlimit_farfield;
  table_params_ = p;
  table_bandlimit_ = a.bandlimit_farfield;
  tables_ready_ = true;
}

template <class T>
void MultisliceCpu<T>::band_forward(const cplx<T>* in, cplx<T>* out, ThreadScratch& sc, bool far_field) const {
  if (band_fft_ != nullptr && (!far_field || far_field_banded_))
    band_fft_->forward(in, out, sc.band.data());
  else
    fft_->forward(in, out);
}

template <class T>
void MultisliceCpu<T>::band_backward(const cplx<T>* in, cplx<T>* out, ThreadScratch& sc, bool far_field) const {
  if (band_fft_ != nullptr && (!far_field || far_field_banded_))
    band_fft_->backward(in, out, sc.band.data());
  else
    fft_->backward(in, out);
}

template <class T>
typename MultisliceCpu<T>::PositionState MultisliceCpu<T>::position_state(const MultisliceArgs<T>& a, int64_t b,
                                                                          ThreadScratch& sc) const {
  const int M = modes_;
  const size_t plane = plane_;
  if (a.tape != nullptr) {
    Tape& t = *a.tape;
    const bool spectra = t.with_spectra() && n_slices_ > 1;
    return PositionState{t.wave(b, 0, 0),
                         size_t(M) * plane,
                         plane,
                         spectra ? t.spectrum(b, 1, 0) : sc.work.data(),
                         spectra ? size_t(M) * plane : 0,
                         spectra ? plane : 0,
                         t.far(b, 0),
                         plane};
  }
  // The backward pass needs the wave entering every slice, the tilt derivative also the propagated
  // spectra; what is not needed is not kept, so the forward pass stays in cache.
  const bool keep_waves = a.runs_backward();
  const bool keep_spectra = keep_waves && a.grad_tilt != nullptr;
  return PositionState{sc.waves.data(),
                       keep_waves ? size_t(M) * plane : 0,
                       keep_waves ? plane : 0,
                       keep_spectra ? sc.spectra.data() : sc.work.data(),
                       keep_spectra ? size_t(M) * plane : 0,
                       keep_spectra ? plane : 0,
                       sc.far.data(),
                       plane};
}

template <class T>
void MultisliceCpu<T>::process_position(const MultisliceArgs<T>& a, int64_t b, int slot, ThreadScratch& sc) {
  const ProbeWindow win = probe_window(a.positions[2 * b], a.positions[2 * b + 1], ny_, nx_);
  for (int iy = 0; iy < ny_; ++iy) sc.ramp_y[iy] = shift_ramp_1d<T>(iy, ny_, win.frac_y);
  for (int ix = 0; ix < nx_; ++ix) sc.ramp_x[ix] = shift_ramp_1d<T>(ix, nx_, win.frac_x);
  const PositionState st = position_state(a, b, sc);
  // A vector-Jacobian product with a recorded tape starts from the tape's forward state.
  const bool replay = a.tape != nullptr && a.source != GradientSource::kNone;
  if (!replay) forward_position(a, b, win, st, sc);
  if (a.runs_backward()) {
    backward_position(a, b, slot, win, st, sc);
  } else if (a.source == GradientSource::kLikelihood) {
    loss_position(a, b, sc);  // loss only: no gradient asked, no backward pass
  }
}

template <class T>
void MultisliceCpu<T>::loss_position(const MultisliceArgs<T>& a, int64_t b, ThreadScratch& sc) {
  const size_t n = n_;
  // Given (kGiven), or from the counts (kLikelihood), which pass through sc.dldi unshifted first.
  const T* given = (a.source == GradientSource::kGiven ? a.grad_intensities : a.data) + size_t(b) * n;
  shift_copy(given, sc.dldi.data(), ny_, nx_, true);
  double loss = 0;
  if (a.source == GradientSource::kLikelihood) {
    if (a.likelihood == kPoisson)
      loss = likelihood_plane<kPoisson>(sc.intensity.data(), far_band_.data(), n, a.eps, sc.dldi.data());
    else
      loss = likelihood_plane<kAmplitude>(sc.intensity.data(), far_band_.data(), n, a.eps, sc.dldi.data());
  }
  loss_terms_[b] = loss;
}

template <class T>
void MultisliceCpu<T>::forward_position(const MultisliceArgs<T>& a, int64_t b, const ProbeWindow& win,
                                        const PositionState& st, ThreadScratch& sc) {
  const int ny = ny_, nx = nx_, S = n_slices_, M = modes_;
  const size_t n = n_, plane = plane_;
  const T inv_n = T(1.0 / double(n));
  const cplx<T>* H = propagator_.data();
  const int64_t obj_plane = a.obj_h * a.obj_w;
  std::fill(sc.intensity.data(), sc.intensity.data() + n, T(0));
  for (int m = 0; m < M; ++m) {
    const cplx<T>* Phat = probe_spectra_.data() + size_t(m) * plane;
    for (int iy = 0; iy < ny; ++iy) {
      const cplx<T> ry = sc.ramp_y[iy] * inv_n;
      for (int ix = 0; ix < nx; ++ix) {
        const size_t i = size_t(iy) * nx + ix;
        sc.work[i] = Phat[i] * (ry * sc.ramp_x[ix]);
      }
    }
    fft_->backward(sc.work.data(), st.wave(0, m));
    for (int s = 0; s < S; ++s) {
      const cplx<T>* slice = a.slices + s * obj_plane;
      const cplx<T>* psi = st.wave(s, m);
      for (int iy = 0; iy < ny; ++iy)
        for (int ix = 0; ix < nx; ++ix) {
          const size_t i = size_t(iy) * nx + ix;
          sc.tmp[i] = transmit(psi[i], slice, a.obj_w, win.r0, win.c0, iy, ix);
        }
      if (s < S - 1) {
        cplx<T>* spec = st.spectrum(s + 1, m);
        band_forward(sc.tmp.data(), spec, sc);
        for_band_rows([&](int iy) {
          cplx<T>* sr = spec + size_t(iy) * nx;
          const cplx<T>* hr = H + size_t(iy) * nx;
          for (int ix = 0; ix < nx; ++ix) sr[ix] = sr[ix] * hr[ix];
        });
        band_backward(spec, st.wave(s + 1, m), sc);
      } else {
        if (a.exit_waves != nullptr)
          std::memcpy(static_cast<void*>(a.exit_waves + (size_t(b) * M + m) * n), sc.tmp.data(), n * sizeof(cplx<T>));
        cplx<T>* far = st.far_field(m);
        band_forward(sc.tmp.data(), far, sc, true);
        const unsigned char* band = far_band_.data();
        T* intensity = sc.intensity.data();
        for (size_t i = 0; i < n; ++i) intensity[i] += farfield_intensity(far[i], band[i] != 0, inv_n);
      }
    }
  }
  if (a.intensities != nullptr) shift_copy(sc.intensity.data(), a.intensities + size_t(b) * n, ny, nx, false);
}

template <class T>
void MultisliceCpu<T>::backward_position(const MultisliceArgs<T>& a, int64_t b, int slot, const ProbeWindow& win,
                                         const PositionState& st, ThreadScratch& sc) {
  const int ny = ny_, nx = nx_, S = n_slices_, M = modes_;
  const size_t n = n_, plane = plane_;
  const T inv_n = T(1.0 / double(n));
  const cplx<T>* H = propagator_.data();
  const int64_t obj_plane = a.obj_h * a.obj_w;

  // ---- dL/dI at this position, unshifted ----
  loss_position(a, b, sc);

  // ---- backward ----
  // Derivatives w.r.t. tilt and position are sums over bins weighted by ky or kx. They accumulate per
  // column (elementwise across ix, so the loops vectorise): cols[ix] += (v, ky[iy] v); then
  // d/dkx-weighted = sum kx[ix] cols[ix].re and d/dky-weighted = sum cols[ix].im. The pair is stored as one
  // cplx so that every array in the loop has the same layout, which GCC needs to vectorise it.
  cplx<T>* tilt_cols = sc.tilt_cols.data();
  cplx<T>* pos_cols = sc.pos_cols.data();
  std::fill(tilt_cols, tilt_cols + nx, make_cplx(T(0), T(0)));
  std::fill(pos_cols, pos_cols + nx, make_cplx(T(0), T(0)));
  for (int m = 0; m < M; ++m) {
    const cplx<T>* far = st.far_field(m);
    const unsigned char* band = far_band_.data();
    const T* dldi = sc.dldi.data();
    cplx<T>* work = sc.work.data();
    for (size_t i = 0; i < n; ++i) work[i] = farfield_backward(far[i], dldi[i], band[i] != 0, inv_n);
    band_backward(sc.work.data(), sc.grad.data(), sc, true);
    for (int s = S - 1; s >= 0; --s) {
      const cplx<T>* slice = a.slices + s * obj_plane;
      const cplx<T>* psi = st.wave(s, m);
      cplx<T>* g = sc.grad.data();
      // The slice window's gradient conj(psi) g (summed over modes) and the wave's gradient conj(O) g, in
      // one branch-free pass per case. The window's gradient goes to this position's patch (rows of nx, the
      // first mode overwrites), added to the object's gradient after the last mode: by scatter_chunk, or
      // here when positions come in order. With one mode in order there is no patch: the window's gradient
      // goes straight into the object's (rows of obj_w).
      cplx<T>* window = a.grad_slices != nullptr ? a.grad_slices + s * obj_plane + win.r0 * a.obj_w + win.c0 : nullptr;
      const bool straight = in_order_ && M == 1;
      cplx<T>* patch = straight ? window : nullptr;
      const int64_t patch_stride = straight ? a.obj_w : nx;
      if (window != nullptr && !straight)
        patch = patch_grads_.data() + (size_t(in_order_ ? 0 : slot) * S + s) * plane;
      const bool overwrite = m == 0 && !straight;
      cplx<T>* flush = in_order_ && !straight && m == M - 1 ? window : nullptr;
      for (int iy = 0; iy < ny; ++iy) {
        const size_t row = size_t(iy) * nx;
        cplx<T>* gr = g + row;
        const cplx<T>* pr = psi + row;
        if (patch == nullptr) {
          for (int ix = 0; ix < nx; ++ix) gr[ix] = transmit_adjoint(gr[ix], slice, a.obj_w, win.r0, win.c0, iy, ix);
        } else if (overwrite) {
          cplx<T>* out = patch + iy * patch_stride;
          for (int ix = 0; ix < nx; ++ix) {
            out[ix] = conj_mul(pr[ix], gr[ix]);
            gr[ix] = transmit_adjoint(gr[ix], slice, a.obj_w, win.r0, win.c0, iy, ix);
          }
        } else {
          cplx<T>* out = patch + iy * patch_stride;
          for (int ix = 0; ix < nx; ++ix) {
            out[ix] = out[ix] + conj_mul(pr[ix], gr[ix]);
            gr[ix] = transmit_adjoint(gr[ix], slice, a.obj_w, win.r0, win.c0, iy, ix);
          }
        }
        if (flush != nullptr) {  // the row summed over the modes, into the object's gradient
          cplx<T>* dst = flush + iy * a.obj_w;
          const cplx<T>* src = patch + iy * patch_stride;
          for (int ix = 0; ix < nx; ++ix) dst[ix] = dst[ix] + src[ix];
        }
      }
      if (s == 0) break;
      band_forward(g, sc.work.data(), sc);
      cplx<T>* w = sc.work.data();
      if (a.grad_tilt != nullptr) {
        const cplx<T>* spec = st.spectrum(s, m);
        for_band_rows([&](int iy) {
          const T ky = T(ky_invA_[iy]);
          cplx<T>* wr = w + size_t(iy) * nx;
          const cplx<T>* sr = spec + size_t(iy) * nx;
          const cplx<T>* hr = H + size_t(iy) * nx;
          for (int ix = 0; ix < nx; ++ix) {
            const T im = conj_mul(wr[ix], sr[ix]).im;
            tilt_cols[ix] = tilt_cols[ix] + make_cplx(im, ky * im);
            wr[ix] = conj_mul(hr[ix], wr[ix]);
          }
        });
      } else {
        for_band_rows([&](int iy) {
          cplx<T>* wr = w + size_t(iy) * nx;
          const cplx<T>* hr = H + size_t(iy) * nx;
          for (int ix = 0; ix < nx; ++ix) wr[ix] = conj_mul(hr[ix], wr[ix]);
        });
      }
      band_backward(w, g, sc);
    }
    // sc.grad is now dL/d(shifted probe) for this mode.
    if (a.grad_probe == nullptr && a.grad_positions == nullptr) continue;
    fft_->forward(sc.grad.data(), sc.work.data());
    const cplx<T>* Phat = probe_spectra_.data() + size_t(m) * plane;
    // This position's probe gradient spectrum: into the chunk's buffer (scatter_chunk sums it), or, with the
    // positions in order, added to the total here.
    const bool add_to_total = in_order_ && a.grad_probe != nullptr;
    cplx<T>* pg = add_to_total            ? probe_acc_.data() + size_t(m) * plane
                  : a.grad_probe != nullptr ? probe_grads_.data() + (size_t(slot) * M + m) * plane
                                            : sc.tmp.data();
    auto probe_rows = [&](auto adding) {
      constexpr bool add = decltype(adding)::value;
      for (int iy = 0; iy < ny; ++iy) {
        const cplx<T> ry = sc.ramp_y[iy] * inv_n;
        const T ky = T(ky_px_[iy]);
        const cplx<T>* qr = sc.work.data() + size_t(iy) * nx;
        const cplx<T>* pr = Phat + size_t(iy) * nx;
        cplx<T>* gr = pg + size_t(iy) * nx;
        const cplx<T>* rx = sc.ramp_x.data();
        for (int ix = 0; ix < nx; ++ix) {
          const cplx<T> ramp = ry * rx[ix];
          gr[ix] = add ? gr[ix] + conj_mul(ramp, qr[ix]) : conj_mul(ramp, qr[ix]);
          const T im = conj_mul(qr[ix], pr[ix] * ramp).im;
          pos_cols[ix] = pos_cols[ix] + make_cplx(im, ky * im);
        }
      }
    };
    if (add_to_total)
      probe_rows(std::true_type());
    else
      probe_rows(std::false_type());
  }
  double tilt_y = 0, tilt_x = 0, pos_y = 0, pos_x = 0;
  for (int ix = 0; ix < nx; ++ix) {
    tilt_y += tilt_cols[ix].im;
    tilt_x += kx_invA_[ix] * tilt_cols[ix].re;
    pos_y += pos_cols[ix].im;
    pos_x += kx_px_[ix] * pos_cols[ix].re;
  }
  if (a.grad_positions != nullptr) {
    a.grad_positions[2 * b] = 2 * kPi * pos_y;
    a.grad_positions[2 * b + 1] = 2 * kPi * pos_x;
  }
  tilt_terms_[2 * b] = 2 * kPi * a.prop.dz_A * tilt_y;
  tilt_terms_[2 * b + 1] = 2 * kPi * a.prop.dz_A * tilt_x;
}

// Adds the chunk's object windows and probe spectra to the totals, in position order: parallel over
// (slice, object row) and over probe bins, so no two threads write the same element.
template <class T>
void MultisliceCpu<T>::scatter_chunk(const MultisliceArgs<T>& a, int64_t first, int64_t count) {
  const int ny = ny_, nx = nx_, S = n_slices_, M = modes_;
  if (in_order_) return;  // every position added its own gradients
  if (a.grad_slices != nullptr) {
    // Only the rows the chunk's windows cover: the rest of the object is not visited.
    const int64_t first_row = *std::min_element(chunk_r0_.begin(), chunk_r0_.begin() + count);
    const int64_t span = *std::max_element(chunk_r0_.begin(), chunk_r0_.begin() + count) + ny - first_row;
    const int64_t rows = int64_t(S) * span;
    const bool parallel = count * int64_t(S) * ny * nx > (int64_t(1) << 16);
#pragma omp parallel for num_threads(threads_) schedule(static) if (parallel)
    for (int64_t sr = 0; sr < rows; ++sr) {
      const int64_t s = sr / span, row = first_row + sr % span;
      cplx<T>* dst_row = a.grad_slices + (s * a.obj_h + row) * a.obj_w;
      for (int64_t c = 0; c < count; ++c) {
        const int64_t r0 = chunk_r0_[c];
        if (row < r0 || row >= r0 + ny) continue;
        const cplx<T>* src = patch_grads_.data() + (size_t(c) * S + s) * plane_ + size_t(row - r0) * nx;
        cplx<T>* dst = dst_row + chunk_c0_[c];
        for (int ix = 0; ix < nx; ++ix) dst[ix] = dst[ix] + src[ix];
      }
    }
  }
  if (a.grad_probe != nullptr) {
    // Row by row, positions in order within a row: each bin sums in position order as before, and the
    // innermost loop runs along contiguous bins (it vectorises).
    const int64_t rows = int64_t(M) * ny;
    const bool parallel = count * rows * nx > (int64_t(1) << 16);
#pragma omp parallel for num_threads(threads_) schedule(static) if (parallel)
    for (int64_t mr = 0; mr < rows; ++mr) {
      const size_t m = size_t(mr / ny), offset = size_t(mr % ny) * nx;
      cplx<T>* acc = probe_acc_.data() + m * plane_ + offset;
      for (int64_t c = 0; c < count; ++c) {
        const cplx<T>* src = probe_grads_.data() + (size_t(c) * M + m) * plane_ + offset;
        for (int ix = 0; ix < nx; ++ix) acc[ix] = acc[ix] + src[ix];
      }
    }
  }
  (void)first;
}

template <class T>
void MultisliceCpu<T>::run(const MultisliceArgs<T>& a) {
  validate_plan_shape(a.prop, a.n_slices, a.modes, ny_, nx_, n_slices_, modes_);
  validate_windows(a.positions, a.batch, ny_, nx_, a.obj_h, a.obj_w);
  const bool backward = a.runs_backward();
  if (a.tape != nullptr) {
    if (a.source == GradientSource::kNone) {
      a.tape->start_recording(a);
    } else if (a.source == GradientSource::kGiven) {
      a.tape->check_replay(a);
    } else {
      throw std::invalid_argument("tape: replayed by a vector-Jacobian product only, not by a likelihood gradient");
    }
  }
  prepare(a);
  if (backward && a.grad_slices != nullptr) {
    // Positions in order need one position's patch (none with one mode), a chunk's otherwise.
    const size_t patches = in_order_ ? (modes_ > 1 ? 1 : 0) : size_t(chunk_);
    if (patch_grads_.size() == 0 && patches > 0) patch_grads_ = AlignedBuffer<cplx<T>>(patches * n_slices_ * plane_);
    if (!a.accumulate_slices)
      std::memset(static_cast<void*>(a.grad_slices), 0, size_t(n_slices_) * a.obj_h * a.obj_w * sizeof(cplx<T>));
  }
  if (backward && a.grad_probe != nullptr) {
    if (probe_grads_.size() == 0 && !in_order_) probe_grads_ = AlignedBuffer<cplx<T>>(size_t(chunk_) * modes_ * plane_);
    probe_acc_.zero();
  }
  tilt_terms_.assign(size_t(2 * a.batch), 0.0);
  loss_terms_.assign(size_t(a.batch), 0.0);

  for (int64_t first = 0; first < a.batch; first += chunk_) {
    const int64_t count = std::min(chunk_, a.batch - first);
    for (int64_t c = 0; c < count; ++c) {
      const ProbeWindow w = probe_window(a.positions[2 * (first + c)], a.positions[2 * (first + c) + 1], ny_, nx_);
      chunk_r0_[c] = w.r0;
      chunk_c0_[c] = w.c0;
    }
#pragma omp parallel num_threads(threads_)
    {
      DenormalsAreZero flush;
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < count; ++c) {
        process_position(a, first + c, int(c), scratch_[omp_get_thread_num()]);
      }
    }
    if (backward) scatter_chunk(a, first, count);
  }

  if (a.tape != nullptr && a.source == GradientSource::kNone) a.tape->finish_recording();
  if (backward && a.grad_probe != nullptr) {
    ThreadScratch& sc = scratch_[0];
    for (int m = 0; m < modes_; ++m) {
      fft_->backward(probe_acc_.data() + size_t(m) * plane_, sc.work.data());
      std::memcpy(static_cast<void*>(a.grad_probe + size_t(m) * n_), sc.work.data(), n_ * sizeof(cplx<T>));
    }
  }
  if (backward && a.grad_tilt != nullptr) {
    double ty = 0, tx = 0;
    for (int64_t b = 0; b < a.batch; ++b) {
      ty += tilt_terms_[2 * b];
      tx += tilt_terms_[2 * b + 1];
    }
    a.grad_tilt[0] = ty;
    a.grad_tilt[1] = tx;
  }
  if (a.source == GradientSource::kLikelihood) {
    double total = 0;
    for (int64_t b = 0; b < a.batch; ++b) total += loss_terms_[b];
    if (a.loss != nullptr) *a.loss = total;
    if (a.loss_per_position != nullptr) std::copy(loss_terms_.begin(), loss_terms_.end(), a.loss_per_position);
  }
}

template class MultisliceCpu<float>;
template class MultisliceCpu<double>;

}  // namespace mspt
