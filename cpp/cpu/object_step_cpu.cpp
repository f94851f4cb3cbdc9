#include "cpu/object_step_cpu.h"

#include <omp.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "cpu/window_rows.h"
#include "kernels/object_step_body.h"
#include "mspt/windows.h"

namespace mspt {
namespace {

// Below this many updated elements one thread is faster than waking a team: the step is a few memory-bound
// operations per element, and a team that slept through the Python between two batches takes longer to wake
// than 4 slices of a 160^2 object take to update (measured: 274 us on 2 threads against 139 us on 1).
constexpr int64_t kParallelElements = int64_t(1) << 19;

// The batch's illumination along row r of the union (its runs only) into `row` (object columns): the probe
// intensity of every window that covers the row, added in position order (deterministic).
template <class T>
void row_illumination(const WindowRows& u, int64_t r, const T* probe_intensity, T* row) {
  for (int64_t k = u.row_begin[r]; k < u.row_begin[r + 1]; ++k)
    std::fill(row + u.runs[k].first, row + u.runs[k].second, T(0));
  const int64_t object_row = u.first_row + r;
  for (size_t b = 0; b < u.windows.size(); ++b) {
    if (!u.covers(int64_t(b), object_row)) continue;
    const T* src = probe_intensity + (object_row - u.windows[b].r0) * u.nx;
    T* dst = row + u.windows[b].c0;
    for (int ix = 0; ix < u.nx; ++ix) dst[ix] += src[ix];
  }
}

template <int Kind, class T>
void step_rows(const ObjectStepArgs<T>& a, const WindowRows& u, T floor, bool parallel) {
  const int64_t obj_plane = a.obj_h * a.obj_w;
#pragma omp parallel num_threads(a.threads) if (parallel)
  {
    std::vector<T> gain(size_t(a.obj_w));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < u.rows(); ++r) {
      row_illumination(u, r, a.probe_intensity, gain.data());
      for (int64_t k = u.row_begin[r]; k < u.row_begin[r + 1]; ++k)
        for (int64_t c = u.runs[k].first; c < u.runs[k].second; ++c)
          gain[c] = step_gain(gain[c], floor, a.curvature, a.step);
      const int64_t offset = (u.first_row + r) * a.obj_w;
      for (int64_t s = 0; s < a.n_slices; ++s) {
        cplx<T>* o = a.slices + s * obj_plane + offset;
        cplx<T>* g = a.grad + s * obj_plane + offset;
        for (int64_t k = u.row_begin[r]; k < u.row_begin[r + 1]; ++k) {
          for (int64_t c = u.runs[k].first; c < u.runs[k].second; ++c) {
            o[c] = constrain_transmission<Kind>(preconditioned_update(o[c], g[c], gain[c]));
            g[c] = make_cplx(T(0), T(0));
          }
        }
      }
    }
  }
}

}  // namespace

template <class T>
T windowed_object_step_cpu(const ObjectStepArgs<T>& args) {
  ObjectStepArgs<T> a = args;
  if (a.threads <= 0) a.threads = omp_get_max_threads();
  if (a.ny < 1 || a.nx < 1) throw std::invalid_argument("probe_intensity: expected a non-empty (ny, nx) patch");
  if (a.constraint < kConstraintNone || a.constraint > kPhaseOnly)
    throw std::invalid_argument("constraint: expected 0 (none), 1 (amplitude <= 1) or 2 (phase only)");
  validate_windows(a.positions, a.batch, a.ny, a.nx, a.obj_h, a.obj_w);
  const WindowRows u = window_rows(a.positions, a.batch, a.ny, a.nx);
  const bool parallel = u.pixels() * a.n_slices > kParallelElements;
  T peak = T(0);
#pragma omp parallel num_threads(a.threads) if (parallel)
  {
    std::vector<T> row(size_t(a.obj_w));
#pragma omp for schedule(static) reduction(max : peak)
    for (int64_t r = 0; r < u.rows(); ++r) {
      row_illumination(u, r, a.probe_intensity, row.data());
      for (int64_t k = u.row_begin[r]; k < u.row_begin[r + 1]; ++k)
        for (int64_t c = u.runs[k].first; c < u.runs[k].second; ++c) peak = std::max(peak, row[c]);
    }
  }
  const T floor = a.floor_fraction * peak;
  switch (a.constraint) {
    case kAmplitudeAtMostOne:
      step_rows<kAmplitudeAtMostOne>(a, u, floor, parallel);
      break;
    case kPhaseOnly:
      step_rows<kPhaseOnly>(a, u, floor, parallel);
      break;
    default:
      step_rows<kConstraintNone>(a, u, floor, parallel);
  }
  return peak;
}

template float windowed_object_step_cpu<float>(const ObjectStepArgs<float>&);
template double windowed_object_step_cpu<double>(const ObjectStepArgs<double>&);

}  // namespace mspt
