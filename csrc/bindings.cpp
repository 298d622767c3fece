// The pybind11 module supercl._C: the CPU backend of supercl's image ops.  It takes numpy
// arrays that the Python layer (supercl/ops/) has already validated -- shapes, dtypes, value
// ranges -- and releases the GIL while the drivers in csrc/cpu/ run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu/ops.h"

namespace py = pybind11;

namespace {

// A new C-contiguous array for an op's output.  From 32 MiB on (glibc's largest mmap
// threshold: such blocks are mapped afresh on every call, page by page) they are 2 MiB-aligned
// and advised to use transparent huge pages: a 32 x 512^2 int32 output cost 18 ms to allocate
// and fill on 4 KiB pages and 3 ms on huge pages here, as much as the whole connected-
// components pass.  Smaller blocks come from the heap, whose pages are reused warm (advising
// those measured slower).
template <typename T>
py::array_t<T> new_output(const std::vector<py::ssize_t>& shape) {
  size_t count = 1;
  for (py::ssize_t n : shape) count *= static_cast<size_t>(n);
  const size_t bytes = count * sizeof(T);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kHuge = size_t{2} << 20;
  if (bytes >= (size_t{32} << 20)) {
    void* p = nullptr;
    const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
    if (posix_memalign(&p, kHuge, rounded) != 0) throw std::bad_alloc();
    madvise(p, rounded, MADV_HUGEPAGE);  // advice only: without THP nothing changes
    py::capsule owner(p, [](void* q) { std::free(q); });
    return py::array_t<T>(shape, static_cast<T*>(p), owner);
  }
#endif
  (void)bytes;
  return py::array_t<T>(shape);
}

template <typename T>
void run_cc(const py::array& image, int connectivity, bool has_background, int64_t background,
            int32_t* out, int64_t* counts, int num_threads) {
  const auto* data = static_cast<const T*>(image.data());
  const int64_t item = static_cast<int64_t>(sizeof(T));
  const int64_t b = image.shape(0), h = image.shape(1), w = image.shape(2);
  const int64_t sb = image.strides(0) / item, sy = image.strides(1) / item,
                sx = image.strides(2) / item;
  py::gil_scoped_release release;
  supercl::cpu::connected_components<T>(data, b, h, w, sb, sy, sx, connectivity, has_background,
                                        static_cast<T>(background), out, counts, num_threads);
}

py::tuple connected_components(const py::array& image, int connectivity, bool has_background,
                               int64_t background, int num_threads) {
  if (image.ndim() != 3) throw py::value_error("image must have shape (B, H, W)");
  const int64_t b = image.shape(0), h = image.shape(1), w = image.shape(2);
  py::array_t<int32_t> out = new_output<int32_t>({b, h, w});
  py::array_t<int64_t> counts({b});
  int32_t* o = out.mutable_data();
  int64_t* c = counts.mutable_data();
  const auto dtype = image.dtype();
  if (dtype.is(py::dtype::of<uint8_t>()))
    run_cc<uint8_t>(image, connectivity, has_background, background, o, c, num_threads);
  else if (dtype.is(py::dtype::of<int32_t>()))
    run_cc<int32_t>(image, connectivity, has_background, background, o, c, num_threads);
  else if (dtype.is(py::dtype::of<int64_t>()))
    run_cc<int64_t>(image, connectivity, has_background, background, o, c, num_threads);
  else
    throw py::type_error("image dtype must be uint8, int32 or int64, got " +
                         std::string(py::str(dtype)));
  return py::make_tuple(out, counts);
}

template <typename T>
void run_cc3(const py::array& volume, int connectivity, bool has_background, int64_t background,
             int32_t* out, int64_t* counts, int num_threads) {
  const auto* data = static_cast<const T*>(volume.data());
  const int64_t item = static_cast<int64_t>(sizeof(T));
  int64_t shape[4], stride[4];
  for (int d = 0; d < 4; ++d) {
    shape[d] = volume.shape(d);
    stride[d] = volume.strides(d) / item;
  }
  py::gil_scoped_release release;
  supercl::cpu::connected_components_3d<T>(data, shape[0], shape[1], shape[2], shape[3],
                                           stride[0], stride[1], stride[2], stride[3],
                                           connectivity, has_background,
                                           static_cast<T>(background), out, counts, num_threads);
}

py::tuple connected_components_3d(const py::array& volume, int connectivity, bool has_background,
                                  int64_t background, int num_threads) {
  if (volume.ndim() != 4) throw py::value_error("volume must have shape (B, D, H, W)");
  const int64_t b = volume.shape(0);
  py::array_t<int32_t> out =
      new_output<int32_t>({b, volume.shape(1), volume.shape(2), volume.shape(3)});
  py::array_t<int64_t> counts({b});
  int32_t* o = out.mutable_data();
  int64_t* c = counts.mutable_data();
  const auto dtype = volume.dtype();
  if (dtype.is(py::dtype::of<uint8_t>()))
    run_cc3<uint8_t>(volume, connectivity, has_background, background, o, c, num_threads);
  else if (dtype.is(py::dtype::of<int32_t>()))
    run_cc3<int32_t>(volume, connectivity, has_background, background, o, c, num_threads);
  else if (dtype.is(py::dtype::of<int64_t>()))
    run_cc3<int64_t>(volume, connectivity, has_background, background, o, c, num_threads);
  else
    throw py::type_error("volume dtype must be uint8, int32 or int64, got " +
                         std::string(py::str(dtype)));
  return py::make_tuple(out, counts);
}

py::array_t<int32_t> slic(
    const py::array_t<float, py::array::c_style | py::array::forcecast>& image,
    const py::object& mask,
    const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& grid,
    const py::array_t<double, py::array::c_style | py::array::forcecast>& params,
    int64_t max_num_iter, bool enforce_connectivity,
    const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& min_size,
    int32_t start_label, int num_threads) {
  if (image.ndim() != 4) throw py::value_error("image must have shape (B, C, H, W)");
  const int64_t b = image.shape(0), c = image.shape(1), h = image.shape(2), w = image.shape(3);
  if (grid.ndim() != 2 || grid.shape(0) != b || grid.shape(1) != 6)
    throw py::value_error("grid must have shape (B, 6)");
  if (params.ndim() != 2 || params.shape(0) != b || params.shape(1) != 5)
    throw py::value_error("params must have shape (B, 5)");
  if (min_size.ndim() != 1 || min_size.shape(0) != b)
    throw py::value_error("min_size must have shape (B,)");
  py::array_t<uint8_t, py::array::c_style | py::array::forcecast> mask_array;
  const uint8_t* mask_ptr = nullptr;
  if (!mask.is_none()) {
    mask_array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(mask);
    if (!mask_array || mask_array.ndim() != 3 || mask_array.shape(0) != b ||
        mask_array.shape(1) != h || mask_array.shape(2) != w)
      throw py::value_error("mask must be a uint8 array of shape (B, H, W)");
    mask_ptr = mask_array.data();
  }
  py::array_t<int32_t> out = new_output<int32_t>({b, h, w});
  int32_t* o = out.mutable_data();
  const float* img = image.data();
  const int64_t* g = grid.data();
  const double* p = params.data();
  const int64_t* ms = min_size.data();
  {
    py::gil_scoped_release release;
    supercl::cpu::slic(img, mask_ptr, b, c, h, w, g, p, max_num_iter, enforce_connectivity, ms,
                       start_label, o, num_threads);
  }
  return out;
}

py::array_t<int32_t> slic_3d(
    const py::array_t<float, py::array::c_style | py::array::forcecast>& image,
    const py::object& mask,
    const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& grid,
    const py::array_t<double, py::array::c_style | py::array::forcecast>& params,
    int64_t max_num_iter, bool enforce_connectivity,
    const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& min_size,
    int32_t start_label, int num_threads) {
  if (image.ndim() != 5) throw py::value_error("image must have shape (B, C, D, H, W)");
  const int64_t b = image.shape(0), c = image.shape(1), d = image.shape(2), h = image.shape(3),
                w = image.shape(4);
  if (grid.ndim() != 2 || grid.shape(0) != b || grid.shape(1) != 9)
    throw py::value_error("grid must have shape (B, 9)");
  if (params.ndim() != 2 || params.shape(0) != b || params.shape(1) != 5)
    throw py::value_error("params must have shape (B, 5)");
  if (min_size.ndim() != 1 || min_size.shape(0) != b)
    throw py::value_error("min_size must have shape (B,)");
  py::array_t<uint8_t, py::array::c_style | py::array::forcecast> mask_array;
  const uint8_t* mask_ptr = nullptr;
  if (!mask.is_none()) {
    mask_array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(mask);
    if (!mask_array || mask_array.ndim() != 4 || mask_array.shape(0) != b ||
        mask_array.shape(1) != d || mask_array.shape(2) != h || mask_array.shape(3) != w)
      throw py::value_error("mask must be a uint8 array of shape (B, D, H, W)");
    mask_ptr = mask_array.data();
  }
  py::array_t<int32_t> out = new_output<int32_t>({b, d, h, w});
  int32_t* o = out.mutable_data();
  const float* img = image.data();
  const int64_t* g = grid.data();
  const double* p = params.data();
  const int64_t* ms = min_size.data();
  {
    py::gil_scoped_release release;
    supercl::cpu::slic_3d(img, mask_ptr, b, c, d, h, w, g, p, max_num_iter, enforce_connectivity,
                          ms, start_label, o, num_threads);
  }
  return out;
}

// The [0, 1] rescaling of SLIC's input (float32 or float64, (B, C, H, W)); ValueError when a
// pixel inside the mask is not finite.
template <typename T>
py::array_t<float> slic_rescale_t(const py::array& image, const uint8_t* mask, int num_threads) {
  const auto a = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(image);
  const int64_t b = a.shape(0), c = a.shape(1), h = a.shape(2), w = a.shape(3);
  py::array_t<float> out = new_output<float>({b, c, h, w});
  float* o = out.mutable_data();
  const T* x = a.data();
  bool finite;
  {
    py::gil_scoped_release release;
    finite = supercl::cpu::slic_rescale<T>(x, mask, b, c, h, w, o, num_threads);
  }
  if (!finite) throw py::value_error("non-finite values");
  return out;
}

py::array_t<float> slic_rescale(const py::array& image, const py::object& mask, int num_threads) {
  if (image.ndim() != 4) throw py::value_error("image must have shape (B, C, H, W)");
  py::array_t<uint8_t, py::array::c_style | py::array::forcecast> mask_array;
  const uint8_t* mask_ptr = nullptr;
  if (!mask.is_none()) {
    mask_array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(mask);
    if (!mask_array || mask_array.ndim() != 3 || mask_array.shape(0) != image.shape(0) ||
        mask_array.shape(1) != image.shape(2) || mask_array.shape(2) != image.shape(3))
      throw py::value_error("mask must be a uint8 array of shape (B, H, W)");
    mask_ptr = mask_array.data();
  }
  if (image.dtype().is(py::dtype::of<float>()))
    return slic_rescale_t<float>(image, mask_ptr, num_threads);
  if (image.dtype().is(py::dtype::of<double>()))
    return slic_rescale_t<double>(image, mask_ptr, num_threads);
  throw py::type_error("image dtype must be float32 or float64, got " +
                       std::string(py::str(image.dtype())));
}

bool has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "supercl CPU backend (C++17, OpenMP); use supercl.ops, not this module.";
  m.def("connected_components", &connected_components, py::arg("image"), py::arg("connectivity"),
        py::arg("has_background"), py::arg("background"), py::arg("num_threads"),
        "Raster-ordered connected-component labels of a validated (B, H, W) integer array.");
  m.def("connected_components_3d", &connected_components_3d, py::arg("volume"),
        py::arg("connectivity"), py::arg("has_background"), py::arg("background"),
        py::arg("num_threads"),
        "Raster-ordered connected-component labels of a validated (B, D, H, W) integer array.");
  m.def("slic", &slic, py::arg("image"), py::arg("mask"), py::arg("grid"), py::arg("params"),
        py::arg("max_num_iter"), py::arg("enforce_connectivity"), py::arg("min_size"),
        py::arg("start_label"), py::arg("num_threads"),
        "SLIC labels of a validated, [0, 1]-rescaled (B, C, H, W) float32 array.");
  m.def("slic_3d", &slic_3d, py::arg("image"), py::arg("mask"), py::arg("grid"),
        py::arg("params"), py::arg("max_num_iter"), py::arg("enforce_connectivity"),
        py::arg("min_size"), py::arg("start_label"), py::arg("num_threads"),
        "SLIC labels of a validated, [0, 1]-rescaled (B, C, D, H, W) float32 array.");
  m.def("slic_rescale", &slic_rescale, py::arg("image"), py::arg("mask"), py::arg("num_threads"),
        "Each (C, H, W) image of a float32/float64 batch rescaled to [0, 1] (SLIC's input).");
  m.def("simd_level", [] { return std::string(supercl::cpu::simd_level()); },
        "SLIC's vector instruction set: 'avx2' or 'baseline' (SUPERCL_SIMD=baseline forces it).");
  m.def("has_openmp", &has_openmp, "Whether the extension was built with OpenMP.");
}
