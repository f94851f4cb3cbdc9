// A minimal complex type usable in host and device code.
//
// std::complex is not callable from CUDA device code, so the kernel bodies use this POD struct instead.
// Its layout (re, im) matches std::complex<T>, fftw(f)_complex and cufftComplex, so buffers are shared
// by reinterpret_cast without copies.
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define MSPT_HD __host__ __device__ __forceinline__
#else
#define MSPT_HD inline
#endif

namespace mspt {

template <class T>
struct cplx {
  T re, im;
};

template <class T>
MSPT_HD cplx<T> make_cplx(T re, T im) {
  return cplx<T>{re, im};
}
template <class T>
MSPT_HD cplx<T> operator+(cplx<T> a, cplx<T> b) {
  return {a.re + b.re, a.im + b.im};
}
template <class T>
MSPT_HD cplx<T> operator-(cplx<T> a, cplx<T> b) {
  return {a.re - b.re, a.im - b.im};
}
template <class T>
MSPT_HD cplx<T> operator*(cplx<T> a, cplx<T> b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}
template <class T>
MSPT_HD cplx<T> operator*(cplx<T> a, T s) {
  return {a.re * s, a.im * s};
}
template <class T>
MSPT_HD cplx<T> conj(cplx<T> a) {
  return {a.re, -a.im};
}
// conj(a) * b without forming conj(a).
template <class T>
MSPT_HD cplx<T> conj_mul(cplx<T> a, cplx<T> b) {
  return {a.re * b.re + a.im * b.im, a.re * b.im - a.im * b.re};
}
// Re(conj(a) * b): the real inner product of two complex numbers seen as 2-vectors.
template <class T>
MSPT_HD T re_dot(cplx<T> a, cplx<T> b) {
  return a.re * b.re + a.im * b.im;
}
template <class T>
MSPT_HD T norm2(cplx<T> a) {
  return a.re * a.re + a.im * a.im;
}
// Precision-matched math that resolves identically in host and device code.
MSPT_HD float m_cos(float x) { return cosf(x); }
MSPT_HD double m_cos(double x) { return ::cos(x); }
MSPT_HD float m_sin(float x) { return sinf(x); }
MSPT_HD double m_sin(double x) { return ::sin(x); }
MSPT_HD float m_sqrt(float x) { return sqrtf(x); }
MSPT_HD double m_sqrt(double x) { return ::sqrt(x); }
MSPT_HD float m_log(float x) { return logf(x); }
MSPT_HD double m_log(double x) { return ::log(x); }

// exp(i * phase)
template <class T>
MSPT_HD cplx<T> expi(T phase) {
  return {m_cos(phase), m_sin(phase)};
}

}  // namespace mspt
