#include "cpu/multislice_tape.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace mspt {

template <class T>
MultisliceTape<T>::MultisliceTape(int64_t batch, int n_slices, int modes, int ny, int nx, bool with_spectra)
    : batch_(batch), n_slices_(n_slices), modes_(modes), ny_(ny), nx_(nx), with_spectra_(with_spectra) {
  if (batch < 0) throw std::invalid_argument("tape: batch must be >= 0, got " + std::to_string(batch));
  if (n_slices < 1 || modes < 1 || ny < 2 || nx < 2)
    throw std::invalid_argument("tape: expected >= 1 slice, >= 1 mode and a window of at least 2x2 pixels");
  plane_ = padded_plane(size_t(ny) * nx);
  const size_t per_position = size_t(modes) * plane_;
  waves_ = AlignedBuffer<cplx<T>>(size_t(batch) * n_slices * per_position);
  far_ = AlignedBuffer<cplx<T>>(size_t(batch) * per_position);
  if (with_spectra) spectra_ = AlignedBuffer<cplx<T>>(size_t(batch) * (n_slices - 1) * per_position);
  positions_.resize(size_t(2 * batch));
}

template <class T>
size_t MultisliceTape<T>::bytes_for(int64_t batch, int n_slices, int modes, int ny, int nx, bool with_spectra) {
  const size_t planes = size_t(n_slices) + 1 + (with_spectra ? size_t(n_slices) - 1 : 0);
  return size_t(batch) * modes * planes * padded_plane(size_t(ny) * nx) * sizeof(cplx<T>);
}

template <class T>
void MultisliceTape<T>::check_shape(const MultisliceArgs<T>& a) const {
  if (a.batch != batch_ || a.n_slices != n_slices_ || a.modes != modes_ || a.prop.ny != ny_ || a.prop.nx != nx_) {
    throw std::invalid_argument(
        "tape: made for " + std::to_string(batch_) + " positions, " + std::to_string(n_slices_) + " slices and probe (" +
        std::to_string(modes_) + ", " + std::to_string(ny_) + ", " + std::to_string(nx_) + "); this call has " +
        std::to_string(a.batch) + " positions, " + std::to_string(a.n_slices) + " slices and probe (" +
        std::to_string(a.modes) + ", " + std::to_string(a.prop.ny) + ", " + std::to_string(a.prop.nx) + ")");
  }
}

template <class T>
void MultisliceTape<T>::start_recording(const MultisliceArgs<T>& a) {
  check_shape(a);
  recorded_ = false;
  prop_ = a.prop;
  bandlimit_farfield_ = a.bandlimit_farfield;
  obj_h_ = a.obj_h;
  obj_w_ = a.obj_w;
  if (batch_ > 0) std::memcpy(positions_.data(), a.positions, positions_.size() * sizeof(double));
}

template <class T>
void MultisliceTape<T>::check_replay(const MultisliceArgs<T>& a) const {
  if (!recorded_) throw std::invalid_argument("tape: not recorded yet (record it with a forward pass first)");
  check_shape(a);
  if (a.obj_h != obj_h_ || a.obj_w != obj_w_) {
    throw std::invalid_argument("tape: recorded with " + std::to_string(obj_h_) + "x" + std::to_string(obj_w_) +
                                " slices, this call has " + std::to_string(a.obj_h) + "x" + std::to_string(a.obj_w));
  }
  if (batch_ > 0 && std::memcmp(positions_.data(), a.positions, positions_.size() * sizeof(double)) != 0)
    throw std::invalid_argument("tape: positions_px differ from those of the recording forward pass");
  if (std::memcmp(&prop_, &a.prop, sizeof(prop_)) != 0 || a.bandlimit_farfield != bandlimit_farfield_) {
    throw std::invalid_argument(
        "tape: the geometry (dz_A, energy, sampling, tilt or band limit) differs from the recording forward pass");
  }
  if (a.grad_tilt != nullptr && !with_spectra_)
    throw std::invalid_argument("tape: recorded without the spectra the tilt gradient needs (record it with them)");
  if (a.intensities != nullptr || a.exit_waves != nullptr)
    throw std::invalid_argument("tape: a replay computes gradients only; ask the recording pass for intensities");
}

template class MultisliceTape<float>;
template class MultisliceTape<double>;

}  // namespace mspt
