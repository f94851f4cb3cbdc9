// The CPU projector's memory side of one ray sample: reading the 8 corners of its trilinear cell (projector) and
// adding to them (back-projector) in a padded box where every corner exists, so without bounds checks. A cell
// comes as a pointer to its lowest corner and its fractions (tk, tj, ti); its weights are trilinear_weights'
// (kernels/projector_body.h) on every path, so the back-projector adds the very products the projector
// multiplies by. Two forms, chosen at compile time: portable scalar code, and AVX2 + FMA (the _core_avx2
// build), which holds a cell's 8 corners in one vector (the two x-neighbours of a row in one 8-byte load) and
// adds to them two doubles at a time.
#pragma once

#include <stdint.h>

#include "kernels/projector_body.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MSPT_PROJECTOR_CELLS_AVX2 1
#else
#define MSPT_PROJECTOR_CELLS_AVX2 0
#endif

namespace mspt {

#if MSPT_PROJECTOR_CELLS_AVX2

// trilinear_weights as one vector, the same roundings in the same order: lane c holds
// ((1 - tk or tk) x (1 - tj or tj)) x (1 - ti or ti); fma(t, -1, 1) rounds as 1 - t does, fma(t, 1, 0) is t.
inline __m256 cell_weights8(float tk, float tj, float ti) {
  const __m256 sign_k = _mm256_setr_ps(-1, -1, -1, -1, 1, 1, 1, 1), one_k = _mm256_setr_ps(1, 1, 1, 1, 0, 0, 0, 0);
  const __m256 sign_j = _mm256_setr_ps(-1, -1, 1, 1, -1, -1, 1, 1), one_j = _mm256_setr_ps(1, 1, 0, 0, 1, 1, 0, 0);
  const __m256 sign_i = _mm256_setr_ps(-1, 1, -1, 1, -1, 1, -1, 1), one_i = _mm256_setr_ps(1, 0, 1, 0, 1, 0, 1, 0);
  const __m256 wk = _mm256_fmadd_ps(_mm256_set1_ps(tk), sign_k, one_k);
  const __m256 wj = _mm256_fmadd_ps(_mm256_set1_ps(tj), sign_j, one_j);
  const __m256 wi = _mm256_fmadd_ps(_mm256_set1_ps(ti), sign_i, one_i);
  return _mm256_mul_ps(_mm256_mul_ps(wk, wj), wi);
}

// The 8 corners of the cell whose lowest corner is at v (rows of `row`, planes of `plane` elements), in
// cell_corner_index's order.
inline __m256 cell_corners8(const float* v, int64_t plane, int64_t row) {
  const auto pair = [](const float* p) { return _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(p))); };
  const auto with_pair = [](__m128 x, const float* p) { return _mm_loadh_pi(x, reinterpret_cast<const __m64*>(p)); };
  const __m128 lower = with_pair(pair(v), v + row), upper = with_pair(pair(v + plane), v + plane + row);
  return _mm256_insertf128_ps(_mm256_castps128_ps256(lower), upper, 1);
}

// A ray's running sum of samples: each lane gathers one corner's products in float over kFloatRun samples, then
// adds them to a double sum.
class RaySum {
 public:
  void add(const float* v, int64_t plane, int64_t row, float tk, float tj, float ti) {
    run_ = _mm256_fmadd_ps(cell_weights8(tk, tj, ti), cell_corners8(v, plane, row), run_);
    if (++in_run_ == kFloatRun) flush();
  }
  double total() {
    flush();
    const __m256d both = _mm256_add_pd(lower_, upper_);
    const __m128d pair = _mm_add_pd(_mm256_castpd256_pd128(both), _mm256_extractf128_pd(both, 1));
    return _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)));
  }

 private:
  static constexpr int kFloatRun = 8;
  void flush() {
    lower_ = _mm256_add_pd(lower_, _mm256_cvtps_pd(_mm256_castps256_ps128(run_)));
    upper_ = _mm256_add_pd(upper_, _mm256_cvtps_pd(_mm256_extractf128_ps(run_, 1)));
    run_ = _mm256_setzero_ps();
    in_run_ = 0;
  }
  __m256 run_ = _mm256_setzero_ps();
  __m256d lower_ = _mm256_setzero_pd(), upper_ = _mm256_setzero_pd();
  int in_run_ = 0;
};

// Adds weight x value (float products) to the 8 corners of the cell whose lowest corner is at v.
inline void splat_cell(double* v, int64_t plane, int64_t row, float tk, float tj, float ti, float value) {
  const __m256 w = _mm256_mul_ps(cell_weights8(tk, tj, ti), _mm256_set1_ps(value));
  const __m256d lower = _mm256_cvtps_pd(_mm256_castps256_ps128(w));
  const __m256d upper = _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1));
  const auto add = [](double* p, __m128d x) { _mm_storeu_pd(p, _mm_add_pd(_mm_loadu_pd(p), x)); };
  add(v, _mm256_castpd256_pd128(lower));
  add(v + row, _mm256_extractf128_pd(lower, 1));
  add(v + plane, _mm256_castpd256_pd128(upper));
  add(v + plane + row, _mm256_extractf128_pd(upper, 1));
}

#else

// A ray's running sum of samples: each sample's weighted corners summed in float (interior_cell_sum), the
// samples in double.
class RaySum {
 public:
  void add(const float* v, int64_t plane, int64_t row, float tk, float tj, float ti) {
    float w[8];
    trilinear_weights(tk, tj, ti, w);
    sum_ += interior_cell_sum<float, float>(v, plane, static_cast<int>(row), w);
  }
  double total() const { return sum_; }

 private:
  double sum_ = 0;
};

// Adds weight x value (float products) to the 8 corners of the cell whose lowest corner is at v.
inline void splat_cell(double* v, int64_t plane, int64_t row, float tk, float tj, float ti, float value) {
  float w[8];
  trilinear_weights(tk, tj, ti, w);
  const int64_t corner[8] = {0, 1, row, row + 1, plane, plane + 1, plane + row, plane + row + 1};
  for (int c = 0; c < 8; ++c) v[corner[c]] += static_cast<double>(w[c] * value);
}

#endif

}  // namespace mspt
