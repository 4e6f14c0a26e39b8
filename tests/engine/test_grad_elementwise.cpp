// Gradient checks of elementwise ops, including broadcasting, size-1 and
// non-contiguous inputs.
#include <doctest/doctest.h>

#include "gradcheck.h"

using namespace fg;
using fg::testing::check_gradients;
using fg::testing::random_input;
using Inputs = std::vector<Tensor>;

namespace {

// Broadcasting shape pairs, including size-1 dimensions and rank differences.
const std::vector<std::pair<Shape, Shape>> kShapePairs = {
    {{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{2, 1, 4}, {3, 1}}, {{1}, {2, 3}}, {{2, 3}, {}}};

}  // namespace

TEST_CASE("grad: add, sub, mul, div with broadcasting") {
  for (const auto& [sa, sb] : kShapePairs) {
    Inputs in = {random_input(sa, 1), random_input(sb, 2, 0.5, 1.5)};
    check_gradients("add", [](const Inputs& x) { return add(x[0], x[1]); }, in);
    check_gradients("sub", [](const Inputs& x) { return sub(x[0], x[1]); }, in);
    check_gradients("mul", [](const Inputs& x) { return mul(x[0], x[1]); }, in);
    check_gradients("div", [](const Inputs& x) { return div(x[0], x[1]); }, in);
    check_gradients("div (other order)", [](const Inputs& x) { return div(x[1], abs(x[0]) + 0.5); }, in);
  }
}

TEST_CASE("grad: ops with a scalar") {
  Inputs in = {random_input({2, 5}, 3, 0.5, 2.0)};
  check_gradients("add scalar", [](const Inputs& x) { return x[0] + 1.5; }, in);
  check_gradients("sub scalar", [](const Inputs& x) { return 2.0 - x[0]; }, in);
  check_gradients("mul scalar", [](const Inputs& x) { return x[0] * -3.0; }, in);
  check_gradients("div scalar", [](const Inputs& x) { return x[0] / 4.0; }, in);
  check_gradients("pow", [](const Inputs& x) { return pow(x[0], 2.5); }, in);
}

TEST_CASE("grad: unary ops") {
  Inputs any = {random_input({3, 7}, 4, -2.0, 2.0)};
  Inputs positive = {random_input({3, 7}, 5, 0.2, 3.0)};
  check_gradients("neg", [](const Inputs& x) { return neg(x[0]); }, any);
  check_gradients("exp", [](const Inputs& x) { return exp(x[0]); }, any);
  check_gradients("log", [](const Inputs& x) { return log(x[0]); }, positive);
  check_gradients("sqrt", [](const Inputs& x) { return sqrt(x[0]); }, positive);
  check_gradients("rsqrt", [](const Inputs& x) { return rsqrt(x[0]); }, positive);
  check_gradients("relu", [](const Inputs& x) { return relu(x[0]); }, any);
  check_gradients("gelu", [](const Inputs& x) { return gelu(x[0]); }, any);
  check_gradients("tanh", [](const Inputs& x) { return tanh(x[0]); }, any);
  check_gradients("sigmoid", [](const Inputs& x) { return sigmoid(x[0]); }, any);
  check_gradients("abs", [](const Inputs& x) { return abs(x[0]); }, any);
  check_gradients("square", [](const Inputs& x) { return square(x[0]); }, any);
}

TEST_CASE("grad: non-contiguous inputs") {
  Inputs in = {random_input({4, 3}, 6), random_input({3, 4}, 7)};
  // x[0]^T is a transposed view; x[1] sliced with a step is strided.
  check_gradients("mul of transposed", [](const Inputs& x) { return mul(x[0].transpose(0, 1), x[1]); }, in);
  check_gradients("exp of strided slice", [](const Inputs& x) { return exp(x[1].slice(1, 0, 4, 2)); }, in);
  check_gradients("add of permuted views",
                  [](const Inputs& x) { return add(x[0].permute({1, 0}), x[1].unsqueeze(0)); }, in);
}

TEST_CASE("grad: maximum, minimum, where, masked_fill") {
  Inputs in = {random_input({3, 4}, 8), random_input({4}, 9)};
  check_gradients("maximum", [](const Inputs& x) { return maximum(x[0], x[1]); }, in);
  check_gradients("minimum", [](const Inputs& x) { return minimum(x[0], x[1]); }, in);
  check_gradients("where", [](const Inputs& x) {
    const Tensor cond = gt(x[0].detach(), 0.0);
    return where(cond, x[0], x[1]);
  }, in);
  check_gradients("masked_fill", [](const Inputs& x) {
    return masked_fill(x[0], lt(x[0].detach(), 0.0), 7.0);
  }, in);
}

TEST_CASE("grad: the checker catches a wrong backward") {
  // Gradients off by a factor of 2, or transposed, must be reported.
  Inputs square_in = {random_input({3, 3}, 10)};
  auto doubled = [](const Inputs& x) {
    Tensor out = mul(x[0].detach(), 3.0);
    return record("doubled", out, {x[0]}, [](const Tensor& g, InputGrads& grads) {
      grads.set(0, mul(g, 6.0));  // the true gradient is 3 g
    });
  };
  CHECK_FALSE(fg::testing::gradient_mismatch("doubled", doubled, square_in).empty());
  auto transposed = [](const Inputs& x) {
    Tensor out = mul(x[0].detach(), 3.0);
    return record("transposed", out, {x[0]}, [](const Tensor& g, InputGrads& grads) {
      grads.set(0, mul(g.transpose(0, 1).contiguous(), 3.0));
    });
  };
  CHECK_FALSE(fg::testing::gradient_mismatch("transposed", transposed, square_in).empty());
  auto right = [](const Inputs& x) { return mul(x[0], 3.0); };
  CHECK(fg::testing::gradient_mismatch("right", right, square_in).empty());
}
