// The autograd machinery: accumulation, no_grad, detach, freeing the graph.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/ops.h"

using namespace fg;

TEST_CASE("autograd: gradients accumulate into leaves across backward calls") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3}, {3});
  x.set_requires_grad();
  sum(mul(x, x)).backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{2, 4, 6});
  sum(mul(x, 3.0)).backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{5, 7, 9});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("autograd: a tensor used twice receives both contributions") {
  Tensor x = Tensor::from_vector<double>({2}, {1});
  x.set_requires_grad();
  const Tensor y = add(mul(x, x), exp(x));  // dy/dx = 2x + e^x
  y.backward(Tensor::ones({1}, DType::Float64));
  CHECK(x.grad().item() == doctest::Approx(4 + std::exp(2.0)));
}

TEST_CASE("autograd: shared gradient tensors do not alias leaf gradients") {
  Tensor a = Tensor::from_vector<double>({1, 1}, {2});
  Tensor b = Tensor::from_vector<double>({1, 1}, {2});
  a.set_requires_grad();
  b.set_requires_grad();
  sum(add(a, b)).backward();  // add hands the same gradient to both
  sum(mul(a, 5.0)).backward();
  CHECK(a.grad().to_vector<double>() == std::vector<double>{6, 6});
  CHECK(b.grad().to_vector<double>() == std::vector<double>{1, 1});
}

TEST_CASE("autograd: no_grad records nothing; detach cuts the graph") {
  Tensor x = Tensor::ones({2}, DType::Float64);
  x.set_requires_grad();
  {
    NoGradGuard guard;
    const Tensor y = mul(x, 2.0);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
  }
  CHECK(grad_enabled());
  const Tensor y = mul(x, 2.0);
  CHECK(y.requires_grad());
  CHECK_FALSE(y.detach().requires_grad());
  CHECK(y.detach().storage() == y.storage());
  const Tensor z = add(y.detach(), x);
  sum(z).backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{1, 1});
}

TEST_CASE("autograd: the graph is freed after backward") {
  Tensor x = Tensor::ones({3}, DType::Float64);
  x.set_requires_grad();
  const Tensor y = sum(exp(x));
  std::weak_ptr<Node> node = y.grad_fn();
  y.backward();
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("second time"), Error);
  CHECK(node.lock()->released());
}

TEST_CASE("autograd: backward needs a scalar or an explicit gradient") {
  Tensor x = Tensor::ones({3}, DType::Float64);
  x.set_requires_grad();
  CHECK_THROWS_WITH_AS(mul(x, 2.0).backward(), doctest::Contains("one-element"), Error);
  CHECK_THROWS_AS(Tensor::ones({2}).backward(), Error);
  CHECK_THROWS_WITH_AS(Tensor::ones({2}, DType::Int64).set_requires_grad(), doctest::Contains("floating"), Error);
}

TEST_CASE("autograd: in-place updates of tracked tensors are refused") {
  Tensor x = Tensor::ones({2});
  x.set_requires_grad();
  CHECK_THROWS_WITH_AS(add_(x, Tensor::ones({2})), doctest::Contains("in-place"), Error);
  NoGradGuard guard;
  add_(x, Tensor::ones({2}), 2.0);
  CHECK(x.to_vector<float>() == std::vector<float>{3, 3});
}

TEST_CASE("autograd: the grad-ready hook sees every leaf once per backward") {
  Tensor a = Tensor::ones({2}, DType::Float64), b = Tensor::ones({2}, DType::Float64);
  a.set_requires_grad();
  b.set_requires_grad();
  int calls = 0;
  set_grad_ready_hook([&](TensorImpl*) { ++calls; });
  sum(mul(a, b)).backward();
  set_grad_ready_hook(nullptr);
  CHECK(calls == 2);
}

TEST_CASE("autograd: the grad-ready hook fires once, when a reused leaf's gradient is final") {
  Tensor a = Tensor::ones({2}, DType::Float64), b = Tensor::full({2}, 3.0, DType::Float64);
  a.set_requires_grad();
  b.set_requires_grad();
  std::vector<std::pair<TensorImpl*, double>> seen;
  set_grad_ready_hook([&](TensorImpl* leaf) { seen.emplace_back(leaf, leaf->grad.to_vector<double>()[0]); });
  // a feeds two nodes far apart in the graph: d(sum(a*b + a))/da = b + 1 = 4.
  sum(add(mul(a, b), a)).backward();
  set_grad_ready_hook(nullptr);
  REQUIRE(seen.size() == 2);
  for (const auto& [leaf, value] : seen) {
    if (leaf == a.impl()) CHECK(value == 4.0);
    else CHECK(value == 1.0);
  }
}

TEST_CASE("autograd: an explicit gradient of another dtype is cast to the root's, a wrong shape is named") {
  // softmax's backward kernel reads the gradient's memory as the root's dtype.
  Tensor x = Tensor::from_vector<float>({1, 2, 3}, {3});
  x.set_requires_grad();
  softmax(x, -1).backward(Tensor::from_vector<double>({1, 0.5, 2}, {3}));
  CHECK(x.grad().dtype() == DType::Float32);
  Tensor x2 = Tensor::from_vector<float>({1, 2, 3}, {3});
  x2.set_requires_grad();
  softmax(x2, -1).backward(Tensor::from_vector<float>({1, 0.5, 2}, {3}));
  CHECK(x.grad().to_vector<float>() == x2.grad().to_vector<float>());
  Tensor z = Tensor::from_vector<float>({1, 2}, {2});
  z.set_requires_grad();
  CHECK_THROWS_WITH_AS(mul(z, 2.0).backward(Tensor::ones({3})), doctest::Contains("gradient of shape (3,) for a tensor of shape (2,)"),
                       Error);
}
