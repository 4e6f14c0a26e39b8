// Gradient checking against central finite differences in float64.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/ops.h"

namespace fg::testing {

// Random float64 leaf tensors for gradient checks.
inline Tensor random_input(const Shape& shape, uint64_t seed, double low = -1.0, double high = 1.0) {
  Generator gen(seed);
  return rand(shape, gen, low, high, DType::Float64);
}

struct GradCheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-6;
};

// Checks d(sum(f(inputs) * w))/d(inputs) for a random w against central
// differences of the same scalar. The projection w makes every output element
// count with a different weight, so a transposed or mis-scaled gradient fails.
// Returns an empty string when every gradient matches, else the first mismatch.
inline std::string gradient_mismatch(const std::string& name,
                                     const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                     std::vector<Tensor> inputs, GradCheckOptions options = {}) {
  for (Tensor& t : inputs) {
    REQUIRE(t.dtype() == DType::Float64);
    t = t.detach().contiguous().clone().detach();
    t.set_requires_grad(true);
  }
  Tensor out = f(inputs);
  REQUIRE(out.dtype() == DType::Float64);
  Generator gen(12345);
  const Tensor weights = rand(out.shape(), gen, 0.5, 1.5, DType::Float64);
  Tensor loss = sum(mul(out, weights));
  loss.backward();

  auto scalar = [&]() {
    NoGradGuard no_grad;
    return sum(mul(f(inputs), weights)).item();
  };
  for (size_t i = 0; i < inputs.size(); ++i) {
    // An input the function ignores gets no gradient; it must then be zero numerically.
    const Tensor analytic = inputs[i].grad().defined()
                                ? inputs[i].grad()
                                : Tensor::zeros(inputs[i].shape(), DType::Float64);
    REQUIRE(analytic.shape() == inputs[i].shape());
    const std::vector<double> a = analytic.to_vector<double>();
    double* x = inputs[i].data<double>();
    for (int64_t j = 0; j < inputs[i].numel(); ++j) {
      const double saved = x[j];
      x[j] = saved + options.eps;
      const double plus = scalar();
      x[j] = saved - options.eps;
      const double minus = scalar();
      x[j] = saved;
      const double numeric = (plus - minus) / (2 * options.eps);
      const double err = std::abs(a[j] - numeric);
      if (!(err <= options.atol + options.rtol * std::abs(numeric))) {
        return str_cat(name, ": input ", i, " element ", j, ": analytic ", a[j], " numeric ",
                       numeric);
      }
    }
  }
  return "";
}

inline void check_gradients(const std::string& name,
                            const std::function<Tensor(const std::vector<Tensor>&)>& f,
                            const std::vector<Tensor>& inputs, GradCheckOptions options = {}) {
  const std::string mismatch = gradient_mismatch(name, f, inputs, options);
  CHECK_MESSAGE(mismatch.empty(), mismatch);
}

}  // namespace fg::testing
