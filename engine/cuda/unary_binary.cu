// Unary and binary elementwise ops with the CPU backend's semantics (see
// engine/cpu/elementwise.cpp): the checks, the dtype dispatch and the launches
// of the functors in elementwise_ops.cuh.
#include "engine/cuda/elementwise.cuh"
#include "engine/cuda/elementwise_ops.cuh"
#include "engine/cuda/kernels.h"

namespace fg::cuda {

namespace {

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg:
      return "neg";
    case UnaryOp::Exp:
      return "exp";
    case UnaryOp::Log:
      return "log";
    case UnaryOp::Sqrt:
      return "sqrt";
    case UnaryOp::Rsqrt:
      return "rsqrt";
    case UnaryOp::Relu:
      return "relu";
    case UnaryOp::Gelu:
      return "gelu";
    case UnaryOp::Tanh:
      return "tanh";
    case UnaryOp::Sigmoid:
      return "sigmoid";
    case UnaryOp::Abs:
      return "abs";
    case UnaryOp::Reciprocal:
      return "reciprocal";
    case UnaryOp::Square:
      return "square";
    case UnaryOp::LogicalNot:
      return "logical_not";
  }
  return "unary op";
}

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add:
      return "add";
    case BinaryOp::Sub:
      return "sub";
    case BinaryOp::Mul:
      return "mul";
    case BinaryOp::Div:
      return "div";
    case BinaryOp::Maximum:
      return "maximum";
    case BinaryOp::Minimum:
      return "minimum";
    case BinaryOp::Pow:
      return "pow";
    case BinaryOp::Eq:
      return "eq";
    case BinaryOp::Ne:
      return "ne";
    case BinaryOp::Lt:
      return "lt";
    case BinaryOp::Le:
      return "le";
    case BinaryOp::Gt:
      return "gt";
    case BinaryOp::Ge:
      return "ge";
    case BinaryOp::LogicalAnd:
      return "logical_and";
    case BinaryOp::LogicalOr:
      return "logical_or";
    case BinaryOp::ReluBackward:
      return "relu_backward";
    case BinaryOp::GeluBackward:
      return "gelu_backward";
  }
  return "binary op";
}

template <class T>
void binary_typed(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* name = binary_name(op);
  if (is_comparison(op)) {
    FG_CHECK(out.dtype() == DType::Bool, name, ": output must be bool");
    launch_map<bool, T, T>(name, ComparisonFn<T>{op}, out, a, b);
    return;
  }
  if constexpr (std::is_same_v<T, bool>) {
    FG_CHECK(false, "arithmetic on bool tensors; convert with .to() first");
  } else {
    if constexpr (!std::is_floating_point_v<compute_t<T>>) {
      FG_CHECK(op != BinaryOp::Pow && op != BinaryOp::GeluBackward, name,
               ": needs a floating dtype");
    }
    launch_map<T, T, T>(name, ArithmeticFn<T>{op}, out, a, b);
  }
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  const char* name = unary_name(op);
  FG_CHECK(x.shape() == out.shape(), name, ": shapes differ");
  if (op == UnaryOp::LogicalNot) {
    FG_CHECK(out.dtype() == DType::Bool, name, ": output must be bool");
    FG_CUDA_DISPATCH_ALL(x.dtype(), name, [&] {
      launch_map<bool, scalar_t>(name, LogicalNotFn<scalar_t>{}, out, x);
    });
    return;
  }
  FG_CHECK(x.dtype() == out.dtype(), name, ": input ", dtype_name(x.dtype()), " and output ",
           dtype_name(out.dtype()), " differ");
  if (x.dtype() == DType::Int64 && (op == UnaryOp::Neg || op == UnaryOp::Abs)) {
    if (op == UnaryOp::Neg)
      launch_map<int64_t, int64_t>(name, NegInt64Fn{}, out, x);
    else
      launch_map<int64_t, int64_t>(name, AbsInt64Fn{}, out, x);
    return;
  }
  FG_CUDA_DISPATCH_FLOATING(x.dtype(), name, [&] {
    launch_map<scalar_t, scalar_t>(name, UnaryFloatFn<scalar_t>{op}, out, x);
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  if (a.dtype() != b.dtype() && out.dtype() == DType::BFloat16 && !is_comparison(op) &&
      ((a.dtype() == DType::BFloat16 && b.dtype() == DType::Float32) ||
       (a.dtype() == DType::Float32 && b.dtype() == DType::BFloat16))) {
    // A bfloat16 tensor with a float32 operand (a scalar kept at float precision):
    // computed in float, rounded once.
    FG_CHECK(a.shape() == out.shape() && b.shape() == out.shape(), binary_name(op),
             ": operands must be broadcast to the output's shape");
    if (a.dtype() == DType::BFloat16)
      launch_map<bf16, bf16, float>(binary_name(op), ArithmeticFn<bf16>{op}, out, a, b);
    else
      launch_map<bf16, float, bf16>(binary_name(op), ArithmeticFn<bf16>{op}, out, a, b);
    return;
  }
  FG_CHECK(a.dtype() == b.dtype(), binary_name(op), ": operand dtypes differ (",
           dtype_name(a.dtype()), " and ", dtype_name(b.dtype()), ")");
  FG_CHECK(a.shape() == out.shape() && b.shape() == out.shape(), binary_name(op),
           ": operands must be broadcast to the output's shape");
  switch (a.dtype()) {
    case DType::Float32:
      binary_typed<float>(op, a, b, out);
      break;
    case DType::Float64:
      binary_typed<double>(op, a, b, out);
      break;
    case DType::BFloat16:
      binary_typed<bf16>(op, a, b, out);
      break;
    case DType::Int64:
      binary_typed<int64_t>(op, a, b, out);
      break;
    case DType::Int32:
      binary_typed<int32_t>(op, a, b, out);
      break;
    case DType::UInt8:
      binary_typed<uint8_t>(op, a, b, out);
      break;
    case DType::Bool:
      binary_typed<bool>(op, a, b, out);
      break;
    default:
      FG_CHECK(false, binary_name(op), ": dtype ", dtype_name(a.dtype()),
               " is not supported on CUDA (convert with .to(float32))");
  }
}

}  // namespace fg::cuda
