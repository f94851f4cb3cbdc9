// A natural logarithm the compiler can vectorise. The C library's logf is a call per element, which keeps
// every loop that contains it scalar; the likelihood's loss (one log per detector pixel) was the largest
// such loop in the multislice gradient. The float version is within 3 ulp of logf for positive normal
// arguments; the double version is the C library's.
#pragma once

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

namespace mspt {

// log(x) for x > 0. Below FLT_MIN (subnormals, zero) the result is log(FLT_MIN), finite; +inf stays +inf.
inline float vector_log(float x) {
  const float xc = x < FLT_MIN ? FLT_MIN : x;
  uint32_t bits;
  memcpy(&bits, &xc, sizeof(bits));
  // x = 2^e m with m in [sqrt(1/2), sqrt(2)): adding (1 - sqrt(1/2))'s mantissa offset carries a mantissa at
  // or above sqrt(2) into the next exponent.
  const int32_t e = int32_t((bits + (0x3f800000u - 0x3f3504f3u)) >> 23) - 127;
  const uint32_t m_bits = bits - (uint32_t(e) << 23);
  float m;
  memcpy(&m, &m_bits, sizeof(m));
  // log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716: the series to s^9 leaves < 3e-9 relative.
  // m - 1 is exact near 1, so the result keeps its relative accuracy as x approaches 1.
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  const float series = 1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9))));
  const float log_m = 2.0f * s * series;
  // ln 2 split in two so that e ln2 adds no rounding of its own for |e| < 2^8.
  const float result = float(e) * 0.693145751953125f + (float(e) * 1.42860682030941723212e-6f + log_m);
  return x > FLT_MAX ? x : result;
}

inline double vector_log(double x) { return ::log(x); }

// The functor form the likelihood body takes (kernels/multislice_body.h).
struct VectorLog {
  template <class T>
  T operator()(T x) const {
    return vector_log(x);
  }
};

}  // namespace mspt
