#include "cpu/projector_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/projector_cells.h"

namespace mspt {
namespace {

int thread_count(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

// Zero voxels on every side of the projector's copy of the volume and of the back-projector's slab
// accumulators, so that every sample whose cell touches the volume reads or adds to its 8 corners without
// bounds checks. One voxel holds the corners of every such cell; the second absorbs a cell that the vectorised
// arithmetic puts one voxel further out than the scalar test at a ray's ends (a coordinate within rounding of a
// voxel plane, whose weight on the extra voxel is zero to rounding).
constexpr int kPad = 2;

// Rows of the volume per slab of the back-projector's gather: fixed, so the partition (and with it every
// voxel's order of additions) does not depend on the thread count. A ray of a tilt about y stays on one row of
// cells, so it reaches one slab, or two where its cells straddle two slabs' rows.
constexpr int kSlabRows = 16;

// Samples per block of the two-pass ray loops: the first pass finds a block's cells (independent arithmetic,
// which the compiler vectorises), the second reads or adds to their corners.
constexpr int kBlock = 32;
// Lanes per vectorised group of the first pass: whole groups keep it free of a scalar remainder loop.
constexpr int kLanes = 8;
// Interleaved passes of the back-projector's additions (see splat_ray).
constexpr int kSplatPasses = 4;

// The voxels [0, nz) x [j_lo, j_hi) x [0, nx) of a volume, stored with kPad more on every side: voxel
// (k, j, i) at flat index (k + kPad) plane + (j - j_lo + kPad) row + i + kPad.
struct PaddedSlab {
  int nz, j_lo, j_hi, nx;
  int64_t plane, row, size;
};

PaddedSlab padded_slab(int nz, int j_lo, int j_hi, int nx) {
  const int64_t row = nx + 2 * kPad, plane = (j_hi - j_lo + 2 * kPad) * row;
  return PaddedSlab{nz, j_lo, j_hi, nx, plane, row, (nz + 2 * kPad) * plane};
}

// Flat index of volume voxel (k, j, 0) in the slab.
int64_t slab_index(const PaddedSlab& b, int k, int j) {
  return (k + kPad) * b.plane + (j - b.j_lo + kPad) * b.row + kPad;
}

// The slab's layout for sample_cell on rays in the padded frame (padded_ray), where a sample's lowest corner
// (K, J, I) is volume voxel (K - kPad, J - kPad, I - kPad).
BoxLayout slab_layout(const PaddedSlab& b) {
  return BoxLayout{double(b.plane), double(b.row), -double(b.j_lo) * b.row};
}

// The ray of projection pixel (j, i) in the padded frame (voxel coordinates + kPad), where every sample whose cell
// touches the volume has positive coordinates. The projector and the back-projector sample the same numbers.
Ray padded_ray(const ProjectorGeometry& g, const double* rot, const double* shift, int j, int i) {
  Ray r = projection_ray(g, rot, shift, j, i);
  r.ok += kPad;
  r.oj += kPad;
  r.oi += kPad;
  return r;
}

// Whether the cell of sample s of padded ray r touches the slab's voxels: its lowest corner at most one voxel
// below them on every axis.
bool cell_touches(const Ray& r, int64_t s, const PaddedSlab& b) {
  double fk, fj, fi;
  ray_point(r, s, &fk, &fj, &fi);
  const double k0 = floor(fk) - kPad, j0 = floor(fj) - kPad, i0 = floor(fi) - kPad;
  return k0 >= -1 && k0 <= b.nz - 1 && j0 >= b.j_lo - 1 && j0 <= b.j_hi - 1 && i0 >= -1 && i0 <= b.nx - 1;
}

// The samples [*s0, *s1) of padded ray r (inv = ray_inverse(r)) whose cells touch the slab's voxels: clipped to
// a superset, then trimmed at both ends. Each coordinate is monotone in s, so every sample between two that
// touch touches too.
void samples_touching(const Ray& r, const RayInverse& inv, const PaddedSlab& b, int64_t n_samples, int64_t* s0,
                      int64_t* s1) {
  *s0 = 0;
  *s1 = n_samples;
  clip_samples(r.ok, inv.k, kPad - 1.0, b.nz + kPad, s0, s1);
  clip_samples(r.oj, inv.j, b.j_lo + kPad - 1.0, b.j_hi + kPad, s0, s1);
  clip_samples(r.oi, inv.i, kPad - 1.0, b.nx + kPad, s0, s1);
  while (*s0 < *s1 && !cell_touches(r, *s0, b)) ++*s0;
  while (*s1 > *s0 && !cell_touches(r, *s1 - 1, b)) --*s1;
}

// The cells of up to kBlock consecutive samples of a ray, structure of arrays: the flat offset of sample m's
// lowest corner and its fractions (tk, tj, ti) = frac[0..2][m].
struct CellBlock {
  alignas(64) double offset[kBlock];
  alignas(64) float frac[3][kBlock];
};

// Fills blk for samples [first, first + count) of padded ray r (count <= kBlock) whose cells touch a slab of
// layout `layout`; the count is rounded up to whole groups of kLanes (numbers computed and never used).
void fill_cell_block(const Ray& ray, int64_t first, int count, const BoxLayout& layout, CellBlock* blk) {
  const Ray r = ray;  // local copies: the stores below cannot alias them
  const BoxLayout box = layout;
  const double t0 = static_cast<double>(first);
  for (int group = 0; group < count; group += kLanes) {
#pragma omp simd
    for (int lane = 0; lane < kLanes; ++lane) {
      const int m = group + lane;
      double fk, fj, fi;
      ray_point_at(r, t0 + m, &fk, &fj, &fi);
      const SampleCell cell = sample_cell(fk, fj, fi, box);
      blk->offset[m] = cell.offset;
      blk->frac[0][m] = cell.tk;
      blk->frac[1][m] = cell.tj;
      blk->frac[2][m] = cell.ti;
    }
  }
}

// The sum over samples [a, b) of padded ray r of the trilinear samples of `padded` (the whole volume's slab).
double ray_sum(const float* padded, const PaddedSlab& slab, const Ray& r, int64_t a, int64_t b) {
  const BoxLayout layout = slab_layout(slab);
  CellBlock blk;
  RaySum sum;
  for (int64_t first = a; first < b; first += kBlock) {
    const int count = static_cast<int>(std::min<int64_t>(kBlock, b - first));
    fill_cell_block(r, first, count, layout, &blk);
    for (int m = 0; m < count; ++m)
      sum.add(padded + static_cast<int64_t>(blk.offset[m]), slab.plane, slab.row, blk.frac[0][m], blk.frac[1][m],
              blk.frac[2][m]);
  }
  return sum.total();
}

// Adds value x weight of samples [a, b) of padded ray r to their corners in the slab's accumulator acc. The
// additions go in kSplatPasses interleaved passes (samples a, a + 4, ..., then a + 1, a + 5, ...): consecutive
// samples of a ray share corners, and updating those back to back would chain each sample's additions to the
// previous one's stores (about 15 % slower, measured). The order is fixed, so the result still does not depend
// on the thread count.
void splat_ray(const PaddedSlab& slab, const Ray& r, int64_t a, int64_t b, float value, double* acc) {
  const BoxLayout layout = slab_layout(slab);
  CellBlock blk;
  for (int64_t first = a; first < b; first += kBlock) {
    const int count = static_cast<int>(std::min<int64_t>(kBlock, b - first));
    fill_cell_block(r, first, count, layout, &blk);
    for (int pass = 0; pass < kSplatPasses; ++pass)
      for (int m = pass; m < count; m += kSplatPasses)
        splat_cell(acc + static_cast<int64_t>(blk.offset[m]), slab.plane, slab.row, blk.frac[0][m], blk.frac[1][m],
                   blk.frac[2][m], value);
  }
}

// The range [lo, hi] of the row coordinate (voxels) over the samples of the rays of projection row j of a pose:
// affine in (pixel, sample), so its ends sit at the corners of the pixel x sample range. A pose about y keeps a
// whole projection row on one row coordinate (lo = hi).
struct RowBand {
  double lo, hi;
};

RowBand row_band(const ProjectorGeometry& g, const double* rot, const double* shift, int j) {
  const Ray r = projection_ray(g, rot, shift, j, 0);
  const double across_pixels = rot[1] * g.pixel_A / g.voxel_A * (g.px - 1);
  const double across_samples = r.dj * static_cast<double>(g.n_samples - 1);
  return RowBand{r.oj + std::min(0.0, across_pixels) + std::min(0.0, across_samples),
                 r.oj + std::max(0.0, across_pixels) + std::max(0.0, across_samples)};
}

// Whether a cell of the band can touch volume rows [j_lo, j_hi): some row coordinate in (j_lo - 1, j_hi).
bool band_reaches(const RowBand& band, int j_lo, int j_hi) {
  constexpr double tolerance = 1e-6;  // voxels: rounding of the band's ends
  return band.hi > j_lo - 1 - tolerance && band.lo < j_hi + tolerance;
}

// Whether the rays of every projection row of every pose stay within a slab's thickness of rows. Then the
// back-projector visits projection rows outside and poses inside, so that the rays of one row of all poses,
// which touch the same few voxel rows, follow one another in cache; otherwise (rays that cross many rows) it
// visits poses outside, where neighbouring rows of one pose touch neighbouring voxels.
bool rows_stay_in_slabs(const ProjectorGeometry& g, const double* rotations, const double* shifts_A,
                        int64_t n_proj) {
  for (int64_t t = 0; t < n_proj; ++t) {
    const RowBand band = row_band(g, rotations + 9 * t, shifts_A + 2 * t, 0);
    if (band.hi - band.lo > kSlabRows) return false;
  }
  return true;
}

}  // namespace

void project_pixelwise_cpu(const float* volume, const ProjectorGeometry& g, const double* rotations,
                           const double* shifts_A, int64_t n_proj, int threads, float* projections) {
  const int64_t rows = n_proj * g.py;
#pragma omp parallel for schedule(dynamic, 1) num_threads(thread_count(threads))
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t t = row / g.py;
    const int j = static_cast<int>(row % g.py);
    float* dst = projections + row * g.px;
    for (int i = 0; i < g.px; ++i)
      dst[i] = static_cast<float>(project_pixel<float, double>(volume, g, rotations + 9 * t, shifts_A + 2 * t, j, i));
  }
}

void project_cpu(const float* volume, const ProjectorGeometry& g, const double* rotations, const double* shifts_A,
                 int64_t n_proj, int threads, float* projections) {
  const int n_threads = thread_count(threads);
  const PaddedSlab whole = padded_slab(g.nz, 0, g.ny, g.nx);
  std::vector<float> padded(whole.size, 0.0f);
#pragma omp parallel for schedule(static) num_threads(n_threads)
  for (int k = 0; k < g.nz; ++k)
    for (int j = 0; j < g.ny; ++j)
      std::copy_n(volume + (int64_t(k) * g.ny + j) * g.nx, g.nx, padded.data() + slab_index(whole, k, j));

  const int64_t rows = n_proj * g.py;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t t = row / g.py;
    const int j = static_cast<int>(row % g.py);
    const double* rot = rotations + 9 * t;
    const double* shift = shifts_A + 2 * t;
    const RayInverse inv = ray_inverse(projection_ray(g, rot, shift, j, 0));  // the same for every pixel
    float* dst = projections + row * g.px;
    for (int i = 0; i < g.px; ++i) {
      const Ray r = padded_ray(g, rot, shift, j, i);
      int64_t a, b;
      samples_touching(r, inv, whole, g.n_samples, &a, &b);
      dst[i] = static_cast<float>(ray_sum(padded.data(), whole, r, a, b) * g.step_A);
    }
  }
}

void backproject_cpu(const float* projections, const ProjectorGeometry& g, const double* rotations,
                     const double* shifts_A, int64_t n_proj, int threads, float* volume) {
  const int n_slabs = (g.ny + kSlabRows - 1) / kSlabRows;
  const bool rows_outside = rows_stay_in_slabs(g, rotations, shifts_A, n_proj);
#pragma omp parallel num_threads(thread_count(threads))
  {
    std::vector<double> acc;
#pragma omp for schedule(dynamic, 1)
    for (int s = 0; s < n_slabs; ++s) {
      const int j_lo = s * kSlabRows, j_hi = std::min(g.ny, j_lo + kSlabRows);
      const PaddedSlab slab = padded_slab(g.nz, j_lo, j_hi, g.nx);
      acc.assign(slab.size, 0.0);
      for (int64_t visit = 0; visit < n_proj * g.py; ++visit) {
        const int64_t t = rows_outside ? visit % n_proj : visit / g.py;
        const int j = static_cast<int>(rows_outside ? visit / n_proj : visit % g.py);
        const double* rot = rotations + 9 * t;
        const double* shift = shifts_A + 2 * t;
        if (!band_reaches(row_band(g, rot, shift, j), j_lo, j_hi)) continue;
        const RayInverse inv = ray_inverse(projection_ray(g, rot, shift, j, 0));  // the same for every pixel
        const float* src = projections + (t * g.py + j) * g.px;
        for (int i = 0; i < g.px; ++i) {
          const float value = static_cast<float>(src[i] * g.step_A);
          if (value == 0.0f) continue;
          const Ray r = padded_ray(g, rot, shift, j, i);
          int64_t a, b;
          samples_touching(r, inv, slab, g.n_samples, &a, &b);
          splat_ray(slab, r, a, b, value, acc.data());
        }
      }
      for (int k = 0; k < g.nz; ++k)
        for (int j = j_lo; j < j_hi; ++j) {
          const double* src = acc.data() + slab_index(slab, k, j);
          float* dst = volume + (int64_t(k) * g.ny + j) * g.nx;
          for (int i = 0; i < g.nx; ++i) dst[i] = static_cast<float>(src[i]);
        }
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
