// The elementwise map kernels (engine/cuda/elementwise_kernels.cuh) with the
// unary and binary ops' functors (engine/cuda/elementwise_ops.cuh), compiled
// for the host and run through the CUDA emulation on CPU tensors' memory,
// launched as elementwise.cuh's launchers do (the header's map_plan picks the
// path), against the CPU backend on the same operands. Every layout the
// launchers tell apart: contiguous (flat, vector accesses), an operand one
// element off alignment (flat, scalar accesses), a broadcast value (flat), a
// broadcast row and a transposed view (strided); the grid is kept small so the
// grid-stride loops and the vector tail run. Also copy's functors and its
// any-to-any conversion kernel (engine/cuda/copy_kernels.cuh): fill, where,
// the typed conversions of the fast path, and every pair of dtypes.
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "compare.h"
#include "engine/backend.h"
#include "engine/cuda/copy_kernels.cuh"
#include "engine/cuda/elementwise_kernels.cuh"
#include "engine/cuda/elementwise_ops.cuh"
#include "engine/ops.h"
#include "engine/tensor.h"

using namespace fg;
namespace cu = fg::cuda;

namespace {

constexpr unsigned kGrid = 2;  // blocks: fewer than the work, so every thread loops

// elementwise.cuh's launch_map through the emulation (the same run_map picks
// the path); returns the plan.
template <class R, class... In, class F, class... Tensors>
cu::MapPlan map(F f, const Tensor& out, const Tensors&... in) {
  const auto emulated = [](int64_t, auto kernel, const auto&... args) {
    fg_emu::launch(dim3(kGrid), dim3(cu::kElementwiseThreads), 0, kernel, args...);
  };
  return cu::run_map<R, In...>(emulated, f, out, in...);
}

bool is_integral(DType dtype) {
  return dtype == DType::Int64 || dtype == DType::Int32 || dtype == DType::UInt8 ||
         dtype == DType::Bool;
}

// The output's shape; 7 x 37 = 259 elements: not a multiple of any vector width.
const Shape kShape{7, 37};

// A random tensor of `dtype` with kShape's element count, in the layout `how`:
// "contiguous", "misaligned" (a view starting one element into its buffer),
// "scalar" (one value broadcast), "row" (a row broadcast over the rows),
// "transposed" (a transposed view). Values in [lo, hi); integers rounded.
Tensor operand(const std::string& how, DType dtype, uint64_t seed, double lo, double hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  auto values = [&](int64_t n) {
    std::vector<double> v;
    for (int64_t i = 0; i < n; ++i)
      v.push_back(is_integral(dtype) ? std::round(dist(rng)) : dist(rng));
    return Tensor::from_vector(v, {n}).to(dtype);
  };
  const int64_t rows = kShape[0], cols = kShape[1];
  if (how == "contiguous") return values(rows * cols).reshape(kShape);
  if (how == "misaligned")
    return values(rows * cols + 1).slice(0, 1, rows * cols + 1).reshape(kShape);
  if (how == "scalar") return values(1).reshape({1, 1}).expand(kShape);
  if (how == "row") return values(cols).reshape({1, cols}).expand(kShape);
  REQUIRE(how == "transposed");
  return values(rows * cols).reshape({cols, rows}).transpose(0, 1);
}

// The path the launchers must take for a layout.
void check_path(const cu::MapPlan& plan, const std::string& how) {
  INFO("layout " << how);
  CHECK(plan.flat == (how == "contiguous" || how == "misaligned" || how == "scalar"));
  CHECK(plan.vectorized == (how == "contiguous" || how == "scalar"));
}

const std::vector<std::string> kLayouts = {"contiguous", "misaligned", "scalar", "row",
                                           "transposed"};

// got against expected (both converted to float64): bitwise, or within
// `relative` (transcendental functions: the host's libm against the CPU
// backend's own vectorized ones).
void check_values(const Tensor& got, const Tensor& expected, double relative,
                  const std::string& what) {
  INFO(what);
  const std::vector<double> g = fg_emu_test::to_vector(got), e = fg_emu_test::to_vector(expected);
  REQUIRE(g.size() == e.size());
  for (size_t i = 0; i < g.size(); ++i) {
    INFO("element " << i << ": " << g[i] << " against " << e[i]);
    if (std::isnan(e[i]))
      REQUIRE(std::isnan(g[i]));
    else if (relative == 0.0)
      REQUIRE(g[i] == e[i]);
    else
      REQUIRE(std::abs(g[i] - e[i]) <= relative * std::max(1.0, std::abs(e[i])));
  }
}

// The CPU backend's result; bfloat16 (which the CPU does not compute in):
// the operands in float32, the op in float32, the result rounded to bfloat16
// once, which is what the device's functors promise.
Tensor cpu_binary(BinaryOp op, const Tensor& a, const Tensor& b, DType out_dtype) {
  const bool bf16 = a.dtype() == DType::BFloat16 || b.dtype() == DType::BFloat16;
  const Tensor x = bf16 ? a.to(DType::Float32) : a, y = bf16 ? b.to(DType::Float32) : b;
  const DType compute = bf16 && out_dtype == DType::BFloat16 ? DType::Float32 : out_dtype;
  const Tensor out = Tensor::empty(kShape, compute);
  backend_for(kCPU).binary(op, x, y, out);
  return out.to(out_dtype);
}

Tensor cpu_unary(UnaryOp op, const Tensor& x, DType dtype) {
  const bool bf16 = dtype == DType::BFloat16;
  const Tensor in = bf16 ? x.to(DType::Float32) : x;
  const Tensor out = Tensor::empty(kShape, in.dtype());
  backend_for(kCPU).unary(op, in, out);
  return out.to(dtype);
}

// An arithmetic op through map2; bool has none (binary() refuses it).
template <class T>
cu::MapPlan arithmetic(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  if constexpr (std::is_same_v<T, bool>) {
    FAIL("arithmetic on bool");
    return {};
  } else {
    return map<T, T, T>(cu::ArithmeticFn<T>{op}, out, a, b);
  }
}

template <class T>
void binary_case(DType dtype, BinaryOp op, double relative, double lo, double hi) {
  for (const std::string& how : kLayouts) {
    const std::string what = std::string("binary op ") + std::to_string(static_cast<int>(op)) +
                             ", " + dtype_name(dtype) + ", second operand " + how;
    const Tensor a = operand("contiguous", dtype, 1, lo, hi);
    const Tensor b = operand(how, dtype, 2, lo, hi);
    const bool comparison = is_comparison(op);
    const DType out_dtype = comparison ? DType::Bool : dtype;
    const Tensor expected = cpu_binary(op, a, b, out_dtype), got = Tensor::empty(kShape, out_dtype);
    // The first operand in the layout too (b then contiguous), as a transposed a differs.
    cu::MapPlan plan;
    if (comparison)
      plan = map<bool, T, T>(cu::ComparisonFn<T>{op}, got, a, b);
    else
      plan = arithmetic<T>(op, a, b, got);
    check_path(plan, how);
    check_values(got, expected, relative, what);

    const Tensor got_swapped = Tensor::empty(kShape, out_dtype),
                 expected_swapped = cpu_binary(op, b, a, out_dtype);
    if (comparison)
      map<bool, T, T>(cu::ComparisonFn<T>{op}, got_swapped, b, a);
    else
      arithmetic<T>(op, b, a, got_swapped);
    check_values(got_swapped, expected_swapped, relative, what + ", operands swapped");
  }
}

template <class T>
void unary_case(DType dtype, UnaryOp op, double relative, double lo, double hi) {
  for (const std::string how : {"contiguous", "misaligned", "transposed"}) {
    const std::string what = std::string("unary op ") + std::to_string(static_cast<int>(op)) +
                             ", " + dtype_name(dtype) + ", input " + how;
    const Tensor x = operand(how, dtype, 3, lo, hi);
    const Tensor expected = cpu_unary(op, x, dtype), got = Tensor::empty(kShape, dtype);
    const cu::MapPlan plan = map<T, T>(cu::UnaryFloatFn<T>{op}, got, x);
    check_path(plan, how);
    check_values(got, expected, relative, what);
  }
}

}  // namespace

TEST_CASE("elementwise kernels (emulated): binary ops in every layout against the CPU") {
  using bf16 = cu::bf16;
  for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum,
                      BinaryOp::Minimum, BinaryOp::ReluBackward}) {
    binary_case<float>(DType::Float32, op, 0.0, -3.0, 3.0);
    binary_case<double>(DType::Float64, op, 0.0, -3.0, 3.0);
    binary_case<bf16>(DType::BFloat16, op, 0.0, -3.0, 3.0);
  }
  for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Maximum})
    binary_case<int64_t>(DType::Int64, op, 0.0, -50.0, 50.0);
  binary_case<float>(DType::Float32, BinaryOp::Pow, 2e-6, 0.1, 3.0);
  binary_case<float>(DType::Float32, BinaryOp::GeluBackward, 2e-6, -3.0, 3.0);
  binary_case<double>(DType::Float64, BinaryOp::GeluBackward, 1e-14, -3.0, 3.0);
  for (BinaryOp op : {BinaryOp::Eq, BinaryOp::Lt, BinaryOp::Ge, BinaryOp::LogicalAnd}) {
    binary_case<float>(DType::Float32, op, 0.0, -2.0, 2.0);
    binary_case<int64_t>(DType::Int64, op, 0.0, -2.0, 2.0);
  }
}

TEST_CASE("elementwise kernels (emulated): int32, uint8 and bool ops against the CPU") {
  // The other integer instantiations binary() and unary() launch. uint8
  // arithmetic wraps around (sub below zero, mul past 255) on both sides.
  for (BinaryOp op :
       {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Maximum, BinaryOp::Minimum}) {
    binary_case<int32_t>(DType::Int32, op, 0.0, -50.0, 50.0);
    binary_case<uint8_t>(DType::UInt8, op, 0.0, 0.0, 40.0);
  }
  for (BinaryOp op : {BinaryOp::Eq, BinaryOp::Ne, BinaryOp::Lt, BinaryOp::Gt, BinaryOp::Le,
                      BinaryOp::Ge, BinaryOp::LogicalAnd, BinaryOp::LogicalOr}) {
    binary_case<int32_t>(DType::Int32, op, 0.0, -2.0, 2.0);
    binary_case<uint8_t>(DType::UInt8, op, 0.0, 0.0, 3.0);
    binary_case<bool>(DType::Bool, op, 0.0, -1.0, 1.0);  // rounded: about a third false
  }
  // logical_not from each of them (and float32), zeros among the values.
  Backend& cpu = backend_for(kCPU);
  auto logical_not = [&](auto tag, DType dtype, double lo, double hi) {
    using T = decltype(tag);
    for (const std::string how : {"contiguous", "misaligned", "transposed"}) {
      INFO("logical_not of " << std::string(dtype_name(dtype)) << ", input " << how);
      const Tensor x = operand(how, dtype, 10, lo, hi);
      const Tensor got = Tensor::empty(kShape, DType::Bool),
                   expected = Tensor::empty(kShape, DType::Bool);
      check_path(map<bool, T>(cu::LogicalNotFn<T>{}, got, x), how);
      // The CPU's logical_not takes floating inputs only: x == 0 there.
      cpu.binary(BinaryOp::Eq, x, Tensor::zeros(kShape, dtype), expected);
      CHECK(fg_emu_test::to_vector(got) == fg_emu_test::to_vector(expected));
    }
  };
  logical_not(int32_t{}, DType::Int32, -2.0, 2.0);
  logical_not(uint8_t{}, DType::UInt8, 0.0, 2.0);
  logical_not(bool{}, DType::Bool, -1.0, 1.0);
  logical_not(float{}, DType::Float32, -1.0, 1.0);
}

TEST_CASE("elementwise kernels (emulated): a bfloat16 tensor with a float32 operand rounds once") {
  // binary()'s mixed path: launch_map<bf16, bf16, float> (and the reverse),
  // computed in float and rounded to bfloat16 once, as the CPU does.
  for (const std::string& how : kLayouts) {
    const Tensor a = operand("contiguous", DType::BFloat16, 4, -3.0, 3.0);
    const Tensor b = operand(how, DType::Float32, 5, -3.0, 3.0);
    for (BinaryOp op : {BinaryOp::Mul, BinaryOp::Add, BinaryOp::Div}) {
      const Tensor expected = cpu_binary(op, a, b, DType::BFloat16),
                   got = Tensor::empty(kShape, DType::BFloat16);
      check_path(map<cu::bf16, cu::bf16, float>(cu::ArithmeticFn<cu::bf16>{op}, got, a, b), how);
      check_values(got, expected, 0.0, "bfloat16 with float32 " + how);
      const Tensor expected2 = cpu_binary(op, b, a, DType::BFloat16),
                   got2 = Tensor::empty(kShape, DType::BFloat16);
      map<cu::bf16, float, cu::bf16>(cu::ArithmeticFn<cu::bf16>{op}, got2, b, a);
      check_values(got2, expected2, 0.0, "float32 " + how + " with bfloat16");
    }
  }
}

TEST_CASE("elementwise kernels (emulated): unary ops against the CPU") {
  for (UnaryOp op : {UnaryOp::Neg, UnaryOp::Relu, UnaryOp::Abs, UnaryOp::Square}) {
    unary_case<float>(DType::Float32, op, 0.0, -3.0, 3.0);
    unary_case<cu::bf16>(DType::BFloat16, op, 0.0, -3.0, 3.0);
  }
  for (UnaryOp op : {UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Sigmoid, UnaryOp::Gelu}) {
    unary_case<float>(DType::Float32, op, 2e-6, -3.0, 3.0);
    unary_case<double>(DType::Float64, op, 1e-14, -3.0, 3.0);
  }
  for (UnaryOp op : {UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Rsqrt, UnaryOp::Reciprocal})
    unary_case<float>(DType::Float32, op, 2e-6, 0.1, 4.0);
  // int64 negation and absolute value, and logical_not into bool (zeros among the values).
  for (const std::string how : {"contiguous", "transposed"}) {
    const Tensor x = operand(how, DType::Int64, 6, -3.0, 3.0);
    const Tensor neg = Tensor::empty(kShape, DType::Int64),
                 abs = Tensor::empty(kShape, DType::Int64), no = Tensor::empty(kShape, DType::Bool);
    map<int64_t, int64_t>(cu::NegInt64Fn{}, neg, x);
    map<int64_t, int64_t>(cu::AbsInt64Fn{}, abs, x);
    map<bool, int64_t>(cu::LogicalNotFn<int64_t>{}, no, x);
    // The CPU has no int64 unary ops: the values written out.
    const std::vector<double> xv = fg_emu_test::to_vector(x), nv = fg_emu_test::to_vector(neg),
                              av = fg_emu_test::to_vector(abs), bv = fg_emu_test::to_vector(no);
    INFO("int64 " << how);
    for (size_t i = 0; i < xv.size(); ++i) {
      REQUIRE(nv[i] == -xv[i]);
      REQUIRE(av[i] == std::abs(xv[i]));
      REQUIRE(bv[i] == (xv[i] == 0.0 ? 1.0 : 0.0));
    }
  }
}

TEST_CASE(
    "elementwise kernels (emulated): fill and where with copy's functors, contiguous and strided") {
  // fill and where as copy_fill.cu launches them: map0 with Constant and map3
  // with Select, both on bit patterns of the element's size. fill into a
  // contiguous tensor and a transposed view; where with a, then b, in each
  // layout. Expected values are written out here: every element filled, each
  // chosen from a or b.
  for (const std::string how : {"contiguous", "transposed"}) {
    const Tensor base = Tensor::zeros({kShape[1], kShape[0]});
    const Tensor out = how == "contiguous" ? Tensor::zeros(kShape) : base.transpose(0, 1);
    const float value = 7.5f;
    uint32_t bits = 0;
    std::memcpy(&bits, &value, sizeof(bits));
    check_path(map<uint32_t>(cu::copy_detail::Constant<uint32_t>{bits}, out), how);
    for (double v : fg_emu_test::to_vector(out)) REQUIRE(v == 7.5);
  }
  for (const std::string& how : kLayouts) {
    for (bool a_varies : {true, false}) {
      const Tensor c = gt(operand("contiguous", DType::Float32, 7, -1.0, 1.0), 0.0);
      const Tensor a = operand(a_varies ? how : "contiguous", DType::Float64, 8, -3.0, 3.0);
      const Tensor b = operand(a_varies ? "contiguous" : how, DType::Float64, 9, -3.0, 3.0);
      const Tensor got = Tensor::empty(kShape, DType::Float64);
      const cu::MapPlan plan = map<uint64_t, bool, uint64_t, uint64_t>(
          cu::copy_detail::Select<uint64_t>{}, got, c, a, b);
      check_path(plan, how);
      const std::vector<double> cv = fg_emu_test::to_vector(c), av = fg_emu_test::to_vector(a),
                                bv = fg_emu_test::to_vector(b), gv = fg_emu_test::to_vector(got);
      for (size_t i = 0; i < gv.size(); ++i) REQUIRE(gv[i] == (cv[i] != 0.0 ? av[i] : bv[i]));
    }
  }
}

namespace {

// copy_fill.cu's fast path: map1 with Convert<To, From>, against the CPU's copy.
template <class DevTo, class DevFrom>
void check_fast_copy(DType from, DType to) {
  Backend& cpu = backend_for(kCPU);
  for (const std::string& how : kLayouts) {
    INFO(std::string(dtype_name(from))
         << " to " << std::string(dtype_name(to)) << ", source " << how);
    // Values with more bits than either type keeps: every element rounds.
    const Tensor src = operand(how, from, 21, -1000.0, 1000.0);
    const Tensor got = Tensor::full(kShape, NAN, to), expected = Tensor::empty(kShape, to);
    check_path(map<DevTo, DevFrom>(cu::copy_detail::Convert<DevTo, DevFrom>{}, got, src), how);
    cpu.copy(src, expected);
    const std::vector<double> g = fg_emu_test::to_vector(got), e = fg_emu_test::to_vector(expected);
    for (size_t i = 0; i < g.size(); ++i) {
      INFO("element " << i << ": " << g[i] << " against " << e[i]);
      REQUIRE(g[i] == e[i]);
    }
  }
}

}  // namespace

TEST_CASE("elementwise kernels (emulated): copy's typed conversions round as the CPU's, bitwise") {
  check_fast_copy<cu::bf16, float>(DType::Float32, DType::BFloat16);
  check_fast_copy<float, cu::bf16>(DType::BFloat16, DType::Float32);
  check_fast_copy<double, float>(DType::Float32, DType::Float64);
  check_fast_copy<float, double>(DType::Float64, DType::Float32);
  // A same-dtype copy between views moves bit patterns (Identity on uint16_t).
  for (const std::string& how : kLayouts) {
    const Tensor src = operand(how, DType::BFloat16, 22, -5.0, 5.0);
    const Tensor got = Tensor::full(kShape, NAN, DType::BFloat16);
    check_path(map<uint16_t, uint16_t>(cu::copy_detail::Identity<uint16_t>{}, got, src), how);
    CHECK(fg_emu_test::to_vector(got) == fg_emu_test::to_vector(src));
  }
}

TEST_CASE("copy kernel (emulated): any dtype to any dtype between strided views, as the CPU") {
  // convert_strided, copy's path for the pairs without a typed one: a
  // transposed source into a contiguous output and into a transposed one.
  // Values stay where every conversion is defined (no negative values into
  // uint8, nothing out of int32's range); fractions truncate toward zero into
  // integers, and 1 + 2^-8 + 2^-30 shows the double rounding through float
  // that the CPU does into bfloat16 and float16 (1, where direct rounding
  // would give 1 + 2^-7). Every fifth value is zero (false as bool).
  const std::vector<DType> all = {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16,
                                  DType::Int32,   DType::Int64,   DType::UInt8,    DType::Bool};
  const int64_t rows = 9, cols = 31;  // 279 elements over 2 x 64 threads: every thread loops
  Backend& cpu = backend_for(kCPU);
  for (DType from : all) {
    for (DType to : all) {
      std::mt19937_64 rng(static_cast<uint64_t>(from) * 16 + static_cast<uint64_t>(to));
      const bool unsigned_only = from == DType::UInt8 || to == DType::UInt8;
      std::uniform_real_distribution<double> dist(unsigned_only ? 0.0 : -120.0, 250.0);
      std::vector<double> v;
      for (int64_t i = 0; i < rows * cols; ++i) v.push_back(i % 5 == 0 ? 0.0 : dist(rng));
      v[1] = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30);
      const Tensor src = Tensor::from_vector(v, {cols, rows}).to(from).transpose(0, 1);
      for (bool transposed_out : {false, true}) {
        INFO(std::string(dtype_name(from)) << " to " << std::string(dtype_name(to))
                                           << (transposed_out ? ", transposed output" : ""));
        const Tensor got = transposed_out ? Tensor::zeros({cols, rows}, to).transpose(0, 1)
                                          : Tensor::zeros({rows, cols}, to);
        const Tensor expected = Tensor::empty({rows, cols}, to);
        const auto ix = cu::make_indexer<2>(got.shape(), {&got, &src});
        fg_emu::launch(dim3(kGrid), dim3(64), 0, cu::copy_detail::convert_strided, got.data_ptr(),
                       got.dtype(), src.data_ptr(), src.dtype(), ix);
        cpu.copy(src, expected);
        const std::vector<double> g = fg_emu_test::to_vector(got),
                                  e = fg_emu_test::to_vector(expected);
        for (size_t i = 0; i < g.size(); ++i) {
          INFO("element " << i << ": " << g[i] << " against " << e[i]);
          REQUIRE(g[i] == e[i]);
        }
      }
    }
  }
}
