// The CPU's fused attention kernel against the composite matmul-softmax-
// dropout-matmul path on the same inputs and generator state (so the same
// dropout masks), forward and backward; the packed multi-head form against
// chunking; and finite-difference gradients of both paths.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/nn/layers.h"
#include "gradcheck.h"

using namespace fg;
using fg::testing::check_gradients;
using fg::testing::random_input;
using Inputs = std::vector<Tensor>;

namespace {

struct Result {
  Tensor out;
  std::vector<Tensor> grads;
};

// Restores the CPU's fused-attention switch on scope exit.
struct FusedSwitch {
  bool saved = cpu_fused_attention();
  explicit FusedSwitch(bool on) { cpu_set_fused_attention(on); }
  ~FusedSwitch() { cpu_set_fused_attention(saved); }
};

// Runs f on fresh leaf copies of the inputs, backpropagates a weighted sum and
// returns the output and every input's gradient.
template <class F>
Result run(const Inputs& inputs, const Tensor& weights, F f) {
  Inputs leaves;
  for (const Tensor& x : inputs) {
    Tensor leaf = x.detach().clone().detach();
    leaf.set_requires_grad(true);
    leaves.push_back(leaf);
  }
  Tensor out = f(leaves);
  sum(mul(out, weights.to(out.dtype()))).backward();
  Result r{out.detach(), {}};
  for (const Tensor& leaf : leaves) r.grads.push_back(leaf.grad());
  return r;
}

void compare(const Result& fused, const Result& composite, double tol, const std::string& what) {
  INFO(what);
  CHECK(max_abs_diff(fused.out, composite.out) < tol);
  REQUIRE(fused.grads.size() == composite.grads.size());
  for (size_t i = 0; i < fused.grads.size(); ++i) {
    INFO("gradient of input " << i);
    REQUIRE(fused.grads[i].defined());
    CHECK(max_abs_diff(fused.grads[i], composite.grads[i]) < tol);
  }
}

double max_abs(const Tensor& t) { return max(abs(t.detach())).item(); }

Tensor random_of(const Shape& shape, uint64_t seed, DType dtype) {
  return random_input(shape, seed, -2.0, 2.0).to(dtype);
}

}  // namespace

TEST_CASE("attention: the CPU's fused kernel equals the composite path, with and without dropout") {
  struct Case {
    Shape q, kv;
  };
  // 4-D heads, 3-D inputs, a key length that is not a multiple of four (the
  // mask's Philox blocks straddle rows) and a single query row.
  const std::vector<Case> cases = {
      {{2, 3, 5, 8}, {2, 3, 7, 8}}, {{3, 6, 4}, {3, 9, 4}}, {{1, 2, 1, 16}, {1, 2, 13, 16}}};
  for (const DType dtype : {DType::Float32, DType::Float64}) {
    const double tol = dtype == DType::Float64 ? 1e-12 : 2e-5;
    for (const Case& c : cases) {
      for (const double p : {0.0, 0.3}) {
        const Inputs in = {random_of(c.q, 1, dtype), random_of(c.kv, 2, dtype),
                           random_of(c.kv, 3, dtype)};
        Shape out_shape = c.q;
        out_shape.back() = c.kv.back();
        const Tensor weights = random_of(out_shape, 4, dtype);
        Generator fused_gen(17), composite_gen(17);
        auto attend = [p](Generator& gen) {
          return [p, &gen](const Inputs& x) {
            return scaled_dot_product_attention(x[0], x[1], x[2], p, p > 0, &gen);
          };
        };
        Result fused, composite;
        {
          FusedSwitch on(true);
          fused = run(in, weights, attend(fused_gen));
        }
        {
          FusedSwitch off(false);
          composite = run(in, weights, attend(composite_gen));
        }
        compare(fused, composite, tol,
                std::string(dtype_name(dtype)) + " q " + shape_str(c.q) + " p " + std::to_string(p));
        CHECK(fused_gen.offset() == composite_gen.offset());
        if (p > 0) {
          // Dropout did drop something: the output differs from the undropped one.
          Generator none(17);
          const Result plain = run(in, weights, [&](const Inputs& x) {
            return scaled_dot_product_attention(x[0], x[1], x[2], 0.0, false, &none);
          });
          CHECK(max_abs_diff(plain.out, fused.out) > 1e-3);
        }
      }
    }
  }
}

TEST_CASE("attention: strided head views from a packed projection, fused and composite") {
  // As MultiheadAttention makes them: heads of a (B, L, 3E) tensor, viewed without copies.
  const Tensor qkv = random_of({2, 6, 3 * 12}, 5, DType::Float32);
  const Tensor weights = random_of({2, 3, 6, 4}, 6, DType::Float32);
  auto heads = [](const Tensor& t) { return t.reshape({2, 6, 3, 4}).transpose(1, 2); };
  auto attend = [&](Generator& gen) {
    return [&](const Inputs& x) {
      const auto parts = chunk(x[0], 3, -1);
      return scaled_dot_product_attention(heads(parts[0]), heads(parts[1]), heads(parts[2]), 0.2,
                                          true, &gen);
    };
  };
  Generator fused_gen(3), composite_gen(3);
  Result fused, composite;
  {
    FusedSwitch on(true);
    fused = run({qkv}, weights, attend(fused_gen));
  }
  {
    FusedSwitch off(false);
    composite = run({qkv}, weights, attend(composite_gen));
  }
  compare(fused, composite, 2e-5, "strided heads");
}

TEST_CASE("attention: packed_attention equals chunking the projection, fused and composite") {
  for (const double p : {0.0, 0.25}) {
    const Tensor qkv = random_of({3, 7, 3 * 8}, 7, DType::Float64);
    const Tensor weights = random_of({3, 7, 8}, 8, DType::Float64);
    Generator packed_gen(11), chunk_gen(11), composite_gen(11);
    const Result packed = run({qkv}, weights, [&](const Inputs& x) {
      return packed_attention(x[0], 2, p, p > 0, &packed_gen);
    });
    const Result chunked = run({qkv}, weights, [&](const Inputs& x) {
      const auto parts = chunk(x[0], 3, -1);
      auto heads = [](const Tensor& t) { return t.reshape({3, 7, 2, 4}).transpose(1, 2); };
      return scaled_dot_product_attention(heads(parts[0]), heads(parts[1]), heads(parts[2]), p,
                                          p > 0, &chunk_gen)
          .transpose(1, 2)
          .reshape({3, 7, 8});
    });
    Result composite;
    {
      FusedSwitch off(false);
      composite = run({qkv}, weights, [&](const Inputs& x) {
        return packed_attention(x[0], 2, p, p > 0, &composite_gen);
      });
    }
    compare(packed, chunked, 1e-12, "packed against chunked, p " + std::to_string(p));
    compare(packed, composite, 1e-12, "packed fused against packed composite, p " + std::to_string(p));
  }
  CHECK_THROWS_WITH_AS(packed_attention(Tensor::zeros({2, 3, 10}), 2),
                       doctest::Contains("(B, L, 3E)"), Error);
  CHECK_THROWS_WITH_AS(packed_attention(Tensor::zeros({2, 3, 12}), 3),
                       doctest::Contains("not divisible"), Error);
}

TEST_CASE("grad: attention, the fused CPU kernel and the composite path") {
  Inputs in = {random_input({2, 3, 5, 4}, 80), random_input({2, 3, 6, 4}, 81),
               random_input({2, 3, 6, 4}, 82)};
  for (const bool fused : {true, false}) {
    FusedSwitch use(fused);
    const std::string path = fused ? "fused" : "composite";
    check_gradients("sdpa " + path,
                    [](const Inputs& x) { return scaled_dot_product_attention(x[0], x[1], x[2]); }, in);
    check_gradients("sdpa with dropout " + path, [](const Inputs& x) {
      Generator gen(5);
      return scaled_dot_product_attention(x[0], x[1], x[2], 0.25, true, &gen);
    }, in);
    check_gradients("packed attention with dropout " + path, [](const Inputs& x) {
      Generator gen(6);
      return packed_attention(x[0], 2, 0.25, true, &gen);
    }, {random_input({2, 5, 12}, 83)});
  }
}

TEST_CASE("attention: MultiheadAttention in training and evaluation, fused against composite") {
  // Same initialization, and the same dropout draws: each layer draws from its own
  // generator, both started from the same seed.
  Generator init(21);
  nn::MultiheadAttention fused_mha(12, 3, 0.1, init);
  Generator init2(21);
  nn::MultiheadAttention composite_mha(12, 3, 0.1, init2);
  const Tensor x = random_of({2, 5, 12}, 9, DType::Float32);
  for (const bool training : {true, false}) {
    fused_mha.train(training);
    composite_mha.train(training);
    const Tensor weights = random_of({2, 5, 12}, 10, DType::Float32);
    const Result fused = run({x}, weights, [&](const Inputs& in) { return fused_mha.forward(in[0]); });
    Result composite;
    {
      FusedSwitch off(false);
      composite = run({x}, weights, [&](const Inputs& in) { return composite_mha.forward(in[0]); });
    }
    compare(fused, composite, 2e-5, training ? "training" : "evaluation");
    const auto fp = fused_mha.named_parameters(), cp = composite_mha.named_parameters();
    REQUIRE(fp.size() == cp.size());
    for (size_t i = 0; i < fp.size(); ++i) {
      INFO(fp[i].first);
      REQUIRE(fp[i].second.grad().defined());
      CHECK(max_abs_diff(fp[i].second.grad(), cp[i].second.grad()) < 2e-5);
      fp[i].second.zero_grad();
      cp[i].second.zero_grad();
    }
  }
}

TEST_CASE("attention: a fused result left without backward frees its graph") {
  // The node saves the forward's output; the returned tensor must not be that same
  // object, or the two would keep each other alive.
  Tensor q = random_of({2, 2, 5, 4}, 12, DType::Float32);
  q.set_requires_grad(true);
  const Tensor qkv = random_of({2, 5, 12}, 13, DType::Float32).set_requires_grad(true);
  std::vector<std::weak_ptr<Node>> nodes;
  {
    const Tensor four_d = scaled_dot_product_attention(q, q, q);
    const Tensor three_d = scaled_dot_product_attention(q.select(1, 0), q.select(1, 0), q.select(1, 0));
    const Tensor packed = packed_attention(qkv, 2);
    for (const Tensor& t : {four_d, three_d, packed}) {
      REQUIRE(t.grad_fn());
      nodes.push_back(t.grad_fn());
    }
  }
  for (const auto& node : nodes) CHECK(node.expired());
}

TEST_CASE("attention: dropout of 1 drops everything on both paths; a probability outside [0, 1] is refused") {
  const Tensor qkv = random_of({2, 5, 12}, 14, DType::Float32);
  for (bool fused : {true, false}) {
    FusedSwitch on(fused);
    Generator gen(9);
    const Tensor packed = packed_attention(qkv, 2, 1.0, true, &gen);
    CHECK(max_abs(packed) == 0.0);
    CHECK(gen.offset() == 0);  // as dropout(x, 1): nothing drawn
    const Tensor q = random_of({2, 2, 5, 4}, 15, DType::Float32);
    CHECK(max_abs(scaled_dot_product_attention(q, q, q, 1.0, true, &gen)) == 0.0);
    CHECK(gen.offset() == 0);
    CHECK_THROWS_WITH_AS(packed_attention(qkv, 2, 1.5, true, &gen),
                         doctest::Contains("must be in [0, 1], got 1.5"), Error);
    CHECK_THROWS_WITH_AS(scaled_dot_product_attention(q, q, q, -0.1, true, &gen),
                         doctest::Contains("must be in [0, 1], got -0.1"), Error);
  }
}

TEST_CASE("attention: a fused forward's backward runs after the fused kernel is switched off") {
  const Tensor qkv = random_of({2, 5, 12}, 16, DType::Float32).set_requires_grad(true);
  Tensor out;
  {
    FusedSwitch on(true);
    out = packed_attention(qkv, 2);
  }
  FusedSwitch off(false);
  sum(out).backward();
  REQUIRE(qkv.grad().defined());
  // The gradient of the sum through softmax-weighted averages: non-zero only via v.
  CHECK(max_abs(qkv.grad()) > 0.0);
}
