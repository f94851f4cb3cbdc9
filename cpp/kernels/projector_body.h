// Tomographic projector kernel bodies: the ray geometry of one projection pixel and the trilinear
// sample / splat of a (Z, Y, X) volume, written once for both backends (cpu/projector_cpu.cpp loops over
// them with OpenMP; a CUDA launcher calls the same functions). The back-projector uses the very same
// corner indices and weights as the projector, so it is the exact transpose.
//
// Conventions (see DESIGN.md):
//   * voxel (k, j, i) of a (Z, Y, X) volume with voxel size d sits at x = (i - X//2) d, y = (j - Y//2) d,
//     z = (k - Z//2) d from the rotation centre; projection pixel (j, i) at y = (j - Py//2) p,
//     x = (i - Px//2) p;
//   * a pose is an active rotation R (3x3, row-major, (x, y, z) order) and an in-plane shift (dy, dx) in A;
//     P(y, x) = integral over z of f(R^T (x - dx, y - dy, z)) dz, sampled at z_s = (s - h) step,
//     s = 0 .. 2h, with h step >= the radius of the sphere holding every voxel's trilinear footprint;
//   * the line integral is the sum of the samples times the step (volume value x A).
#pragma once

#include <math.h>
#include <stdint.h>

#include "mspt/complex.h"

namespace mspt {

// Everything that fixes the geometry of one projector call (shared by all its projections).
struct ProjectorGeometry {
  int nz, ny, nx;        // volume (Z, Y, X)
  int py, px;            // projection (Py, Px)
  double voxel_A;        // d
  double pixel_A;        // p
  double step_A;         // ray sample spacing
  int64_t n_samples;     // 2h + 1
  int64_t half;          // h: sample h sits at z = 0
};

// The geometry for a volume and projection shape: samples cover the sphere about the rotation centre that
// holds every point with a non-zero trilinear weight (voxel coordinates in (-1, N) on each axis).
inline ProjectorGeometry make_projector_geometry(int nz, int ny, int nx, int py, int px, double voxel_A,
                                                 double pixel_A, double step_A) {
  const double ez = nz / 2 + 1, ey = ny / 2 + 1, ex = nx / 2 + 1;
  const double radius_A = voxel_A * sqrt(ez * ez + ey * ey + ex * ex);
  const int64_t half = static_cast<int64_t>(ceil(radius_A / step_A));
  return ProjectorGeometry{nz, ny, nx, py, px, voxel_A, pixel_A, step_A, 2 * half + 1, half};
}

// One ray in voxel coordinates (fractional (k, j, i) order): sample s sits at origin + s * dir.
struct Ray {
  double ok, oj, oi;  // sample 0
  double dk, dj, di;  // increment per sample
};

// The ray of projection pixel (j, i) for pose (rot [3x3] row-major, shift (dy, dx) in A): the point
// q = (x - dx, y - dy, z_s) of the rotated frame maps to R^T q in the volume's frame.
MSPT_HD Ray projection_ray(const ProjectorGeometry& g, const double* rot, const double* shift, int j, int i) {
  const double qx = (i - g.px / 2) * g.pixel_A - shift[1];
  const double qy = (j - g.py / 2) * g.pixel_A - shift[0];
  const double qz = -static_cast<double>(g.half) * g.step_A;
  const double inv_d = 1.0 / g.voxel_A;
  // (R^T q)_a = sum_b R[b][a] q_b
  const double vx = (rot[0] * qx + rot[3] * qy + rot[6] * qz) * inv_d;
  const double vy = (rot[1] * qx + rot[4] * qy + rot[7] * qz) * inv_d;
  const double vz = (rot[2] * qx + rot[5] * qy + rot[8] * qz) * inv_d;
  const double s = g.step_A * inv_d;
  return Ray{vz + g.nz / 2, vy + g.ny / 2, vx + g.nx / 2, rot[8] * s, rot[7] * s, rot[6] * s};
}

// Voxel coordinate (k, j, i) of sample s of a ray.
MSPT_HD void ray_point(const Ray& r, int64_t s, double* fk, double* fj, double* fi) {
  const double t = static_cast<double>(s);
  *fk = r.ok + t * r.dk;
  *fj = r.oj + t * r.dj;
  *fi = r.oi + t * r.di;
}

// Narrows [*s0, *s1) to a superset of the samples s with lo < origin + s * dir < hi: the integers in
// [floor(a), ceil(b)] for the real bounds a < b, which rounding of a and b cannot shrink below the true set.
MSPT_HD void clip_samples(double origin, double dir, double lo, double hi, int64_t* s0, int64_t* s1) {
  if (fabs(dir) < 1e-12) {
    if (!(origin > lo - 1e-6 && origin < hi + 1e-6)) *s1 = *s0;
    return;
  }
  double a = (lo - origin) / dir, b = (hi - origin) / dir;
  if (a > b) {
    const double tmp = a;
    a = b;
    b = tmp;
  }
  const double lo_s = fmax(static_cast<double>(*s0), floor(a));
  const double hi_s = fmin(static_cast<double>(*s1), ceil(b) + 1);  // exclusive
  if (hi_s <= lo_s) {
    *s1 = *s0;
    return;
  }
  *s0 = static_cast<int64_t>(lo_s);
  *s1 = static_cast<int64_t>(hi_s);
}

// The samples of a ray that can touch the volume: a superset of those with every voxel coordinate in (-1, N).
MSPT_HD void ray_sample_range(const ProjectorGeometry& g, const Ray& r, int64_t* s0, int64_t* s1) {
  *s0 = 0;
  *s1 = g.n_samples;
  clip_samples(r.ok, r.dk, -1.0, g.nz, s0, s1);
  clip_samples(r.oj, r.dj, -1.0, g.ny, s0, s1);
  clip_samples(r.oi, r.di, -1.0, g.nx, s0, s1);
}

// The 8 corners of the trilinear footprint of voxel coordinate (fk, fj, fi): corner c = 4 dk + 2 dj + di
// (dk, dj, di in {0, 1}) is voxel (k0 + dk, j0 + dj, i0 + di) with weight w[c]; a corner outside the
// volume gets index -1 and weight 0 (the volume is zero outside). Returns false when no corner is inside.
template <class W>
MSPT_HD bool trilinear_corners(double fk, double fj, double fi, int nz, int ny, int nx, int64_t* idx, W* w) {
  const double k0f = floor(fk), j0f = floor(fj), i0f = floor(fi);
  if (k0f < -1 || k0f > nz - 1 || j0f < -1 || j0f > ny - 1 || i0f < -1 || i0f > nx - 1) return false;
  const int k0 = static_cast<int>(k0f), j0 = static_cast<int>(j0f), i0 = static_cast<int>(i0f);
  const double tk = fk - k0f, tj = fj - j0f, ti = fi - i0f;
  const double wk[2] = {1.0 - tk, tk}, wj[2] = {1.0 - tj, tj}, wi[2] = {1.0 - ti, ti};
  for (int c = 0; c < 8; ++c) {
    const int k = k0 + (c >> 2), j = j0 + ((c >> 1) & 1), i = i0 + (c & 1);
    const bool inside = k >= 0 && k < nz && j >= 0 && j < ny && i >= 0 && i < nx;
    idx[c] = inside ? (static_cast<int64_t>(k) * ny + j) * nx + i : -1;
    w[c] = inside ? static_cast<W>(wk[c >> 2] * wj[(c >> 1) & 1] * wi[c & 1]) : W(0);
  }
  return true;
}

// The corners of the same footprint on plane k only (the back-projector's gather): corner c = 2 dj + di is
// voxel (k, j0 + dj, i0 + di), given as its index within the plane (-1 outside) and the very weight
// trilinear_corners gives it. Returns false when the footprint misses plane k or the volume.
template <class W>
MSPT_HD bool trilinear_plane_corners(double fk, double fj, double fi, int k, int ny, int nx, int64_t* idx, W* w) {
  const double k0f = floor(fk), j0f = floor(fj), i0f = floor(fi);
  const int dk = k - static_cast<int>(k0f);
  if (k0f < k - 1 || k0f > k || j0f < -1 || j0f > ny - 1 || i0f < -1 || i0f > nx - 1) return false;
  const int j0 = static_cast<int>(j0f), i0 = static_cast<int>(i0f);
  const double tk = fk - k0f, tj = fj - j0f, ti = fi - i0f;
  const double wk[2] = {1.0 - tk, tk}, wj[2] = {1.0 - tj, tj}, wi[2] = {1.0 - ti, ti};
  for (int c = 0; c < 4; ++c) {
    const int j = j0 + (c >> 1), i = i0 + (c & 1);
    const bool inside = j >= 0 && j < ny && i >= 0 && i < nx;
    idx[c] = inside ? static_cast<int64_t>(j) * nx + i : -1;
    w[c] = inside ? static_cast<W>(wk[dk] * wj[c >> 1] * wi[c & 1]) : W(0);
  }
  return true;
}

// The trilinear sample of volume [Z, Y, X] at voxel coordinate (fk, fj, fi), zero outside; the sum over
// the corners of trilinear_corners, in corner order.
template <class T, class Acc>
MSPT_HD Acc trilinear_sample(const T* volume, int nz, int ny, int nx, double fk, double fj, double fi) {
  int64_t idx[8];
  Acc w[8];
  if (!trilinear_corners<Acc>(fk, fj, fi, nz, ny, nx, idx, w)) return Acc(0);
  Acc acc = 0;
  for (int c = 0; c < 8; ++c)
    if (idx[c] >= 0) acc += w[c] * static_cast<Acc>(volume[idx[c]]);
  return acc;
}

// The line integral along the ray of projection pixel (j, i): sum of the samples times the step.
template <class T, class Acc>
MSPT_HD Acc project_pixel(const T* volume, const ProjectorGeometry& g, const double* rot, const double* shift, int j,
                          int i) {
  const Ray r = projection_ray(g, rot, shift, j, i);
  int64_t s0, s1;
  ray_sample_range(g, r, &s0, &s1);
  Acc acc = 0;
  for (int64_t s = s0; s < s1; ++s) {
    double fk, fj, fi;
    ray_point(r, s, &fk, &fj, &fi);
    acc += trilinear_sample<T, Acc>(volume, g.nz, g.ny, g.nx, fk, fj, fi);
  }
  return acc * static_cast<Acc>(g.step_A);
}

}  // namespace mspt
