#include "cpu/projector_cpu.h"

#include <omp.h>

#include <algorithm>
#include <vector>

namespace mspt {
namespace {

int thread_count(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

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
#pragma omp parallel num_threads(thread_count(threads))
  {
    std::vector<double> acc(plane);
#pragma omp for schedule(dynamic, 1)
    for (int k = 0; k < g.nz; ++k) {
      std::fill(acc.begin(), acc.end(), 0.0);
      const int64_t base = int64_t(k) * plane;
      for (int64_t t = 0; t < n_proj; ++t) {
        const double* rot = rotations + 9 * t;
        const double* shift = shifts_A + 2 * t;
        for (int j = 0; j < g.py; ++j) {
          const float* src = projections + (t * g.py + j) * g.px;
          for (int i = 0; i < g.px; ++i) {
            const double value = static_cast<double>(src[i]) * g.step_A;
            if (value == 0.0) continue;
            const Ray r = projection_ray(g, rot, shift, j, i);
            int64_t s0, s1;
            ray_sample_range(g, r, &s0, &s1);
            // Only samples with floor(fk) in {k - 1, k} have a corner on plane k.
            clip_samples(r.ok, r.dk, k - 1.0, k + 1.0, &s0, &s1);
            for (int64_t s = s0; s < s1; ++s) {
              double fk, fj, fi;
              ray_point(r, s, &fk, &fj, &fi);
              int64_t idx[4];
              double w[4];
              if (!trilinear_plane_corners<double>(fk, fj, fi, k, g.ny, g.nx, idx, w)) continue;
              for (int c = 0; c < 4; ++c)
                if (idx[c] >= 0) acc[idx[c]] += w[c] * value;
            }
          }
        }
      }
      float* dst = volume + base;
      for (int64_t n = 0; n < plane; ++n) dst[n] = static_cast<float>(acc[n]);
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
