// The functors of the unary and binary elementwise ops (unary_binary.cu),
// with the CPU backend's semantics (engine/cpu/elementwise.cpp): each converts
// its storage-type operands to the compute type, applies the op, and rounds
// the result once. The op is a member: a branch that is the same for every
// thread costs nothing next to the memory traffic of these kernels, and it
// keeps the number of compiled kernels small.
//
// Written against the CUDA subset of the tests' host emulation, which compiles
// this header for the host.
#pragma once

#include <cstdint>
#include <type_traits>

#include "engine/backend.h"
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernel_header.cuh"

namespace fg::cuda {
FG_KERNELS_BEGIN

template <class C>
__device__ __forceinline__ C gelu_value(C x) {
  return C(0.5) * x * (C(1) + math::erf(x * C(0.70710678118654752440)));
}

template <class C>
__device__ __forceinline__ C gelu_derivative(C x) {
  const C cdf = C(0.5) * (C(1) + math::erf(x * C(0.70710678118654752440)));
  const C pdf = math::exp(C(-0.5) * x * x) * C(0.39894228040143267794);
  return cdf + x * pdf;
}

template <class T>
struct UnaryFloatFn {
  UnaryOp op;
  __device__ T operator()(T in) const {
    using C = compute_t<T>;
    const C v = convert<C>(in);
    C r;
    switch (op) {
      case UnaryOp::Neg:
        r = -v;
        break;
      case UnaryOp::Exp:
        r = math::exp(v);
        break;
      case UnaryOp::Log:
        r = math::log(v);
        break;
      case UnaryOp::Sqrt:
        r = math::sqrt(v);
        break;
      case UnaryOp::Rsqrt:
        r = C(1) / math::sqrt(v);
        break;
      case UnaryOp::Relu:
        r = v > C(0) ? v : C(0);
        break;
      case UnaryOp::Gelu:
        r = gelu_value(v);
        break;
      case UnaryOp::Tanh:
        r = math::tanh(v);
        break;
      case UnaryOp::Sigmoid:
        r = C(1) / (C(1) + math::exp(-v));
        break;
      case UnaryOp::Abs:
        r = math::abs(v);
        break;
      case UnaryOp::Reciprocal:
        r = C(1) / v;
        break;
      case UnaryOp::Square:
        r = v * v;
        break;
      default:
        r = C(0);
        break;  // LogicalNot has its own functor
    }
    return convert<T>(r);
  }
};

struct NegInt64Fn {
  __device__ int64_t operator()(int64_t v) const { return -v; }
};
struct AbsInt64Fn {
  __device__ int64_t operator()(int64_t v) const { return v < 0 ? -v : v; }
};

template <class T>
struct LogicalNotFn {
  __device__ bool operator()(T v) const { return convert<compute_t<T>>(v) == compute_t<T>(0); }
};

template <class T>
struct ArithmeticFn {
  BinaryOp op;
  __device__ T operator()(T a, T b) const {
    using C = compute_t<T>;
    return convert<T>(apply(op, convert<C>(a), convert<C>(b)));
  }
  // Operands of other types (a float scalar with a bfloat16 tensor) are read
  // as the compute type, so the result is rounded to T once.
  template <class A, class B>
  __device__ T operator()(A a, B b) const {
    using C = compute_t<T>;
    return convert<T>(apply(op, convert<C>(a), convert<C>(b)));
  }
  __device__ static compute_t<T> apply(BinaryOp op, compute_t<T> x, compute_t<T> y) {
    using C = compute_t<T>;
    C r;
    switch (op) {
      case BinaryOp::Add:
        r = x + y;
        break;
      case BinaryOp::Sub:
        r = x - y;
        break;
      case BinaryOp::Mul:
        r = x * y;
        break;
      case BinaryOp::Div:
        r = x / y;
        break;
      case BinaryOp::Maximum:
        r = x >= y ? x : y;
        break;
      case BinaryOp::Minimum:
        r = x <= y ? x : y;
        break;
      case BinaryOp::ReluBackward:
        r = y > C(0) ? x : C(0);
        break;
      case BinaryOp::Pow:
        if constexpr (std::is_floating_point_v<C>)
          r = math::pow(x, y);
        else
          r = C(0);  // rejected on the host
        break;
      case BinaryOp::GeluBackward:
        if constexpr (std::is_floating_point_v<C>)
          r = x * gelu_derivative(y);
        else
          r = C(0);  // rejected on the host
        break;
      default:
        r = C(0);
        break;  // comparisons have their own functor
    }
    return r;
  }
};

template <class T>
struct ComparisonFn {
  BinaryOp op;
  __device__ bool operator()(T a, T b) const {
    using C = compute_t<T>;
    const C x = convert<C>(a), y = convert<C>(b);
    switch (op) {
      case BinaryOp::Eq:
        return x == y;
      case BinaryOp::Ne:
        return x != y;
      case BinaryOp::Lt:
        return x < y;
      case BinaryOp::Le:
        return x <= y;
      case BinaryOp::Gt:
        return x > y;
      case BinaryOp::Ge:
        return x >= y;
      case BinaryOp::LogicalAnd:
        return x != C(0) && y != C(0);
      case BinaryOp::LogicalOr:
        return x != C(0) || y != C(0);
      default:
        return false;
    }
  }
};

FG_KERNELS_END
}  // namespace fg::cuda
