#include "fft_cpu.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <tuple>
#include <type_traits>

namespace mspt {
namespace {

// FFTW's planner and its plan cache are global state: every plan creation/destruction takes this lock.
std::mutex& planner_mutex() {
  static std::mutex m;
  return m;
}

unsigned planner_flag() {
  const std::string name = fftw_planner_name();
  if (name == "estimate") return FFTW_ESTIMATE;
  if (name == "patient") return FFTW_PATIENT;
  return FFTW_MEASURE;
}

// Precision dispatch onto the fftw / fftwf APIs.
template <class T>
struct Fftw;

template <>
struct Fftw<float> {
  static void* malloc(size_t bytes) { return fftwf_malloc(bytes); }
  static void free(void* p) { fftwf_free(p); }
  static void* plan(int ny, int nx, cplx<float>* in, cplx<float>* out, int sign, unsigned flags) {
    return fftwf_plan_dft_2d(ny, nx, reinterpret_cast<fftwf_complex*>(in), reinterpret_cast<fftwf_complex*>(out), sign,
                             flags);
  }
  // howmany 1D transforms of n points, element stride `stride`, transform distance `dist`.
  static void* plan_many(int n, int howmany, cplx<float>* in, cplx<float>* out, int stride, int dist, int sign,
                         unsigned flags) {
    return fftwf_plan_many_dft(1, &n, howmany, reinterpret_cast<fftwf_complex*>(in), nullptr, stride, dist,
                               reinterpret_cast<fftwf_complex*>(out), nullptr, stride, dist, sign, flags);
  }
  static void destroy(void* p) { fftwf_destroy_plan(static_cast<fftwf_plan>(p)); }
  static void execute(void* p, const cplx<float>* in, cplx<float>* out) {
    fftwf_execute_dft(static_cast<fftwf_plan>(p), reinterpret_cast<fftwf_complex*>(const_cast<cplx<float>*>(in)),
                      reinterpret_cast<fftwf_complex*>(out));
  }
};

template <>
struct Fftw<double> {
  static void* malloc(size_t bytes) { return fftw_malloc(bytes); }
  static void free(void* p) { fftw_free(p); }
  static void* plan(int ny, int nx, cplx<double>* in, cplx<double>* out, int sign, unsigned flags) {
    return fftw_plan_dft_2d(ny, nx, reinterpret_cast<fftw_complex*>(in), reinterpret_cast<fftw_complex*>(out), sign,
                            flags);
  }
  static void* plan_many(int n, int howmany, cplx<double>* in, cplx<double>* out, int stride, int dist, int sign,
                         unsigned flags) {
    return fftw_plan_many_dft(1, &n, howmany, reinterpret_cast<fftw_complex*>(in), nullptr, stride, dist,
                              reinterpret_cast<fftw_complex*>(out), nullptr, stride, dist, sign, flags);
  }
  static void destroy(void* p) { fftw_destroy_plan(static_cast<fftw_plan>(p)); }
  static void execute(void* p, const cplx<double>* in, cplx<double>* out) {
    fftw_execute_dft(static_cast<fftw_plan>(p), reinterpret_cast<fftw_complex*>(const_cast<cplx<double>*>(in)),
                     reinterpret_cast<fftw_complex*>(out));
  }
};

// Scalars allocate through the matching precision's allocator.
template <class T>
struct AllocatorOf {
  using type = Fftw<T>;
};
template <class T>
struct AllocatorOf<cplx<T>> {
  using type = Fftw<T>;
};

}  // namespace

std::string fftw_planner_name() {
  const char* env = std::getenv("MSPT_FFTW_PLANNER");
  if (env == nullptr || *env == '\0') return "measure";
  const std::string name(env);
  if (name != "estimate" && name != "measure" && name != "patient") {
    throw std::invalid_argument("MSPT_FFTW_PLANNER must be 'estimate', 'measure' or 'patient', got '" + name + "'");
  }
  return name;
}

std::string fftw_version() { return std::string(fftwf_version); }

template <class T>
AlignedBuffer<T>::AlignedBuffer(size_t count) : count_(count) {
  if (count == 0) return;
  data_ = static_cast<T*>(AllocatorOf<T>::type::malloc(count * sizeof(T)));
  if (data_ == nullptr) throw std::bad_alloc();
}

template <class T>
AlignedBuffer<T>::~AlignedBuffer() {
  if (data_ != nullptr) AllocatorOf<T>::type::free(data_);
}

template <class T>
AlignedBuffer<T>& AlignedBuffer<T>::operator=(AlignedBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) AllocatorOf<T>::type::free(data_);
    data_ = other.data_;
    count_ = other.count_;
    other.data_ = nullptr;
    other.count_ = 0;
  }
  return *this;
}

template <class T>
void AlignedBuffer<T>::zero() {
  if (data_ != nullptr) std::memset(static_cast<void*>(data_), 0, count_ * sizeof(T));
}

template <class T>
Fft2Plan<T>::Fft2Plan(int ny, int nx) : ny_(ny), nx_(nx) {
  // Plan on scratch arrays: FFTW_MEASURE overwrites them.
  AlignedBuffer<cplx<T>> in(size_t(ny) * nx), out(size_t(ny) * nx);
  const unsigned flags = planner_flag();
  std::lock_guard<std::mutex> lock(planner_mutex());
  forward_ = Fftw<T>::plan(ny, nx, in.data(), out.data(), FFTW_FORWARD, flags);
  backward_ = Fftw<T>::plan(ny, nx, in.data(), out.data(), FFTW_BACKWARD, flags);
  if (forward_ == nullptr || backward_ == nullptr) {
    throw std::runtime_error("FFTW could not plan a " + std::to_string(ny) + "x" + std::to_string(nx) +
                             " complex transform (fftw_plan_dft_2d returned NULL)");
  }
}

template <class T>
Fft2Plan<T>::~Fft2Plan() {
  std::lock_guard<std::mutex> lock(planner_mutex());
  if (forward_ != nullptr) Fftw<T>::destroy(forward_);
  if (backward_ != nullptr) Fftw<T>::destroy(backward_);
}

template <class T>
void Fft2Plan<T>::forward(const cplx<T>* in, cplx<T>* out) const {
  Fftw<T>::execute(forward_, in, out);
}

template <class T>
void Fft2Plan<T>::backward(const cplx<T>* in, cplx<T>* out) const {
  Fftw<T>::execute(backward_, in, out);
}

template <class T>
std::shared_ptr<const Fft2Plan<T>> Fft2Plan<T>::get(int ny, int nx) {
  static std::mutex cache_mutex;
  static std::map<std::tuple<int, int, std::string>, std::shared_ptr<const Fft2Plan<T>>> cache;
  const auto key = std::make_tuple(ny, nx, fftw_planner_name());
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto plan = std::make_shared<const Fft2Plan<T>>(ny, nx);
  cache.emplace(key, plan);
  return plan;
}

template <class T>
BandFft2<T>::BandFft2(int ny, int nx, int low, int high) : ny_(ny), nx_(nx), low_(low), high_(high) {
  const size_t n = size_t(ny) * nx;
  AlignedBuffer<cplx<T>> in(n), out(n);  // planning scratch: FFTW_MEASURE overwrites it
  const unsigned flags = planner_flag();
  const size_t high_row = size_t(ny - high) * nx;
  std::lock_guard<std::mutex> lock(planner_mutex());
  const int signs[2] = {FFTW_FORWARD, FFTW_BACKWARD};
  for (int d = 0; d < 2; ++d) {
    columns_[d] = Fftw<T>::plan_many(ny, nx, in.data(), out.data(), nx, 1, signs[d], flags);
    low_rows_[d] = Fftw<T>::plan_many(nx, low, in.data(), out.data(), 1, nx, signs[d], flags);
    high_rows_[d] = Fftw<T>::plan_many(nx, high, in.data() + high_row, out.data() + high_row, 1, nx, signs[d], flags);
    if (columns_[d] == nullptr || low_rows_[d] == nullptr || high_rows_[d] == nullptr) {
      throw std::runtime_error("FFTW could not plan the band-limited " + std::to_string(ny) + "x" +
                               std::to_string(nx) + " transform (fftw_plan_many_dft returned NULL)");
    }
  }
}

template <class T>
BandFft2<T>::~BandFft2() {
  std::lock_guard<std::mutex> lock(planner_mutex());
  for (void* p : {columns_[0], columns_[1], low_rows_[0], low_rows_[1], high_rows_[0], high_rows_[1]})
    if (p != nullptr) Fftw<T>::destroy(p);
}

template <class T>
void BandFft2<T>::zero_gap(cplx<T>* plane) const {
  std::memset(static_cast<void*>(plane + size_t(low_) * nx_), 0, size_t(ny_ - low_ - high_) * nx_ * sizeof(cplx<T>));
}

template <class T>
void BandFft2<T>::forward(const cplx<T>* in, cplx<T>* out, cplx<T>* work) const {
  const size_t high_row = size_t(ny_ - high_) * nx_;
  Fftw<T>::execute(columns_[0], in, work);
  Fftw<T>::execute(low_rows_[0], work, out);
  Fftw<T>::execute(high_rows_[0], work + high_row, out + high_row);
  zero_gap(out);
}

template <class T>
void BandFft2<T>::backward(const cplx<T>* in, cplx<T>* out, cplx<T>* work) const {
  const size_t high_row = size_t(ny_ - high_) * nx_;
  Fftw<T>::execute(low_rows_[1], in, work);
  Fftw<T>::execute(high_rows_[1], in + high_row, work + high_row);
  zero_gap(work);
  Fftw<T>::execute(columns_[1], work, out);
}

template <class T>
std::shared_ptr<const BandFft2<T>> BandFft2<T>::get(int ny, int nx, int low, int high) {
  // Rows must keep the planes' SIMD alignment (FFTW's new-array execution requires the planned one).
  constexpr size_t kAlignment = 64;
  if (low < 1 || high < 1 || low + high >= ny || (size_t(nx) * sizeof(cplx<T>)) % kAlignment != 0) return nullptr;
  static std::mutex cache_mutex;
  static std::map<std::tuple<int, int, int, int, std::string>, std::shared_ptr<const BandFft2<T>>> cache;
  const auto key = std::make_tuple(ny, nx, low, high, fftw_planner_name());
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto plan = std::make_shared<const BandFft2<T>>(ny, nx, low, high);
  cache.emplace(key, plan);
  return plan;
}

template class AlignedBuffer<float>;
template class AlignedBuffer<double>;
template class AlignedBuffer<cplx<float>>;
template class AlignedBuffer<cplx<double>>;
template class Fft2Plan<float>;
template class Fft2Plan<double>;
template class BandFft2<float>;
template class BandFft2<double>;

}  // namespace mspt
