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

// The batch's illumination on row r of the union into `packed` (the union's pixels, run by run): the probe
// intensity of every window that covers the row, added in position order (deterministic). A window's row
// lies inside one run, the first of the row's runs that ends past the window's first column.
template <class T>
void row_illumination(const WindowRows& u, int64_t r, const T* probe_intensity, T* packed) {
  const int64_t first = u.row_begin[r], last = u.row_begin[r + 1];
  std::fill(packed + u.run_pixel[first], packed + u.run_pixel[last], T(0));
  const int64_t object_row = u.first_row + r;
  for (size_t b = 0; b < u.windows.size(); ++b) {
    if (!u.covers(int64_t(b), object_row)) continue;
    const int64_t c0 = u.windows[b].c0;
    int64_t k = first;
    while (u.runs[k].second <= c0) ++k;
    const T* src = probe_intensity + (object_row - u.windows[b].r0) * u.nx;
    T* dst = packed + u.run_pixel[k] + (c0 - u.runs[k].first);
    for (int ix = 0; ix < u.nx; ++ix) dst[ix] += src[ix];
  }
}

// The step and the constraint on every slice over the union, `gain` (packed like the illumination) the
// step's gain per pixel; the gradient is zeroed where it was read.
template <int Kind, class T>
void step_rows(const ObjectStepArgs<T>& a, const WindowRows& u, const T* gain, bool parallel) {
  const int64_t obj_plane = a.obj_h * a.obj_w;
#pragma omp parallel for num_threads(a.threads) schedule(static) if (parallel)
  for (int64_t r = 0; r < u.rows(); ++r) {
    const int64_t offset = (u.first_row + r) * a.obj_w;
    for (int64_t s = 0; s < a.n_slices; ++s) {
      cplx<T>* o = a.slices + s * obj_plane + offset;
      cplx<T>* g = a.grad + s * obj_plane + offset;
      for (int64_t k = u.row_begin[r]; k < u.row_begin[r + 1]; ++k) {
        const int64_t c0 = u.runs[k].first, width = u.runs[k].second - c0;
        const T* gk = gain + u.run_pixel[k];
        cplx<T>* ok = o + c0;
        cplx<T>* grk = g + c0;
        for (int64_t i = 0; i < width; ++i) {
          ok[i] = constrain_transmission<Kind>(preconditioned_update(ok[i], grk[i], gk[i]));
          grk[i] = make_cplx(T(0), T(0));
        }
      }
    }
  }
}

template <int Kind, class T>
void constrain_values(cplx<T>* values, int64_t count, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (count > kParallelElements)
  for (int64_t i = 0; i < count; ++i) values[i] = constrain_transmission<Kind>(values[i]);
}

void check_constraint(int constraint) {
  if (constraint < kConstraintNone || constraint > kPhaseOnly)
    throw std::invalid_argument("constraint: expected 0 (none), 1 (amplitude <= 1) or 2 (phase only)");
}

}  // namespace

template <class T>
void constrain_object_cpu(cplx<T>* values, int64_t count, int constraint, int threads) {
  check_constraint(constraint);
  if (threads <= 0) threads = omp_get_max_threads();
  if (constraint == kAmplitudeAtMostOne) constrain_values<kAmplitudeAtMostOne>(values, count, threads);
  if (constraint == kPhaseOnly) constrain_values<kPhaseOnly>(values, count, threads);
}

template <class T>
T windowed_object_step_cpu(const ObjectStepArgs<T>& args) {
  ObjectStepArgs<T> a = args;
  if (a.threads <= 0) a.threads = omp_get_max_threads();
  if (a.ny < 1 || a.nx < 1) throw std::invalid_argument("probe_intensity: expected a non-empty (ny, nx) patch");
  check_constraint(a.constraint);
  validate_windows(a.positions, a.batch, a.ny, a.nx, a.obj_h, a.obj_w);
  const WindowRows u = window_rows(a.positions, a.batch, a.ny, a.nx);
  const bool parallel = u.pixels() * a.n_slices > kParallelElements;
  // The illumination once, packed over the union; its largest value sets the floor; then the gains in place.
  std::vector<T> gain(size_t(u.pixels()));
  T peak = T(0);
#pragma omp parallel for num_threads(a.threads) schedule(static) reduction(max : peak) if (parallel)
  for (int64_t r = 0; r < u.rows(); ++r) {
    row_illumination(u, r, a.probe_intensity, gain.data());
    for (int64_t i = u.run_pixel[u.row_begin[r]]; i < u.run_pixel[u.row_begin[r + 1]]; ++i) peak = std::max(peak, gain[i]);
  }
  const T floor = a.floor_fraction * peak;
  for (T& value : gain) value = step_gain(value, floor, a.curvature, a.step);
  switch (a.constraint) {
    case kAmplitudeAtMostOne:
      step_rows<kAmplitudeAtMostOne>(a, u, gain.data(), parallel);
      break;
    case kPhaseOnly:
      step_rows<kPhaseOnly>(a, u, gain.data(), parallel);
      break;
    default:
      step_rows<kConstraintNone>(a, u, gain.data(), parallel);
  }
  return peak;
}

template float windowed_object_step_cpu<float>(const ObjectStepArgs<float>&);
template double windowed_object_step_cpu<double>(const ObjectStepArgs<double>&);
template void constrain_object_cpu<float>(cplx<float>*, int64_t, int, int);
template void constrain_object_cpu<double>(cplx<double>*, int64_t, int, int);

}  // namespace mspt
