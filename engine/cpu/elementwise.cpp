// Elementwise kernels: copy with conversion, fill, unary, binary, where.
#include <cmath>
#include <cstring>
#include <type_traits>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/strided_loop.h"

namespace fg::cpu {

namespace {

// Conversion between any two element types, through float for the 16-bit floats.
template <class To, class From>
inline To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<From, BFloat16> || std::is_same_v<From, Float16>) {
    return convert<To>(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, BFloat16> || std::is_same_v<To, Float16>) {
    return To(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);
  } else {
    return static_cast<To>(v);
  }
}

template <class T>
inline T from_double(double v) {
  if constexpr (std::is_same_v<T, BFloat16> || std::is_same_v<T, Float16>) {
    return T(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, bool>) {
    return v != 0.0;
  } else {
    return static_cast<T>(v);
  }
}

template <class T>
inline T gelu_value(T x) {
  return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
}

template <class T>
inline T gelu_derivative(T x) {
  const T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
  const T pdf = std::exp(T(-0.5) * x * x) * T(0.39894228040143267794);
  return cdf + x * pdf;
}

// Applies f elementwise; unit-stride runs get a plain loop the compiler vectorizes.
template <class R, class T, class F>
void unary_loop(const Tensor& x, const Tensor& out, F f) {
  auto loop = make_loop<2>(out.shape(), {&out, &x});
  for_each_run(loop, [f](std::array<char*, 2> p, int64_t n, const int64_t* s) {
    R* o = reinterpret_cast<R*>(p[0]);
    const T* a = reinterpret_cast<const T*>(p[1]);
    if (s[0] == sizeof(R) && s[1] == sizeof(T)) {
      for (int64_t i = 0; i < n; ++i) o[i] = f(a[i]);
    } else {
      for (int64_t i = 0; i < n; ++i)
        *reinterpret_cast<R*>(p[0] + i * s[0]) = f(*reinterpret_cast<const T*>(p[1] + i * s[1]));
    }
  });
}

template <class R, class T, class F>
void binary_loop(const Tensor& a, const Tensor& b, const Tensor& out, F f) {
  auto loop = make_loop<3>(out.shape(), {&out, &a, &b});
  for_each_run(loop, [f](std::array<char*, 3> p, int64_t n, const int64_t* s) {
    R* o = reinterpret_cast<R*>(p[0]);
    const T* x = reinterpret_cast<const T*>(p[1]);
    const T* y = reinterpret_cast<const T*>(p[2]);
    if (s[0] == sizeof(R) && s[1] == sizeof(T) && s[2] == sizeof(T)) {
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
    } else if (s[0] == sizeof(R) && s[1] == sizeof(T) && s[2] == 0) {
      const T yv = *y;
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], yv);
    } else if (s[0] == sizeof(R) && s[1] == 0 && s[2] == sizeof(T)) {
      const T xv = *x;
      for (int64_t i = 0; i < n; ++i) o[i] = f(xv, y[i]);
    } else {
      for (int64_t i = 0; i < n; ++i)
        *reinterpret_cast<R*>(p[0] + i * s[0]) = f(*reinterpret_cast<const T*>(p[1] + i * s[1]),
                                                   *reinterpret_cast<const T*>(p[2] + i * s[2]));
    }
  });
}

template <class To>
void copy_from(const Tensor& src, const Tensor& dst) {
  FG_DISPATCH_ALL(src.dtype(), "copy", [&] {
    unary_loop<To, scalar_t>(src, dst, [](scalar_t v) { return convert<To>(v); });
  });
}

template <class T>
void unary_float(UnaryOp op, const Tensor& x, const Tensor& out) {
  switch (op) {
    case UnaryOp::Neg: unary_loop<T, T>(x, out, [](T v) { return -v; }); break;
    case UnaryOp::Exp: unary_loop<T, T>(x, out, [](T v) { return std::exp(v); }); break;
    case UnaryOp::Log: unary_loop<T, T>(x, out, [](T v) { return std::log(v); }); break;
    case UnaryOp::Sqrt: unary_loop<T, T>(x, out, [](T v) { return std::sqrt(v); }); break;
    case UnaryOp::Rsqrt: unary_loop<T, T>(x, out, [](T v) { return T(1) / std::sqrt(v); }); break;
    case UnaryOp::Relu: unary_loop<T, T>(x, out, [](T v) { return v > T(0) ? v : T(0); }); break;
    case UnaryOp::Gelu: unary_loop<T, T>(x, out, [](T v) { return gelu_value(v); }); break;
    case UnaryOp::Tanh: unary_loop<T, T>(x, out, [](T v) { return std::tanh(v); }); break;
    case UnaryOp::Sigmoid:
      unary_loop<T, T>(x, out, [](T v) { return T(1) / (T(1) + std::exp(-v)); });
      break;
    case UnaryOp::Abs: unary_loop<T, T>(x, out, [](T v) { return std::abs(v); }); break;
    case UnaryOp::Reciprocal: unary_loop<T, T>(x, out, [](T v) { return T(1) / v; }); break;
    case UnaryOp::Square: unary_loop<T, T>(x, out, [](T v) { return v * v; }); break;
    case UnaryOp::LogicalNot: unary_loop<bool, T>(x, out, [](T v) { return v == T(0); }); break;
  }
}

template <class T>
void comparison(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  switch (op) {
    case BinaryOp::Eq: binary_loop<bool, T>(a, b, out, [](T x, T y) { return x == y; }); break;
    case BinaryOp::Ne: binary_loop<bool, T>(a, b, out, [](T x, T y) { return x != y; }); break;
    case BinaryOp::Lt: binary_loop<bool, T>(a, b, out, [](T x, T y) { return x < y; }); break;
    case BinaryOp::Le: binary_loop<bool, T>(a, b, out, [](T x, T y) { return x <= y; }); break;
    case BinaryOp::Gt: binary_loop<bool, T>(a, b, out, [](T x, T y) { return x > y; }); break;
    case BinaryOp::Ge: binary_loop<bool, T>(a, b, out, [](T x, T y) { return x >= y; }); break;
    case BinaryOp::LogicalAnd:
      binary_loop<bool, T>(a, b, out, [](T x, T y) { return x != T(0) && y != T(0); });
      break;
    case BinaryOp::LogicalOr:
      binary_loop<bool, T>(a, b, out, [](T x, T y) { return x != T(0) || y != T(0); });
      break;
    default: FG_ASSERT(false);
  }
}

template <class T>
void arithmetic(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  switch (op) {
    case BinaryOp::Add: binary_loop<T, T>(a, b, out, [](T x, T y) { return x + y; }); break;
    case BinaryOp::Sub: binary_loop<T, T>(a, b, out, [](T x, T y) { return x - y; }); break;
    case BinaryOp::Mul: binary_loop<T, T>(a, b, out, [](T x, T y) { return x * y; }); break;
    case BinaryOp::Div: binary_loop<T, T>(a, b, out, [](T x, T y) { return x / y; }); break;
    case BinaryOp::Maximum:
      binary_loop<T, T>(a, b, out, [](T x, T y) { return x >= y ? x : y; });
      break;
    case BinaryOp::Minimum:
      binary_loop<T, T>(a, b, out, [](T x, T y) { return x <= y ? x : y; });
      break;
    case BinaryOp::Pow:
      if constexpr (std::is_floating_point_v<T>) {
        binary_loop<T, T>(a, b, out, [](T x, T y) { return std::pow(x, y); });
      } else {
        FG_CHECK(false, "pow: needs a floating dtype");
      }
      break;
    case BinaryOp::ReluBackward:
      binary_loop<T, T>(a, b, out, [](T g, T y) { return y > T(0) ? g : T(0); });
      break;
    case BinaryOp::GeluBackward:
      if constexpr (std::is_floating_point_v<T>) {
        binary_loop<T, T>(a, b, out, [](T g, T x) { return g * gelu_derivative(x); });
      } else {
        FG_CHECK(false, "gelu backward: needs a floating dtype");
      }
      break;
    default: comparison<T>(op, a, b, out);
  }
}

}  // namespace

void CpuBackend::copy(const Tensor& src, const Tensor& dst) {
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    const size_t nbytes = static_cast<size_t>(src.numel()) * src.element_size();
    const char* s = static_cast<const char*>(src.data_ptr());
    char* d = static_cast<char*>(dst.data_ptr());
    parallel_for(static_cast<int64_t>(nbytes), static_cast<int64_t>(nbytes) / 4,
                 [&](int64_t begin, int64_t end) {
                   std::memcpy(d + begin, s + begin, static_cast<size_t>(end - begin));
                 });
    return;
  }
  FG_DISPATCH_ALL(dst.dtype(), "copy", [&] { copy_from<scalar_t>(src, dst); });
}

void CpuBackend::fill(const Tensor& dst, double value) {
  FG_DISPATCH_ALL(dst.dtype(), "fill", [&] {
    const scalar_t v = from_double<scalar_t>(value);
    auto loop = make_loop<1>(dst.shape(), {&dst});
    for_each_run(loop, [v](std::array<char*, 1> p, int64_t n, const int64_t* s) {
      for (int64_t i = 0; i < n; ++i) *reinterpret_cast<scalar_t*>(p[0] + i * s[0]) = v;
    });
  });
}

void CpuBackend::unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  if (op == UnaryOp::LogicalNot && x.dtype() == DType::Bool) {
    unary_loop<bool, bool>(x, out, [](bool v) { return !v; });
    return;
  }
  if (op == UnaryOp::Neg || op == UnaryOp::Abs) {
    if (x.dtype() == DType::Int64) {
      if (op == UnaryOp::Neg) unary_loop<int64_t, int64_t>(x, out, [](int64_t v) { return -v; });
      else unary_loop<int64_t, int64_t>(x, out, [](int64_t v) { return v < 0 ? -v : v; });
      return;
    }
  }
  FG_DISPATCH_FLOAT(x.dtype(), "unary op", [&] { unary_float<scalar_t>(op, x, out); });
}

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  switch (a.dtype()) {
    case DType::Float32: arithmetic<float>(op, a, b, out); break;
    case DType::Float64: arithmetic<double>(op, a, b, out); break;
    case DType::Int64: arithmetic<int64_t>(op, a, b, out); break;
    case DType::Int32: arithmetic<int32_t>(op, a, b, out); break;
    case DType::UInt8: arithmetic<uint8_t>(op, a, b, out); break;
    case DType::Bool:
      FG_CHECK(is_comparison(op), "arithmetic on bool tensors; convert with .to() first");
      comparison<bool>(op, a, b, out);
      break;
    default:
      FG_CHECK(false, "binary op: dtype ", dtype_name(a.dtype()),
               " is not supported on the CPU (convert with .to(float32))");
  }
}

void CpuBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  FG_DISPATCH_ALL(out.dtype(), "where", [&] {
    auto loop = make_loop<4>(out.shape(), {&out, &cond, &a, &b});
    for_each_run(loop, [](std::array<char*, 4> p, int64_t n, const int64_t* s) {
      for (int64_t i = 0; i < n; ++i) {
        const bool c = *reinterpret_cast<const bool*>(p[1] + i * s[1]);
        *reinterpret_cast<scalar_t*>(p[0] + i * s[0]) =
            c ? *reinterpret_cast<const scalar_t*>(p[2] + i * s[2])
              : *reinterpret_cast<const scalar_t*>(p[3] + i * s[3]);
      }
    });
  });
}

}  // namespace fg::cpu
