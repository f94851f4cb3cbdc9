// Tomographic projector kernel bodies: the ray geometry of one projection pixel and the trilinear
// sample / splat of a (Z, Y, X) volume, written once for both backends (cpu/projector_cpu.cpp loops over
// them with OpenMP; a CUDA launcher calls the same functions). The back-projector uses the very same
// corner weights (trilinear_weights, in float) as the projector, so it is the exact transpose.
// The pose vector-Jacobian product differentiates the same interpolant (trilinear_gradient) on the same rays.
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

// Voxel coordinate (k, j, i) of sample t (a whole number, as a double: loops over samples vectorise) of a ray.
MSPT_HD void ray_point_at(const Ray& r, double t, double* fk, double* fj, double* fi) {
  *fk = r.ok + t * r.dk;
  *fj = r.oj + t * r.dj;
  *fi = r.oi + t * r.di;
}

// Voxel coordinate (k, j, i) of sample s of a ray.
MSPT_HD void ray_point(const Ray& r, int64_t s, double* fk, double* fj, double* fi) {
  ray_point_at(r, static_cast<double>(s), fk, fj, fi);
}

// min / max of finite numbers (fmin / fmax are library calls on some hosts, for their NaN rules).
MSPT_HD double min_of(double a, double b) { return a < b ? a : b; }
MSPT_HD double max_of(double a, double b) { return a > b ? a : b; }

// Reciprocals of a ray's increments for the clipping below, 0 for an increment under 1e-12 in magnitude (that
// coordinate is constant along the ray). Every ray of a pose has the same increments, so a loop over many rays
// computes them once.
struct RayInverse {
  double k, j, i;
};

MSPT_HD double clip_inverse(double dir) { return fabs(dir) < 1e-12 ? 0.0 : 1.0 / dir; }

MSPT_HD RayInverse ray_inverse(const Ray& r) {
  return RayInverse{clip_inverse(r.dk), clip_inverse(r.dj), clip_inverse(r.di)};
}

// Narrows [*s0, *s1) to a superset of the samples s with lo < origin + s * dir < hi (inv_dir = clip_inverse(dir)):
// the integers in [floor(a), ceil(b)] for the real bounds a < b, which rounding of a and b cannot shrink below
// the true set.
MSPT_HD void clip_samples(double origin, double inv_dir, double lo, double hi, int64_t* s0, int64_t* s1) {
  if (inv_dir == 0.0) {
    if (!(origin > lo - 1e-6 && origin < hi + 1e-6)) *s1 = *s0;
    return;
  }
  const double u = (lo - origin) * inv_dir, v = (hi - origin) * inv_dir;
  const double lo_s = max_of(static_cast<double>(*s0), floor(min_of(u, v)));
  const double hi_s = min_of(static_cast<double>(*s1), ceil(max_of(u, v)) + 1);  // exclusive
  if (hi_s <= lo_s) {
    *s1 = *s0;
    return;
  }
  *s0 = static_cast<int64_t>(lo_s);
  *s1 = static_cast<int64_t>(hi_s);
}

// Narrows [*s0, *s1) to the integers in [ceil(a), floor(b)]: up to rounding, a subset of the samples s with
// lo <= origin + s * dir <= hi (callers that need a strict subset check its ends).
MSPT_HD void clip_samples_inside(double origin, double inv_dir, double lo, double hi, int64_t* s0, int64_t* s1) {
  if (inv_dir == 0.0) {
    if (!(origin >= lo && origin <= hi)) *s1 = *s0;
    return;
  }
  const double u = (lo - origin) * inv_dir, v = (hi - origin) * inv_dir;
  const double lo_s = max_of(static_cast<double>(*s0), ceil(min_of(u, v)));
  const double hi_s = min_of(static_cast<double>(*s1), floor(max_of(u, v)) + 1);  // exclusive
  if (hi_s <= lo_s) {
    *s1 = *s0;
    return;
  }
  *s0 = static_cast<int64_t>(lo_s);
  *s1 = static_cast<int64_t>(hi_s);
}

// The samples of a ray that can touch the volume: a superset of those with every voxel coordinate in (-1, N).
MSPT_HD void ray_sample_range(const ProjectorGeometry& g, const Ray& r, int64_t* s0, int64_t* s1) {
  const RayInverse inv = ray_inverse(r);
  *s0 = 0;
  *s1 = g.n_samples;
  clip_samples(r.ok, inv.k, -1.0, g.nz, s0, s1);
  clip_samples(r.oj, inv.j, -1.0, g.ny, s0, s1);
  clip_samples(r.oi, inv.i, -1.0, g.nx, s0, s1);
}

// The cell of the trilinear footprint of voxel coordinate (fk, fj, fi): its lowest corner (k0, j0, i0) and
// the fractions (tk, tj, ti) in [0, 1) within it.
struct TrilinearCell {
  int k0, j0, i0;
  double tk, tj, ti;
};

MSPT_HD TrilinearCell cell_at(double fk, double fj, double fi) {
  const double k0f = floor(fk), j0f = floor(fj), i0f = floor(fi);
  return TrilinearCell{static_cast<int>(k0f), static_cast<int>(j0f), static_cast<int>(i0f), fk - k0f, fj - j0f,
                       fi - i0f};
}

// cell_at, or false when the lowest corner is more than `margin` cells outside [-1, N - 1] on some axis
// (margin 0: no corner of the cell is inside the volume).
MSPT_HD bool trilinear_cell(double fk, double fj, double fi, int nz, int ny, int nx, int margin,
                            TrilinearCell* cell) {
  const double k0f = floor(fk), j0f = floor(fj), i0f = floor(fi);
  if (k0f < -1 - margin || k0f > nz - 1 + margin || j0f < -1 - margin || j0f > ny - 1 + margin ||
      i0f < -1 - margin || i0f > nx - 1 + margin)
    return false;
  *cell = cell_at(fk, fj, fi);
  return true;
}

// Corner c = 4 dk + 2 dj + di (dk, dj, di in {0, 1}) of a cell: voxel (k0 + dk, j0 + dj, i0 + di) as its flat
// index, or -1 outside the volume (which is zero there).
MSPT_HD int64_t cell_corner_index(const TrilinearCell& cell, int c, int nz, int ny, int nx) {
  const int k = cell.k0 + (c >> 2), j = cell.j0 + ((c >> 1) & 1), i = cell.i0 + (c & 1);
  const bool inside = k >= 0 && k < nz && j >= 0 && j < ny && i >= 0 && i < nx;
  return inside ? (static_cast<int64_t>(k) * ny + j) * nx + i : -1;
}

// Whether all 8 corners of a cell lie on planes [k_lo, k_hi) and inside the (Y, X) extent, so that none
// needs its own bounds check.
MSPT_HD bool cell_in_box(const TrilinearCell& cell, int k_lo, int k_hi, int ny, int nx) {
  return cell.k0 >= k_lo && cell.k0 < k_hi - 1 && cell.j0 >= 0 && cell.j0 < ny - 1 && cell.i0 >= 0 &&
         cell.i0 < nx - 1;
}

// The trilinear weights of the 8 corners of a cell with fractions (tk, tj, ti), in cell_corner_index's order:
// w[c] = ((1 - tk or tk) x (1 - tj or tj)) x (1 - ti or ti) in float. Every caller (sample, splat, on either
// backend, in scalar or vector form) takes its weights from here, so the back-projector multiplies by the very
// numbers the projector does. Float is the weights' precision: the volume and projections are float32.
MSPT_HD void trilinear_weights(float tk, float tj, float ti, float* w) {
  const float uk = 1.0f - tk, uj = 1.0f - tj, ui = 1.0f - ti;
  const float kj[4] = {uk * uj, uk * tj, tk * uj, tk * tj};
  for (int c = 0; c < 8; ++c) w[c] = kj[c >> 1] * ((c & 1) ? ti : ui);
}

// trilinear_weights of a cell, as W.
template <class W>
MSPT_HD void cell_weights(const TrilinearCell& cell, W* w) {
  float wf[8];
  trilinear_weights(static_cast<float>(cell.tk), static_cast<float>(cell.tj), static_cast<float>(cell.ti), wf);
  for (int c = 0; c < 8; ++c) w[c] = static_cast<W>(wf[c]);
}

// The flat layout of a box of voxels: voxel (k, j, i) at origin + k plane + j row + i, in doubles, which hold
// every such offset exactly (whole numbers below 2^53).
struct BoxLayout {
  double plane, row, origin;
};

// A sample's cell in a box: the flat offset of its lowest corner and its fractions, the numbers cell_at gives,
// the fractions rounded to float (trilinear_weights' arguments).
struct SampleCell {
  double offset;
  float tk, tj, ti;
};

// For coordinates >= 0 only (a box whose voxels all have non-negative coordinates, such as a padded one),
// where truncation is floor and, unlike floor, vectorises without relaxed floating-point flags.
MSPT_HD SampleCell sample_cell(double fk, double fj, double fi, const BoxLayout& box) {
  const double k0 = static_cast<int>(fk), j0 = static_cast<int>(fj), i0 = static_cast<int>(fi);
  return SampleCell{k0 * box.plane + (j0 * box.row + (i0 + box.origin)), static_cast<float>(fk - k0),
                    static_cast<float>(fj - j0), static_cast<float>(fi - i0)};
}

// The 8 corners of the trilinear footprint of voxel coordinate (fk, fj, fi): corner c (cell_corner_index's
// order) with weight w[c]; a corner outside the volume gets index -1 and weight 0. Returns false when no
// corner is inside.
template <class W>
MSPT_HD bool trilinear_corners(double fk, double fj, double fi, int nz, int ny, int nx, int64_t* idx, W* w) {
  TrilinearCell cell;
  if (!trilinear_cell(fk, fj, fi, nz, ny, nx, 0, &cell)) return false;
  cell_weights<W>(cell, w);
  for (int c = 0; c < 8; ++c) {
    idx[c] = cell_corner_index(cell, c, nz, ny, nx);
    if (idx[c] < 0) w[c] = W(0);
  }
  return true;
}

// sum over c of w[c] x (corner c of a cell with every corner inside), the cell's lowest corner at `v` in an
// array of rows of nx and planes of `plane` elements. Summed in pairs: short dependency chains.
template <class T, class Acc>
MSPT_HD Acc interior_cell_sum(const T* v, int64_t plane, int nx, const Acc* w) {
  const Acc lower = (w[0] * static_cast<Acc>(v[0]) + w[1] * static_cast<Acc>(v[1])) +
                    (w[2] * static_cast<Acc>(v[nx]) + w[3] * static_cast<Acc>(v[nx + 1]));
  const Acc upper = (w[4] * static_cast<Acc>(v[plane]) + w[5] * static_cast<Acc>(v[plane + 1])) +
                    (w[6] * static_cast<Acc>(v[plane + nx]) + w[7] * static_cast<Acc>(v[plane + nx + 1]));
  return lower + upper;
}

// The trilinear sample of volume [Z, Y, X] at voxel coordinate (fk, fj, fi), zero outside: the sum over the
// corners of trilinear_corners.
template <class T, class Acc>
MSPT_HD Acc trilinear_sample(const T* volume, int nz, int ny, int nx, double fk, double fj, double fi) {
  TrilinearCell cell;
  if (!trilinear_cell(fk, fj, fi, nz, ny, nx, 0, &cell)) return Acc(0);
  Acc w[8];
  cell_weights<Acc>(cell, w);
  const int64_t plane = int64_t(ny) * nx;
  if (cell_in_box(cell, 0, nz, ny, nx))
    return interior_cell_sum<T, Acc>(volume + (cell.k0 * int64_t(ny) + cell.j0) * nx + cell.i0, plane, nx, w);
  Acc acc = 0;
  for (int c = 0; c < 8; ++c) {
    const int64_t n = cell_corner_index(cell, c, nz, ny, nx);
    if (n >= 0) acc += w[c] * static_cast<Acc>(volume[n]);
  }
  return acc;
}

// The samples [*a, *b) within [s0, s1) of a ray whose cells pass cell_in_box(k_lo, k_hi, ny, nx)
// (inv = ray_inverse(r)): clipped to a subset, then trimmed until both ends pass. Each voxel coordinate is
// monotone in s (also as rounded), so every sample between two that pass passes too and a loop over them
// needs no bounds checks. Samples left out go through the checked path, which gives them the same value.
MSPT_HD void samples_in_box(const Ray& r, const RayInverse& inv, int k_lo, int k_hi, int ny, int nx, int64_t s0,
                            int64_t s1, int64_t* a, int64_t* b) {
  // Cells pass for coordinates in [lo, hi - 1) on each axis; a margin keeps the ends off the faces.
  constexpr double margin = 1e-6;
  clip_samples_inside(r.ok, inv.k, k_lo + margin, k_hi - 1.0 - margin, &s0, &s1);
  clip_samples_inside(r.oj, inv.j, margin, ny - 1.0 - margin, &s0, &s1);
  clip_samples_inside(r.oi, inv.i, margin, nx - 1.0 - margin, &s0, &s1);
  double fk, fj, fi;
  for (; s0 < s1; ++s0) {
    ray_point(r, s0, &fk, &fj, &fi);
    if (cell_in_box(cell_at(fk, fj, fi), k_lo, k_hi, ny, nx)) break;
  }
  for (; s1 > s0; --s1) {
    ray_point(r, s1 - 1, &fk, &fj, &fi);
    if (cell_in_box(cell_at(fk, fj, fi), k_lo, k_hi, ny, nx)) break;
  }
  *a = s0;
  *b = s1;
}

// The gradient (d/dtk, d/dtj, d/dti) of the trilinear interpolant of volume [Z, Y, X] within one cell, at
// the cell's fractions: the interpolant is linear along each axis within a cell, so its derivative along an
// axis is the difference of the cell's two faces across it, each interpolated bilinearly over the other two
// axes (the weights of trilinear_corners with d/dt (1 - t, t) = (-1, 1) on the differentiated axis).
template <class T, class Acc>
MSPT_HD void trilinear_cell_gradient(const T* volume, const TrilinearCell& cell, int nz, int ny, int nx, Acc* gk,
                                     Acc* gj, Acc* gi) {
  const double wk[2] = {1.0 - cell.tk, cell.tk}, wj[2] = {1.0 - cell.tj, cell.tj}, wi[2] = {1.0 - cell.ti, cell.ti};
  const double slope[2] = {-1.0, 1.0};
  *gk = *gj = *gi = Acc(0);
  for (int c = 0; c < 8; ++c) {
    const int64_t n = cell_corner_index(cell, c, nz, ny, nx);
    if (n < 0) continue;
    const int bk = c >> 2, bj = (c >> 1) & 1, bi = c & 1;
    const Acc v = static_cast<Acc>(volume[n]);
    *gk += static_cast<Acc>(slope[bk] * wj[bj] * wi[bi]) * v;
    *gj += static_cast<Acc>(wk[bk] * slope[bj] * wi[bi]) * v;
    *gi += static_cast<Acc>(wk[bk] * wj[bj] * slope[bi]) * v;
  }
}

// The gradient (d/dfk, d/dfj, d/dfi) of trilinear_sample's interpolant at voxel coordinate (fk, fj, fi), per
// voxel. The interpolant is continuous with a kink across each voxel plane; on such a plane the derivative
// across it is the mean of the slopes of the two cells that meet there, the derivative a central difference
// sees, and it is zero where no slope reaches the volume. Samples that sit on a plane up to rounding (every
// sample of an axis-aligned pose with aligned pixels; whole rows wherever pixel and voxel grids coincide)
// count as on it: a coordinate within kPlaneSnap voxel of an integer is taken as that integer.
constexpr double kPlaneSnap = 1e-9;

MSPT_HD double snap_to_plane(double f) {
  const double r = floor(f + 0.5);
  return fabs(f - r) < kPlaneSnap ? r : f;
}

template <class T, class Acc>
MSPT_HD void trilinear_gradient(const T* volume, int nz, int ny, int nx, double fk, double fj, double fi, Acc* gk,
                                Acc* gj, Acc* gi) {
  *gk = *gj = *gi = Acc(0);
  fk = snap_to_plane(fk);
  fj = snap_to_plane(fj);
  fi = snap_to_plane(fi);
  TrilinearCell cell;
  if (!trilinear_cell(fk, fj, fi, nz, ny, nx, 1, &cell)) return;
  trilinear_cell_gradient<T, Acc>(volume, cell, nz, ny, nx, gk, gj, gi);
  Acc lk, lj, li;
  if (cell.tk == 0.0) {
    TrilinearCell below = cell;
    below.k0 -= 1;
    below.tk = 1.0;
    trilinear_cell_gradient<T, Acc>(volume, below, nz, ny, nx, &lk, &lj, &li);
    *gk = Acc(0.5) * (*gk + lk);
  }
  if (cell.tj == 0.0) {
    TrilinearCell below = cell;
    below.j0 -= 1;
    below.tj = 1.0;
    trilinear_cell_gradient<T, Acc>(volume, below, nz, ny, nx, &lk, &lj, &li);
    *gj = Acc(0.5) * (*gj + lj);
  }
  if (cell.ti == 0.0) {
    TrilinearCell below = cell;
    below.i0 -= 1;
    below.ti = 1.0;
    trilinear_cell_gradient<T, Acc>(volume, below, nz, ny, nx, &lk, &lj, &li);
    *gi = Acc(0.5) * (*gi + li);
  }
}

// The pose part of the vector-Jacobian product of project_pixel, for the cotangent g of pixel (j, i):
// P = step sum_s f(p_s) with p_s = R(w)^T q_s, q_s = (x - dx, y - dy, z_s) in A and R(w) = exp([w]x) R, so
// dp_s/dw = R^T [q_s]x at w = 0 and dp_s/d(dy, dx) = -R^T (e_y, e_x). With a_s = R grad f(p_s) (the gradient
// in the rotated frame, 1/A): dP/dw = step sum_s a_s x q_s and dP/d(dy, dx) = -step sum_s (a_y, a_x).
// Adds g dP/dw to d_rot[3] and g dP/d(dy, dx) to d_shift[2].
template <class T>
MSPT_HD void project_pixel_pose_vjp(const T* volume, const ProjectorGeometry& g, const double* rot,
                                    const double* shift, int j, int i, double cotangent, double* d_rot,
                                    double* d_shift) {
  const Ray r = projection_ray(g, rot, shift, j, i);
  int64_t s0, s1;
  ray_sample_range(g, r, &s0, &s1);
  const double qx = (i - g.px / 2) * g.pixel_A - shift[1];
  const double qy = (j - g.py / 2) * g.pixel_A - shift[0];
  const double inv_d = 1.0 / g.voxel_A;
  double wx = 0, wy = 0, wz = 0, ax_sum = 0, ay_sum = 0;
  for (int64_t s = s0; s < s1; ++s) {
    double fk, fj, fi, gk, gj, gi;
    ray_point(r, s, &fk, &fj, &fi);
    trilinear_gradient<T, double>(volume, g.nz, g.ny, g.nx, fk, fj, fi, &gk, &gj, &gi);
    if (gk == 0.0 && gj == 0.0 && gi == 0.0) continue;
    // gradient in the volume frame (x, y, z) in 1/A, then a = R grad
    const double ux = gi * inv_d, uy = gj * inv_d, uz = gk * inv_d;
    const double ax = rot[0] * ux + rot[1] * uy + rot[2] * uz;
    const double ay = rot[3] * ux + rot[4] * uy + rot[5] * uz;
    const double az = rot[6] * ux + rot[7] * uy + rot[8] * uz;
    const double qz = static_cast<double>(s - g.half) * g.step_A;
    wx += ay * qz - az * qy;
    wy += az * qx - ax * qz;
    wz += ax * qy - ay * qx;
    ax_sum += ax;
    ay_sum += ay;
  }
  const double scale = cotangent * g.step_A;
  d_rot[0] += scale * wx;
  d_rot[1] += scale * wy;
  d_rot[2] += scale * wz;
  d_shift[0] -= scale * ay_sum;
  d_shift[1] -= scale * ax_sum;
}

// The line integral along the ray of projection pixel (j, i): sum of the samples times the step, each sample's
// 8 weighted corners summed in float (the weights' precision), the samples in Acc.
template <class T, class Acc>
MSPT_HD Acc project_pixel(const T* volume, const ProjectorGeometry& g, const double* rot, const double* shift, int j,
                          int i) {
  const Ray r = projection_ray(g, rot, shift, j, i);
  int64_t s0, s1, a, b;
  ray_sample_range(g, r, &s0, &s1);
  samples_in_box(r, ray_inverse(r), 0, g.nz, g.ny, g.nx, s0, s1, &a, &b);
  const int64_t plane = int64_t(g.ny) * g.nx;
  Acc acc = 0;
  double fk, fj, fi;
  for (int64_t s = s0; s < a; ++s) {
    ray_point(r, s, &fk, &fj, &fi);
    acc += trilinear_sample<T, float>(volume, g.nz, g.ny, g.nx, fk, fj, fi);
  }
  for (int64_t s = a; s < b; ++s) {
    ray_point(r, s, &fk, &fj, &fi);
    const TrilinearCell cell = cell_at(fk, fj, fi);
    float w[8];
    cell_weights<float>(cell, w);
    acc += interior_cell_sum<T, float>(volume + cell.k0 * plane + int64_t(cell.j0) * g.nx + cell.i0, plane, g.nx, w);
  }
  for (int64_t s = b; s < s1; ++s) {
    ray_point(r, s, &fk, &fj, &fi);
    acc += trilinear_sample<T, float>(volume, g.nz, g.ny, g.nx, fk, fj, fi);
  }
  return acc * static_cast<Acc>(g.step_A);
}

}  // namespace mspt
