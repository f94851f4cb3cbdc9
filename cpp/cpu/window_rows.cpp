#include "cpu/window_rows.h"

#include <algorithm>
#include <numeric>

namespace mspt {

WindowRows window_rows(const double* positions_px, int64_t batch, int ny, int nx) {
  WindowRows u;
  u.ny = ny;
  u.nx = nx;
  u.windows.resize(size_t(batch));
  for (int64_t b = 0; b < batch; ++b) u.windows[b] = probe_window(positions_px[2 * b], positions_px[2 * b + 1], ny, nx);
  if (batch == 0) {
    u.row_begin.assign(1, 0);
    u.run_pixel.assign(1, 0);
    return u;
  }
  // Windows by first column: each row's runs then come out ascending and merge as they are met.
  std::vector<int64_t> by_column(static_cast<size_t>(batch));
  std::iota(by_column.begin(), by_column.end(), int64_t(0));
  std::sort(by_column.begin(), by_column.end(),
            [&](int64_t a, int64_t b) { return u.windows[a].c0 < u.windows[b].c0; });
  int64_t lo = u.windows[0].r0, hi = u.windows[0].r0;
  for (const ProbeWindow& w : u.windows) {
    lo = std::min(lo, w.r0);
    hi = std::max(hi, w.r0);
  }
  u.first_row = lo;
  const int64_t rows = hi + ny - lo;
  u.row_begin.resize(size_t(rows) + 1);
  for (int64_t r = 0; r < rows; ++r) {
    u.row_begin[r] = int64_t(u.runs.size());
    const int64_t row = lo + r;
    bool open = false;
    for (int64_t b : by_column) {
      if (!u.covers(b, row)) continue;
      const int64_t c0 = u.windows[b].c0, c1 = c0 + nx;
      if (open && c0 <= u.runs.back().second) {
        u.runs.back().second = std::max(u.runs.back().second, c1);
      } else {
        u.runs.emplace_back(c0, c1);
        open = true;
      }
    }
  }
  u.row_begin[rows] = int64_t(u.runs.size());
  u.run_pixel.resize(u.runs.size() + 1);
  u.run_pixel[0] = 0;
  for (size_t k = 0; k < u.runs.size(); ++k)
    u.run_pixel[k + 1] = u.run_pixel[k] + u.runs[k].second - u.runs[k].first;
  return u;
}

}  // namespace mspt
