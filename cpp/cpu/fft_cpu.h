// FFTW plans for the CPU backend: one out-of-place forward and backward 2D plan per shape and precision,
// made once (planning is not thread-safe, so it happens under a lock) and executed from any thread with
// FFTW's new-array interface on buffers from aligned_buffer (same alignment as the planned arrays).
#pragma once

#include <fftw3.h>

#include <cstddef>
#include <memory>
#include <string>

#include "mspt/complex.h"

namespace mspt {

// Allocation through fftw_malloc, so every buffer has the alignment the plans were made for.
template <class T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t count);
  ~AlignedBuffer();
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& other) noexcept : data_(other.data_), count_(other.count_) {
    other.data_ = nullptr;
    other.count_ = 0;
  }
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return count_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  void zero();

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

// Stride (in elements) between consecutive planes inside one buffer, padded so every plane keeps the
// buffer's SIMD alignment.
inline size_t padded_plane(size_t n) { return (n + 15) / 16 * 16; }

// A cached pair of 2D complex plans (forward, backward) for one (ny, nx) and precision T.
template <class T>
class Fft2Plan {
 public:
  Fft2Plan(int ny, int nx);
  ~Fft2Plan();
  Fft2Plan(const Fft2Plan&) = delete;
  Fft2Plan& operator=(const Fft2Plan&) = delete;

  // Unnormalised transforms, out-of-place (in is preserved), thread-safe.
  void forward(const cplx<T>* in, cplx<T>* out) const;
  void backward(const cplx<T>* in, cplx<T>* out) const;

  // A shared plan for this shape, made on first use.
  static std::shared_ptr<const Fft2Plan> get(int ny, int nx);

 private:
  int ny_, nx_;
  void* forward_ = nullptr;
  void* backward_ = nullptr;
};

// 2D transforms of spectra confined to a band of rows: rows [0, low) and [ny - high, ny) in FFT order, as
// the propagator's band limit leaves them (2/3 of the rows at 2/3 Nyquist). `forward` computes those rows
// of the spectrum only and zeroes the others; `backward` reads those rows only (the others must be zero).
// A pass along y over every column and one along x over the band rows: about 10 % less time than the full
// 2D transform at 128^2. Out-of-place through `work`, a plane from AlignedBuffer; thread-safe.
template <class T>
class BandFft2 {
 public:
  BandFft2(int ny, int nx, int low, int high);
  ~BandFft2();
  BandFft2(const BandFft2&) = delete;
  BandFft2& operator=(const BandFft2&) = delete;

  void forward(const cplx<T>* in, cplx<T>* out, cplx<T>* work) const;
  void backward(const cplx<T>* in, cplx<T>* out, cplx<T>* work) const;

  // A shared plan for this shape and band, made on first use; null where pruning would not pay (no row
  // outside the band, or rows not aligned like the planes so FFTW's SIMD codelets could not run on them).
  static std::shared_ptr<const BandFft2> get(int ny, int nx, int low, int high);

 private:
  void zero_gap(cplx<T>* plane) const;

  int ny_, nx_, low_, high_;
  void* columns_[2] = {nullptr, nullptr};  // [forward, backward]: ny-point transforms of the nx columns
  void* low_rows_[2] = {nullptr, nullptr};   // nx-point transforms of rows [0, low)
  void* high_rows_[2] = {nullptr, nullptr};  // nx-point transforms of rows [ny - high, ny)
};

// "estimate" | "measure" | "patient", from MSPT_FFTW_PLANNER (default "measure").
std::string fftw_planner_name();
// The FFTW version string, for `mspt info`.
std::string fftw_version();

}  // namespace mspt
