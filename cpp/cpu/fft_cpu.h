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

// "estimate" | "measure" | "patient", from MSPT_FFTW_PLANNER (default "measure").
std::string fftw_planner_name();
// The FFTW version string, for `mspt info`.
std::string fftw_version();

}  // namespace mspt
