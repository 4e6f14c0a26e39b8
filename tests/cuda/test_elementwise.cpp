// CUDA elementwise kernels against the CPU's: copy with conversion between
// every pair of dtypes, fill, unary and binary ops with broadcasting, where,
// strided (view) outputs and in-place updates.
#include <doctest/doctest.h>

#include <cmath>

#include "cuda_test_util.h"

using namespace fg;
using namespace fg::cuda_testing;

namespace {

const std::vector<DType> kAllTypes = {DType::Float32, DType::Float64, DType::BFloat16,
                                      DType::Float16, DType::Int32,   DType::Int64,
                                      DType::UInt8,   DType::Bool};

// Multiples of 0.5 in [0, 120): exact in every floating type and valid for
// every integer type after truncation, so conversions are well defined.
Tensor convertible_values(const Shape& shape, uint64_t seed) {
  NoGradGuard no_grad;
  const Tensor r = random_cpu(shape, seed, 0.0, 240.0, DType::Float64);
  const auto v = r.to_vector<double>();
  std::vector<double> halves(v.size());
  for (size_t i = 0; i < v.size(); ++i) halves[i] = std::floor(v[i]) * 0.5;
  // Some zeros, so bool conversions see both values.
  for (size_t i = 0; i < halves.size(); i += 7) halves[i] = 0.0;
  return Tensor::from_vector(halves, shape);
}

Tensor run_unary(UnaryOp op, const Tensor& x, DType out_dtype) {
  Tensor out = Tensor::empty(x.shape(), out_dtype, x.device());
  backend_of(x).unary(op, x, out);
  return out;
}

Tensor run_binary(BinaryOp op, const Tensor& a, const Tensor& b, const Shape& shape,
                  DType out_dtype) {
  NoGradGuard no_grad;
  Tensor out = Tensor::empty(shape, out_dtype, a.device());
  backend_of(a).binary(op, a.expand(shape), b.expand(shape), out);
  return out;
}

}  // namespace

TEST_CASE("cuda: copy converts between every pair of dtypes, contiguous and strided") {
  FG_SKIP_WITHOUT_GPU();
  const Tensor base = convertible_values({37, 29}, 11);
  for (DType from : kAllTypes) {
    const Tensor cpu_src = base.to(from);
    const Tensor gpu_src = on_gpu(cpu_src);
    for (DType to : kAllTypes) {
      const std::string what = std::string(dtype_name(from)) + " -> " + dtype_name(to);
      check_equal(gpu_src.to(to), cpu_src.to(to), what + " (contiguous)");
      check_equal(gpu_src.transpose(0, 1).to(to), cpu_src.transpose(0, 1).to(to),
                  what + " (transposed)");
      check_equal(gpu_src.slice(1, 3, 20, 4).to(to), cpu_src.slice(1, 3, 20, 4).to(to),
                  what + " (sliced with a step)");
    }
  }
}

TEST_CASE("cuda: rounding to 16-bit floats is the CPU's, ties to even, subnormals and overflow included") {
  FG_SKIP_WITHOUT_GPU();
  // Values that 16-bit types do not hold: random ones over many magnitudes, and
  // exact ties between two neighbours (bf16: 1 + 2^-8 lies halfway between 1 and
  // 1 + 2^-7; float16: 1 + 2^-11 between 1 and 1 + 2^-10), tiny and huge values.
  std::vector<double> values;
  const auto r = random_cpu({4000}, 19, -1.0, 1.0, DType::Float64).to_vector<double>();
  for (size_t i = 0; i < r.size(); ++i) values.push_back(r[i] * std::pow(10.0, static_cast<double>(i % 20) - 10.0));
  for (double tie : {1.0 + std::ldexp(1.0, -8), 1.0 + 3 * std::ldexp(1.0, -8), 1.0 + std::ldexp(1.0, -11),
                     1.0 + 3 * std::ldexp(1.0, -11), 1e-8, 6e-8, 65504.0, 65520.0, 70000.0, 3.4e38})
    for (double sign : {1.0, -1.0}) values.push_back(sign * tie);
  const Tensor cpu32 = Tensor::from_vector(values, {static_cast<int64_t>(values.size())}).to(DType::Float32);
  const Tensor gpu32 = on_gpu(cpu32);
  for (DType to : {DType::BFloat16, DType::Float16}) {
    const std::string what = std::string("float32 -> ") + dtype_name(to);
    check_equal(gpu32.to(to), cpu32.to(to), what);
  }
}

TEST_CASE("cuda: copy_ into strided views and broadcast sources leaves the rest untouched") {
  FG_SKIP_WITHOUT_GPU();
  for (DType dtype : {DType::Float32, DType::BFloat16, DType::Int64, DType::Bool}) {
    const Tensor cpu_dst = convertible_values({8, 33}, 3).to(dtype);
    Tensor gpu_dst = on_gpu(cpu_dst);
    const Tensor cpu_src = convertible_values({4, 33}, 4).to(dtype);
    const Tensor gpu_src = on_gpu(cpu_src);
    copy_(cpu_dst.slice(0, 1, 8, 2), cpu_src);
    copy_(gpu_dst.slice(0, 1, 8, 2), gpu_src);
    check_equal(gpu_dst, cpu_dst, std::string("copy_ into every other row, ") + dtype_name(dtype));
    const Tensor cpu_row = convertible_values({33}, 5).to(dtype);
    copy_(cpu_dst.slice(1, 2, 30), cpu_row.slice(0, 0, 28).unsqueeze(0));
    copy_(gpu_dst.slice(1, 2, 30), on_gpu(cpu_row).slice(0, 0, 28).unsqueeze(0));
    check_equal(gpu_dst, cpu_dst, std::string("broadcast row into columns, ") + dtype_name(dtype));
  }
}

TEST_CASE("cuda: fill writes every element of every dtype, also through views") {
  FG_SKIP_WITHOUT_GPU();
  for (DType dtype : kAllTypes) {
    for (double value : {0.0, 1.0, 3.5, 77.0}) {
      const std::string what =
          std::string("fill ") + dtype_name(dtype) + " with " + std::to_string(value);
      check_equal(Tensor::full({1000, 3}, value, dtype, kCUDA),
                  Tensor::full({1000, 3}, value, dtype), what);
      Tensor gpu = on_gpu(convertible_values({6, 9}, 8).to(dtype));
      Tensor cpu = convertible_values({6, 9}, 8).to(dtype);
      fill_(gpu.slice(1, 1, 9, 3), value);
      fill_(cpu.slice(1, 1, 9, 3), value);
      check_equal(gpu, cpu, what + " through a view");
    }
  }
}

TEST_CASE("cuda: unary ops match the CPU in float32, float64 and bfloat16") {
  FG_SKIP_WITHOUT_GPU();
  const std::vector<UnaryOp> ops = {UnaryOp::Neg,  UnaryOp::Exp,        UnaryOp::Log,
                                    UnaryOp::Sqrt, UnaryOp::Rsqrt,      UnaryOp::Relu,
                                    UnaryOp::Gelu, UnaryOp::Tanh,       UnaryOp::Sigmoid,
                                    UnaryOp::Abs,  UnaryOp::Reciprocal, UnaryOp::Square};
  const std::vector<Shape> shapes = {{1}, {3}, {1000}, {4097}, {(1 << 20) + 3}, {33, 65}};
  for (UnaryOp op : ops) {
    const bool positive = op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt ||
                          op == UnaryOp::Reciprocal;
    for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16}) {
      for (const Shape& shape : shapes) {
        const std::string what = "unary op " + std::to_string(static_cast<int>(op)) + ", " +
                                 dtype_name(dtype) + ", shape " + shape_str(shape);
        const Tensor x = random_cpu(shape, 21, positive ? 0.1 : -4.0, 4.0,
                                    dtype == DType::Float64 ? DType::Float64 : DType::Float32);
        const Tensor xr = dtype == DType::BFloat16 ? rounded(x, dtype) : x;
        const Tensor expected = run_unary(op, xr, xr.dtype());
        const Tensor gx = on_gpu(xr.to(dtype));
        check_close(run_unary(op, gx, dtype), expected, rtol_for(dtype), 1e-6, what);
        if (shape.size() == 2) {
          check_close(run_unary(op, gx.transpose(0, 1), dtype),
                      run_unary(op, xr.transpose(0, 1), xr.dtype()), rtol_for(dtype), 1e-6,
                      what + " (transposed input)");
        }
      }
    }
  }
  // Integer negation and absolute value, logical not.
  const Tensor ints = random_cpu({1001}, 5, -50, 50).to(DType::Int64);
  check_equal(run_unary(UnaryOp::Neg, on_gpu(ints), DType::Int64),
              run_unary(UnaryOp::Neg, ints, DType::Int64), "neg int64");
  check_equal(run_unary(UnaryOp::Abs, on_gpu(ints), DType::Int64),
              run_unary(UnaryOp::Abs, ints, DType::Int64), "abs int64");
  const Tensor mask = gt(random_cpu({1001}, 6), 0.0);
  check_equal(logical_not(on_gpu(mask)), logical_not(mask), "logical_not bool");
  const Tensor floats = convertible_values({999}, 7);
  check_equal(logical_not(on_gpu(floats)), logical_not(floats), "logical_not float32");
}

TEST_CASE("cuda: binary ops match the CPU for every dtype with broadcasting") {
  FG_SKIP_WITHOUT_GPU();
  const std::vector<BinaryOp> arithmetic = {
      BinaryOp::Add, BinaryOp::Sub,          BinaryOp::Mul,
      BinaryOp::Div, BinaryOp::Maximum,      BinaryOp::Minimum,
      BinaryOp::Pow, BinaryOp::ReluBackward, BinaryOp::GeluBackward};
  const std::vector<BinaryOp> comparisons = {BinaryOp::Eq,         BinaryOp::Ne,       BinaryOp::Lt,
                                             BinaryOp::Le,         BinaryOp::Gt,       BinaryOp::Ge,
                                             BinaryOp::LogicalAnd, BinaryOp::LogicalOr};
  struct Case {
    Shape a, b, out;
  };
  const std::vector<Case> cases = {
      {{4097}, {4097}, {4097}}, {{3, 1, 5}, {1, 4, 5}, {3, 4, 5}}, {{1000, 37}, {37}, {1000, 37}},
      {{2, 3}, {}, {2, 3}},     {{}, {129, 3}, {129, 3}},          {{1}, {1}, {1}}};
  for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Int64, DType::Int32,
                      DType::UInt8}) {
    const bool floating = is_floating(dtype);
    const DType cpu_type = dtype == DType::BFloat16 ? DType::Float32 : dtype;
    for (const Case& c : cases) {
      // Integers stay small and b stays away from zero (integer division).
      const double lo = floating ? 0.25 : 1.0, hi = floating ? 3.0 : 20.0;
      Tensor a = random_cpu(c.a, 31, floating ? -3.0 : 0.0, hi, DType::Float64);
      Tensor b = random_cpu(c.b, 32, lo, hi, DType::Float64);
      if (!floating) {
        a = a.to(DType::Int64).to(DType::Float64);
        b = b.to(DType::Int64).to(DType::Float64);
      }
      const Tensor ca = a.to(dtype).to(cpu_type), cb = b.to(dtype).to(cpu_type);
      const Tensor ga = on_gpu(a.to(dtype)), gb = on_gpu(b.to(dtype));
      for (BinaryOp op : arithmetic) {
        if (!floating && (op == BinaryOp::Pow || op == BinaryOp::GeluBackward)) continue;
        // Pow needs a positive base.
        const Tensor base_cpu = op == BinaryOp::Pow ? cb : ca;
        const Tensor base_gpu = op == BinaryOp::Pow ? gb : ga;
        const std::string what = std::string("binary op ") + std::to_string(static_cast<int>(op)) +
                                 ", " + dtype_name(dtype) + ", " + shape_str(c.a) + " with " +
                                 shape_str(c.b);
        const Tensor expected = run_binary(op, base_cpu, cb, c.out, cpu_type);
        const Tensor got = run_binary(op, base_gpu, gb, c.out, dtype);
        if (floating)
          check_close(got, expected, rtol_for(dtype), 1e-6, what);
        else
          check_equal(got, expected, what);
      }
      for (BinaryOp op : comparisons) {
        const std::string what = std::string("comparison ") + std::to_string(static_cast<int>(op)) +
                                 ", " + dtype_name(dtype) + ", " + shape_str(c.a) + " with " +
                                 shape_str(c.b);
        check_equal(run_binary(op, ga, gb, c.out, DType::Bool),
                    run_binary(op, ca, cb, c.out, DType::Bool), what);
      }
    }
  }
  // Bool operands: comparisons and logical ops only.
  const Tensor p = gt(random_cpu({77}, 1), 0.0), q = gt(random_cpu({77}, 2), 0.0);
  check_equal(logical_and(on_gpu(p), on_gpu(q)), logical_and(p, q), "logical_and bool");
  check_equal(logical_or(on_gpu(p), on_gpu(q)), logical_or(p, q), "logical_or bool");
  check_equal(eq(on_gpu(p), on_gpu(q)), eq(p, q), "eq bool");
  CHECK_THROWS_AS(add(on_gpu(p), on_gpu(q)), fg::Error);
  // float16 computes nowhere: a clear error, not a wrong answer.
  const Tensor h = on_gpu(random_cpu({5}, 3).to(DType::Float16));
  CHECK_THROWS_AS(add(h, h), fg::Error);
}

TEST_CASE("cuda: where selects with broadcasting for every element size") {
  FG_SKIP_WITHOUT_GPU();
  const Tensor cond = gt(random_cpu({5, 1, 7}, 41), 0.0);
  for (DType dtype : kAllTypes) {
    const Tensor a = convertible_values({5, 6, 7}, 42).to(dtype);
    const Tensor b = convertible_values({6, 1}, 43).to(dtype);
    check_equal(where(on_gpu(cond), on_gpu(a), on_gpu(b)), where(cond, a, b),
                std::string("where ") + dtype_name(dtype));
  }
}

TEST_CASE("cuda: in-place updates through transposed views and public ops with promotion") {
  FG_SKIP_WITHOUT_GPU();
  Tensor cpu = random_cpu({9, 14}, 51);
  Tensor gpu = on_gpu(cpu);
  const Tensor src = random_cpu({14, 9}, 52);
  add_(cpu.transpose(0, 1), src, 0.5);
  add_(gpu.transpose(0, 1), on_gpu(src), 0.5);
  check_close(gpu, cpu, 1e-6, 1e-7, "add_ into a transposed view");
  mul_(cpu.slice(0, 2, 9, 3), 3.0);
  mul_(gpu.slice(0, 2, 9, 3), 3.0);
  check_close(gpu, cpu, 1e-6, 1e-7, "mul_ into a sliced view");
  // Mixed dtypes promote (bfloat16 + float32 -> float32), scalars broadcast.
  const Tensor x = rounded(random_cpu({3, 130}, 53), DType::BFloat16);
  const Tensor y = random_cpu({130}, 54);
  const Tensor got = add(mul(on_gpu(x.to(DType::BFloat16)), 2.0), on_gpu(y));
  CHECK(got.dtype() == DType::Float32);
  check_close(got, add(mul(x, 2.0), y), 1e-6, 1e-6, "bfloat16 * 2 + float32");
}

TEST_CASE("cuda: bfloat16 tensors with numbers compute in float and round once, dropout too") {
  FG_SKIP_WITHOUT_GPU();
  // x holds bfloat16 values; the reference is the CPU's float32 arithmetic on the
  // same values with the number as a float, rounded to bfloat16 once, as PyTorch
  // computes a bfloat16 tensor with a Python number. Rounding the number to
  // bfloat16 first (1 / 0.9 -> 1.109375) changes many of these results.
  const Tensor x32 = rounded(random_cpu({7, 33}, 91, -3.0, 3.0), DType::BFloat16);
  const Tensor x = on_gpu(x32.to(DType::BFloat16));
  auto once = [](const Tensor& f32) { return rounded(f32, DType::BFloat16); };
  auto same = [](const Tensor& got, const Tensor& expected, const std::string& what) {
    CHECK(got.dtype() == DType::BFloat16);
    check_close(got.to(DType::Float32), expected, 0.0, 0.0, what);
  };
  const double s = 1.0 / 0.9;
  same(mul(x, s), once(mul(x32, s)), "mul");
  same(add(x, 0.3), once(add(x32, 0.3)), "add");
  same(sub(x, 0.3), once(sub(x32, 0.3)), "sub");
  same(rsub(0.3, x), once(rsub(0.3, x32)), "rsub");
  same(div(x, 3.0), once(div(x32, 3.0)), "div");
  Tensor inplace = x.clone();
  mul_(inplace, s);
  same(inplace, once(mul(x32, s)), "mul_");

  // Dropout: the same keep pattern as the CPU's float32 dropout (same Philox
  // words), each kept value times 1/(1-p) in float, rounded once.
  Generator gpu_gen(5), cpu_gen(5);
  const Tensor dropped = dropout(x, 0.1, true, gpu_gen);
  same(dropped, once(dropout(x32, 0.1, true, cpu_gen)), "dropout");
  CHECK(gpu_gen.offset() == cpu_gen.offset());
  // Its gradient: the upstream gradient on the kept entries times 1/(1-p), rounded once.
  Tensor leaf = x.clone();
  leaf.set_requires_grad(true);
  Generator again(5);
  const Tensor g32 = rounded(random_cpu({7, 33}, 92), DType::BFloat16);
  sum(mul(dropout(leaf, 0.1, true, again), on_gpu(g32.to(DType::BFloat16)))).backward();
  Generator cpu_again(5);
  const Tensor keep = ne(dropout(Tensor::ones({7, 33}), 0.1, true, cpu_again), 0.0);
  same(leaf.grad(), once(mul(where(keep, g32, 0.0), s)), "dropout backward");

  // relu_dropout: the same keep pattern after the ReLU, and a gradient that
  // passes where the output is positive, both as the CPU's float32 rounded once.
  for (const Shape& shape : {Shape{7, 33}, Shape{3, 196, 2048}}) {
    const Tensor h32 = rounded(random_cpu(shape, 93, -3.0, 3.0), DType::BFloat16);
    const Tensor gh32 = rounded(random_cpu(shape, 94), DType::BFloat16);
    Tensor h = on_gpu(h32.to(DType::BFloat16));
    h.set_requires_grad(true);
    Generator gpu_relu(6), cpu_relu(6);
    const Tensor y = relu_dropout(h, 0.1, true, gpu_relu);
    Tensor h_cpu = h32.clone();
    h_cpu.set_requires_grad(true);
    const Tensor y_cpu = relu_dropout(h_cpu, 0.1, true, cpu_relu);
    same(y, once(y_cpu), "relu_dropout " + shape_str(shape));
    sum(mul(y, on_gpu(gh32.to(DType::BFloat16)))).backward();
    sum(mul(y_cpu, gh32)).backward();
    same(h.grad(), once(h_cpu.grad()), "relu_dropout backward " + shape_str(shape));
  }
}
