// The elementwise map kernels (engine/cuda/elementwise_kernels.cuh) with the
// unary and binary ops' functors (engine/cuda/elementwise_ops.cuh), compiled
// for the host and run through the CUDA emulation on CPU tensors' memory,
// launched as elementwise.cuh's launchers do (the header's map_plan picks the
// path), against the CPU backend on the same operands. Every layout the
// launchers tell apart: contiguous (flat, vector accesses), an operand one
// element off alignment (flat, scalar accesses), a broadcast value (flat), a
// broadcast row and a transposed view (strided); the grid is kept small so the
// grid-stride loops and the vector tail run.
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "compare.h"
#include "engine/backend.h"
#include "engine/cuda/elementwise_kernels.cuh"
#include "engine/cuda/elementwise_ops.cuh"
#include "engine/ops.h"
#include "engine/tensor.h"

using namespace fg;
namespace cu = fg::cuda;

namespace {

constexpr unsigned kGrid = 2;  // blocks: fewer than the work, so every thread loops

// elementwise.cuh's launch_map1/2/3 and launch_map0 through the emulation; returns the plan.
template <class R, class A, class F>
cu::MapPlan map1(const Tensor& a, const Tensor& out, F f) {
  const auto ix = cu::make_indexer<2>(out.shape(), {&out, &a});
  R* o = static_cast<R*>(out.data_ptr());
  const A* ap = static_cast<const A*>(a.data_ptr());
  constexpr int VEC = cu::vector_width<R, A>();
  const cu::FlatIn<A> fa{ap, ix.is_broadcast(1)};
  const cu::MapPlan plan = cu::map_plan<VEC>(ix, cu::is_aligned<VEC>(o) && cu::vector_ok<VEC>(fa));
  const dim3 grid(kGrid), block(cu::kElementwiseThreads);
  if (plan.flat)
    fg_emu::launch(grid, block, 0, cu::map1_flat<VEC, R, A, F>, o, fa, ix.numel, plan.vectorized,
                   f);
  else
    fg_emu::launch(grid, block, 0, cu::map1_strided<R, A, F>, o, ap, ix, f);
  return plan;
}

template <class R, class A, class B, class F>
cu::MapPlan map2(const Tensor& a, const Tensor& b, const Tensor& out, F f) {
  const auto ix = cu::make_indexer<3>(out.shape(), {&out, &a, &b});
  R* o = static_cast<R*>(out.data_ptr());
  const A* ap = static_cast<const A*>(a.data_ptr());
  const B* bp = static_cast<const B*>(b.data_ptr());
  constexpr int VEC = cu::vector_width<R, A, B>();
  const cu::FlatIn<A> fa{ap, ix.is_broadcast(1)};
  const cu::FlatIn<B> fb{bp, ix.is_broadcast(2)};
  const cu::MapPlan plan = cu::map_plan<VEC>(
      ix, cu::is_aligned<VEC>(o) && cu::vector_ok<VEC>(fa) && cu::vector_ok<VEC>(fb));
  const dim3 grid(kGrid), block(cu::kElementwiseThreads);
  if (plan.flat)
    fg_emu::launch(grid, block, 0, cu::map2_flat<VEC, R, A, B, F>, o, fa, fb, ix.numel,
                   plan.vectorized, f);
  else
    fg_emu::launch(grid, block, 0, cu::map2_strided<R, A, B, F>, o, ap, bp, ix, f);
  return plan;
}

template <class R, class A, class B, class C, class F>
cu::MapPlan map3(const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& out, F f) {
  const auto ix = cu::make_indexer<4>(out.shape(), {&out, &a, &b, &c});
  R* o = static_cast<R*>(out.data_ptr());
  const A* ap = static_cast<const A*>(a.data_ptr());
  const B* bp = static_cast<const B*>(b.data_ptr());
  const C* cp = static_cast<const C*>(c.data_ptr());
  constexpr int VEC = cu::vector_width<R, A, B, C>();
  const cu::FlatIn<A> fa{ap, ix.is_broadcast(1)};
  const cu::FlatIn<B> fb{bp, ix.is_broadcast(2)};
  const cu::FlatIn<C> fc{cp, ix.is_broadcast(3)};
  const cu::MapPlan plan =
      cu::map_plan<VEC>(ix, cu::is_aligned<VEC>(o) && cu::vector_ok<VEC>(fa) &&
                                cu::vector_ok<VEC>(fb) && cu::vector_ok<VEC>(fc));
  const dim3 grid(kGrid), block(cu::kElementwiseThreads);
  if (plan.flat)
    fg_emu::launch(grid, block, 0, cu::map3_flat<VEC, R, A, B, C, F>, o, fa, fb, fc, ix.numel,
                   plan.vectorized, f);
  else
    fg_emu::launch(grid, block, 0, cu::map3_strided<R, A, B, C, F>, o, ap, bp, cp, ix, f);
  return plan;
}

template <class R, class F>
cu::MapPlan map0(const Tensor& out, F f) {
  const auto ix = cu::make_indexer<1>(out.shape(), {&out});
  R* o = static_cast<R*>(out.data_ptr());
  constexpr int VEC = cu::vector_width<R>();
  const cu::MapPlan plan = cu::map_plan<VEC>(ix, cu::is_aligned<VEC>(o));
  const dim3 grid(kGrid), block(cu::kElementwiseThreads);
  if (plan.flat)
    fg_emu::launch(grid, block, 0, cu::map0_flat<VEC, R, F>, o, ix.numel, plan.vectorized, f);
  else
    fg_emu::launch(grid, block, 0, cu::map0_strided<R, F>, o, ix, f);
  return plan;
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
      v.push_back(dtype == DType::Int64 ? std::round(dist(rng)) : dist(rng));
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
      plan = map2<bool, T, T>(a, b, got, cu::ComparisonFn<T>{op});
    else
      plan = map2<T, T, T>(a, b, got, cu::ArithmeticFn<T>{op});
    check_path(plan, how);
    check_values(got, expected, relative, what);

    const Tensor got_swapped = Tensor::empty(kShape, out_dtype),
                 expected_swapped = cpu_binary(op, b, a, out_dtype);
    if (comparison)
      map2<bool, T, T>(b, a, got_swapped, cu::ComparisonFn<T>{op});
    else
      map2<T, T, T>(b, a, got_swapped, cu::ArithmeticFn<T>{op});
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
    const cu::MapPlan plan = map1<T, T>(x, got, cu::UnaryFloatFn<T>{op});
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

TEST_CASE("elementwise kernels (emulated): a bfloat16 tensor with a float32 operand rounds once") {
  // binary()'s mixed path: launch_map2<bf16, bf16, float> (and the reverse),
  // computed in float and rounded to bfloat16 once, as the CPU does.
  for (const std::string& how : kLayouts) {
    const Tensor a = operand("contiguous", DType::BFloat16, 4, -3.0, 3.0);
    const Tensor b = operand(how, DType::Float32, 5, -3.0, 3.0);
    for (BinaryOp op : {BinaryOp::Mul, BinaryOp::Add, BinaryOp::Div}) {
      const Tensor expected = cpu_binary(op, a, b, DType::BFloat16),
                   got = Tensor::empty(kShape, DType::BFloat16);
      check_path(map2<cu::bf16, cu::bf16, float>(a, b, got, cu::ArithmeticFn<cu::bf16>{op}), how);
      check_values(got, expected, 0.0, "bfloat16 with float32 " + how);
      const Tensor expected2 = cpu_binary(op, b, a, DType::BFloat16),
                   got2 = Tensor::empty(kShape, DType::BFloat16);
      map2<cu::bf16, float, cu::bf16>(b, a, got2, cu::ArithmeticFn<cu::bf16>{op});
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
    map1<int64_t, int64_t>(x, neg, cu::NegInt64Fn{});
    map1<int64_t, int64_t>(x, abs, cu::AbsInt64Fn{});
    map1<bool, int64_t>(x, no, cu::LogicalNotFn<int64_t>{});
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

namespace {

struct Seven {
  __device__ float operator()() const { return 7.5f; }
};
struct Choose {
  __device__ float operator()(bool c, float a, float b) const { return c ? a : b; }
};

}  // namespace

TEST_CASE("elementwise kernels (emulated): no inputs and three inputs, contiguous and strided") {
  // map0 (fill) into a contiguous tensor and into a transposed view; map3
  // (where) with one value in each layout. Expected values
  // are written out here: every element filled, each chosen from a or b.
  for (const std::string how : {"contiguous", "transposed"}) {
    const Tensor base = Tensor::zeros({kShape[1], kShape[0]});
    const Tensor out = how == "contiguous" ? Tensor::zeros(kShape) : base.transpose(0, 1);
    check_path(map0<float>(out, Seven{}), how);
    for (double v : fg_emu_test::to_vector(out)) REQUIRE(v == 7.5);
  }
  for (const std::string& how : kLayouts) {
    const Tensor c = gt(operand("contiguous", DType::Float32, 7, -1.0, 1.0), 0.0);
    const Tensor a = operand(how, DType::Float32, 8, -3.0, 3.0);
    const Tensor b = operand("contiguous", DType::Float32, 9, -3.0, 3.0);
    const Tensor got = Tensor::empty(kShape);
    const cu::MapPlan plan = map3<float, bool, float, float>(c, a, b, got, Choose{});
    check_path(plan, how);
    const std::vector<double> cv = fg_emu_test::to_vector(c), av = fg_emu_test::to_vector(a),
                              bv = fg_emu_test::to_vector(b), gv = fg_emu_test::to_vector(got);
    for (size_t i = 0; i < gv.size(); ++i) REQUIRE(gv[i] == (cv[i] != 0.0 ? av[i] : bv[i]));
  }
}
