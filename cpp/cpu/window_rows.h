// The union of a batch's probe windows as runs of columns per object row. Work that only a batch's windows
// need (the object's update after a batch) visits each covered pixel once, in time and memory that follow
// the batch, not the object: a reconstruction of a large field of view does not pay for the whole object
// after every batch.
#pragma once

#include <stdint.h>

#include <utility>
#include <vector>

#include "kernels/multislice_body.h"

namespace mspt {

struct WindowRows {
  int ny = 0, nx = 0;
  std::vector<ProbeWindow> windows;  // [B] in position order
  int64_t first_row = 0;             // the covered rows are [first_row, first_row + rows())
  std::vector<int64_t> row_begin;    // [rows + 1]: row r's runs are runs[row_begin[r] .. row_begin[r + 1])
  std::vector<std::pair<int64_t, int64_t>> runs;  // [c0, c1), ascending and disjoint within a row
  std::vector<int64_t> run_pixel;  // [runs + 1]: where run k starts in the union's pixels packed run by run

  int64_t rows() const { return int64_t(row_begin.size()) - 1; }
  // Whether window b covers object row `row`.
  bool covers(int64_t b, int64_t row) const { return row >= windows[b].r0 && row < windows[b].r0 + ny; }
  // Covered pixels (each counted once).
  int64_t pixels() const { return run_pixel.back(); }
};

// The windows (ny x nx) at positions_px [B, 2] and the runs of their union. Windows must lie inside the
// object (validate_windows).
WindowRows window_rows(const double* positions_px, int64_t batch, int ny, int nx);

}  // namespace mspt
