// The pybind11 module supercl._C: the CPU backend of supercl's image ops.  It takes numpy
// arrays that the Python layer (supercl/ops/) has already validated -- shapes, dtypes, value
// ranges -- and releases the GIL while the drivers in csrc/cpu/ run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <string>
#include <tuple>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu/ops.h"
#include "supercl/connected_components.h"

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

// ---- dtype dispatch -------------------------------------------------------------------------
//
// dispatch_dtype(std::tuple<T1, T2, ...>{}, array, "name", f) calls f(T{}) for the T whose
// numpy dtype is the array's, or raises a TypeError that names the accepted dtypes.

// The labeling's dtypes, from the one list of supercl/connected_components.h.
#define SUPERCL_CC_DTYPE_TUPLE(T, suffix) std::tuple<T>{},
using CcDtypes = decltype(std::tuple_cat(SUPERCL_CC_DTYPES(SUPERCL_CC_DTYPE_TUPLE) std::tuple<>{}));
#undef SUPERCL_CC_DTYPE_TUPLE

template <typename... Ts>
std::string dtype_names() {
  const std::vector<std::string> names = {std::string(py::str(py::dtype::of<Ts>()))...};
  std::string text;
  for (size_t i = 0; i < names.size(); ++i)
    text += (i == 0 ? "" : (i + 1 == names.size() ? " or " : ", ")) + names[i];
  return text;
}

template <typename... Ts, typename F>
void dispatch_dtype(std::tuple<Ts...>, const py::array& array, const char* name, F&& f) {
  const py::dtype dtype = array.dtype();
  const bool found = ((dtype.is(py::dtype::of<Ts>()) ? (f(Ts{}), true) : false) || ...);
  if (!found)
    throw py::type_error(std::string(name) + " dtype must be " + dtype_names<Ts...>() +
                         ", got " + std::string(py::str(dtype)));
}

// ---- the ops ---------------------------------------------------------------------------------

// Element strides of an array's axes.
std::vector<int64_t> element_strides(const py::array& array) {
  std::vector<int64_t> strides(array.ndim());
  for (py::ssize_t d = 0; d < array.ndim(); ++d)
    strides[d] = array.strides(d) / static_cast<int64_t>(array.itemsize());
  return strides;
}

// Labels of a (B, H, W) batch of images or a (B, D, H, W) batch of volumes, any strides.
py::tuple connected_components(const py::array& image, int connectivity, bool has_background,
                               int64_t background, int num_threads) {
  if (image.ndim() != 3 && image.ndim() != 4)
    throw py::value_error("image must have shape (B, H, W) or (B, D, H, W)");
  const std::vector<py::ssize_t> shape(image.shape(), image.shape() + image.ndim());
  const std::vector<int64_t> n(shape.begin(), shape.end()), s = element_strides(image);
  py::array_t<int32_t> out = new_output<int32_t>(shape);
  py::array_t<int64_t> counts({shape[0]});
  int32_t* o = out.mutable_data();
  int64_t* c = counts.mutable_data();
  dispatch_dtype(CcDtypes{}, image, "image", [&](auto tag) {
    using T = decltype(tag);
    const T* data = static_cast<const T*>(image.data());
    const T bg = static_cast<T>(background);
    py::gil_scoped_release release;
    if (shape.size() == 3)
      supercl::cpu::connected_components<T>(data, n[0], n[1], n[2], s[0], s[1], s[2],
                                            connectivity, has_background, bg, o, c, num_threads);
    else
      supercl::cpu::connected_components_3d<T>(data, n[0], n[1], n[2], n[3], s[0], s[1], s[2],
                                               s[3], connectivity, has_background, bg, o, c,
                                               num_threads);
  });
  return py::make_tuple(out, counts);
}

// SUPERCL_CC_DTYPES as "numpy name:kernel suffix" strings, for the test that compares it with
// the Python list (supercl.kernels.CC_DTYPES).
py::list connected_components_dtypes() {
  py::list names;
#define SUPERCL_CC_DTYPE_NAME(T, suffix) \
  names.append(std::string(py::str(py::dtype::of<T>())) + ":" #suffix);
  SUPERCL_CC_DTYPES(SUPERCL_CC_DTYPE_NAME)
#undef SUPERCL_CC_DTYPE_NAME
  return names;
}

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using Int64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using Uint8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

// ``mask`` (None or an array of shape ``shape``) as a C-contiguous uint8 array, kept in *array;
// its data, or nullptr for None.
const uint8_t* mask_data(const py::object& mask, const std::vector<py::ssize_t>& shape,
                         const char* shape_text, Uint8Array* array) {
  if (mask.is_none()) return nullptr;
  *array = Uint8Array::ensure(mask);
  if (!*array || array->ndim() != static_cast<py::ssize_t>(shape.size()) ||
      !std::equal(shape.begin(), shape.end(), array->shape()))
    throw py::value_error(std::string("mask must be a uint8 array of shape ") + shape_text);
  return array->data();
}

// SLIC of a (B, C, H, W) batch of images or a (B, C, D, H, W) batch of volumes; grid (B, 6) or
// (B, 9) as planned by supercl/ops/slic.py.
py::array_t<int32_t> slic(const FloatArray& image, const py::object& mask, const Int64Array& grid,
                          const DoubleArray& params, int64_t max_num_iter,
                          bool enforce_connectivity, const Int64Array& min_size,
                          int32_t start_label, int num_threads) {
  if (image.ndim() != 4 && image.ndim() != 5)
    throw py::value_error("image must have shape (B, C, H, W) or (B, C, D, H, W)");
  const bool volumes = image.ndim() == 5;
  const int64_t b = image.shape(0), c = image.shape(1);
  std::vector<py::ssize_t> spatial(image.shape() + 2, image.shape() + image.ndim());
  if (grid.ndim() != 2 || grid.shape(0) != b || grid.shape(1) != (volumes ? 9 : 6))
    throw py::value_error(volumes ? "grid must have shape (B, 9)" : "grid must have shape (B, 6)");
  if (params.ndim() != 2 || params.shape(0) != b || params.shape(1) != 5)
    throw py::value_error("params must have shape (B, 5)");
  if (min_size.ndim() != 1 || min_size.shape(0) != b)
    throw py::value_error("min_size must have shape (B,)");
  std::vector<py::ssize_t> shape = {b};
  shape.insert(shape.end(), spatial.begin(), spatial.end());
  Uint8Array mask_array;
  const uint8_t* m =
      mask_data(mask, shape, volumes ? "(B, D, H, W)" : "(B, H, W)", &mask_array);
  py::array_t<int32_t> out = new_output<int32_t>(shape);
  int32_t* o = out.mutable_data();
  const float* img = image.data();
  const int64_t *g = grid.data(), *ms = min_size.data();
  const double* p = params.data();
  {
    py::gil_scoped_release release;
    if (volumes)
      supercl::cpu::slic_3d(img, m, b, c, spatial[0], spatial[1], spatial[2], g, p,
                            max_num_iter, enforce_connectivity, ms, start_label, o, num_threads);
    else
      supercl::cpu::slic(img, m, b, c, spatial[0], spatial[1], g, p, max_num_iter,
                         enforce_connectivity, ms, start_label, o, num_threads);
  }
  return out;
}

// The [0, 1] rescaling of SLIC's input (float32 or float64, (B, C, H, W)); ValueError when a
// pixel inside the mask is not finite.
py::array_t<float> slic_rescale(const py::array& image, const py::object& mask, int num_threads) {
  if (image.ndim() != 4) throw py::value_error("image must have shape (B, C, H, W)");
  const int64_t b = image.shape(0), c = image.shape(1), h = image.shape(2), w = image.shape(3);
  Uint8Array mask_array;
  const uint8_t* m = mask_data(mask, {b, h, w}, "(B, H, W)", &mask_array);
  py::array_t<float> out = new_output<float>({b, c, h, w});
  bool finite = true;
  dispatch_dtype(std::tuple<float, double>{}, image, "image", [&](auto tag) {
    using T = decltype(tag);
    const auto a = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(image);
    float* o = out.mutable_data();
    py::gil_scoped_release release;
    finite = supercl::cpu::slic_rescale<T>(a.data(), m, b, c, h, w, o, num_threads);
  });
  if (!finite) throw py::value_error("non-finite values");
  return out;
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
  m.def("connected_components", &connected_components, py::arg("image"),
        py::arg("connectivity"), py::arg("has_background"), py::arg("background"),
        py::arg("num_threads"),
        "Raster-ordered connected-component labels of a validated (B, H, W) or (B, D, H, W) "
        "integer array.");
  m.def("connected_components_dtypes", &connected_components_dtypes,
        "The label dtypes the labeling is compiled for, as 'numpy name:kernel suffix' "
        "(SUPERCL_CC_DTYPES).");
  m.def("slic", &slic, py::arg("image"), py::arg("mask"), py::arg("grid"), py::arg("params"),
        py::arg("max_num_iter"), py::arg("enforce_connectivity"), py::arg("min_size"),
        py::arg("start_label"), py::arg("num_threads"),
        "SLIC labels of a validated, [0, 1]-rescaled (B, C, H, W) or (B, C, D, H, W) float32 "
        "array.");
  m.def("slic_rescale", &slic_rescale, py::arg("image"), py::arg("mask"), py::arg("num_threads"),
        "Each (C, H, W) image of a float32/float64 batch rescaled to [0, 1] (SLIC's input).");
  m.def("simd_level", [] { return std::string(supercl::cpu::simd_level()); },
        "SLIC's vector instruction set: 'avx2' or 'baseline' (SUPERCL_SIMD=baseline forces it).");
  m.def("has_openmp", &has_openmp, "Whether the extension was built with OpenMP.");
}
