#include "cpu/projector_cpu.h"

#include <omp.h>

#include <algorithm>
#include <vector>

namespace mspt {
namespace {

int thread_count(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

// Planes per slab of the back-projector's gather: fixed, so the partition (and with it every voxel's order of
// additions) does not depend on the thread count. Thicker slabs set each ray up fewer times and evaluate fewer
// samples twice (those on a slab's lower face); thinner ones keep the slab's accumulator in cache.
constexpr int kBackprojectSlabPlanes = 16;
// Interleaved passes over a ray's unchecked samples (see splat_ray_on_slab).
constexpr int kSplatPasses = 4;

// Adds value x weight of samples [s0, s1) of ray r to the corners on slab [k_lo, k_hi) (slab [k_hi - k_lo, Y, X]).
// Cells inside the slab take the unchecked path in kSplatPasses interleaved passes (samples a, a + 4, ...,
// then a + 1, a + 5, ...): consecutive samples of a ray share corners, and updating those back to back would
// chain each sample's additions to the previous one's stores (about 15 % slower, measured at 128^3). The
// order is fixed, so the result still does not depend on the thread count.
void splat_ray_on_slab(const ProjectorGeometry& g, const Ray& r, const RayInverse& inv, int64_t s0, int64_t s1,
                       int k_lo, int k_hi, double value, double* slab) {
  const int64_t plane = int64_t(g.ny) * g.nx;
  int64_t a, b;
  samples_in_box(r, inv, k_lo, k_hi, g.ny, g.nx, s0, s1, &a, &b);
  double fk, fj, fi;
  for (int64_t s = s0; s < a; ++s) {
    ray_point(r, s, &fk, &fj, &fi);
    splat_sample_on_slab<double>(fk, fj, fi, k_lo, k_hi, g.ny, g.nx, value, slab);
  }
  for (int64_t first = a; first < a + kSplatPasses; ++first)
    for (int64_t s = first; s < b; s += kSplatPasses) {
      ray_point(r, s, &fk, &fj, &fi);
      const TrilinearCell cell = cell_at(fk, fj, fi);
      double w[8];
      cell_weights<double>(cell, w);
      interior_cell_splat<double>(slab + (cell.k0 - k_lo) * plane + int64_t(cell.j0) * g.nx + cell.i0, plane, g.nx,
                                  w, value);
    }
  for (int64_t s = b; s < s1; ++s) {
    ray_point(r, s, &fk, &fj, &fi);
    splat_sample_on_slab<double>(fk, fj, fi, k_lo, k_hi, g.ny, g.nx, value, slab);
  }
}

}  // namespace

void project_cpu(const float* volume, const ProjectorGeometry& g, const double* rotations, const double* shifts_A,
                 int64_t n_proj, int threads, float* projections) {
  const int64_t rows = n_proj * g.py;
#pragma omp parallel for schedule(dynamic, 1) num_threads(thread_count(threads))
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t t = row / g.py;
    const int j = static_cast<int>(row % g.py);
    const double* rot = rotations + 9 * t;
    const double* shift = shifts_A + 2 * t;
    float* dst = projections + row * g.px;
    for (int i = 0; i < g.px; ++i) dst[i] = static_cast<float>(project_pixel<float, double>(volume, g, rot, shift, j, i));
  }
}

void backproject_cpu(const float* projections, const ProjectorGeometry& g, const double* rotations,
                     const double* shifts_A, int64_t n_proj, int threads, float* volume) {
  const int64_t plane = int64_t(g.ny) * g.nx;
  const int n_slabs = (g.nz + kBackprojectSlabPlanes - 1) / kBackprojectSlabPlanes;
#pragma omp parallel num_threads(thread_count(threads))
  {
    std::vector<double> acc(kBackprojectSlabPlanes * plane);
#pragma omp for schedule(dynamic, 1)
    for (int slab = 0; slab < n_slabs; ++slab) {
      const int k_lo = slab * kBackprojectSlabPlanes, k_hi = std::min(g.nz, k_lo + kBackprojectSlabPlanes);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t t = 0; t < n_proj; ++t) {
        const double* rot = rotations + 9 * t;
        const double* shift = shifts_A + 2 * t;
        const RayInverse inv = ray_inverse(projection_ray(g, rot, shift, 0, 0));  // the same for every pixel
        for (int j = 0; j < g.py; ++j) {
          const float* src = projections + (t * g.py + j) * g.px;
          for (int i = 0; i < g.px; ++i) {
            const double value = static_cast<double>(src[i]) * g.step_A;
            if (value == 0.0) continue;
            const Ray r = projection_ray(g, rot, shift, j, i);
            // Only samples with floor(fk) in [k_lo - 1, k_hi - 1] have a corner on the slab; a superset of
            // the projector's samples is harmless (the others have no corner in the volume).
            int64_t s0 = 0, s1 = g.n_samples;
            clip_samples(r.ok, inv.k, k_lo - 1.0, k_hi, &s0, &s1);
            clip_samples(r.oj, inv.j, -1.0, g.ny, &s0, &s1);
            clip_samples(r.oi, inv.i, -1.0, g.nx, &s0, &s1);
            if (s0 >= s1) continue;
            splat_ray_on_slab(g, r, inv, s0, s1, k_lo, k_hi, value, acc.data());
          }
        }
      }
      float* dst = volume + int64_t(k_lo) * plane;
      const int64_t count = int64_t(k_hi - k_lo) * plane;
      for (int64_t n = 0; n < count; ++n) dst[n] = static_cast<float>(acc[n]);
    }
  }
}

void project_pose_vjp_cpu(const float* volume, const ProjectorGeometry& g, const double* rotations,
                          const double* shifts_A, const float* grad_projections, int64_t n_proj, int threads,
                          double* d_rotation, double* d_shifts) {
  const int64_t rows = n_proj * g.py;
  std::vector<double> partial(rows * 5, 0.0);  // per row: dL/dw (3), dL/d(dy, dx) (2)
#pragma omp parallel for schedule(dynamic, 1) num_threads(thread_count(threads))
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t t = row / g.py;
    const int j = static_cast<int>(row % g.py);
    const double* rot = rotations + 9 * t;
    const double* shift = shifts_A + 2 * t;
    const float* src = grad_projections + row * g.px;
    double* acc = partial.data() + 5 * row;
    for (int i = 0; i < g.px; ++i) {
      if (src[i] == 0.0f) continue;
      project_pixel_pose_vjp<float>(volume, g, rot, shift, j, i, static_cast<double>(src[i]), acc, acc + 3);
    }
  }
  for (int64_t t = 0; t < n_proj; ++t) {
    double sum[5] = {0, 0, 0, 0, 0};
    for (int j = 0; j < g.py; ++j)
      for (int c = 0; c < 5; ++c) sum[c] += partial[5 * (t * g.py + j) + c];
    for (int c = 0; c < 3; ++c) d_rotation[3 * t + c] = sum[c];
    for (int c = 0; c < 2; ++c) d_shifts[2 * t + c] = sum[3 + c];
  }
}

}  // namespace mspt
