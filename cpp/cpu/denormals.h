// Flush denormal floats to zero in the calling thread for the lifetime of the guard, then restore the
// thread's previous mode. Waves far outside the probe and spectra beyond the band limit decay into the
// denormal range, where every arithmetic operation (FFTW's included) costs tens of times more; values that
// small carry no information here. The mode is per thread and restored, so the Python thread that joins
// an OpenMP region leaves it as it found it.
#pragma once

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>

namespace mspt {
class DenormalsAreZero {
 public:
  DenormalsAreZero() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushToZero | kDenormalsAreZero); }
  ~DenormalsAreZero() { _mm_setcsr(saved_); }
  DenormalsAreZero(const DenormalsAreZero&) = delete;
  DenormalsAreZero& operator=(const DenormalsAreZero&) = delete;

 private:
  static constexpr unsigned kFlushToZero = 0x8000;      // MXCSR bit 15
  static constexpr unsigned kDenormalsAreZero = 0x0040;  // MXCSR bit 6
  unsigned saved_;
};
}  // namespace mspt
#else
namespace mspt {
struct DenormalsAreZero {};  // other architectures: nothing to set
}  // namespace mspt
#endif
