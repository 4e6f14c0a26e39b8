// Gradient checks of reductions, linear algebra, normalization, losses,
// attention and shape ops.
#include <doctest/doctest.h>

#include "gradcheck.h"

using namespace fg;
using fg::testing::check_gradients;
using fg::testing::random_input;
using Inputs = std::vector<Tensor>;

TEST_CASE("grad: sum, mean, max over dimensions") {
  Inputs in = {random_input({2, 3, 4}, 11)};
  check_gradients("sum all", [](const Inputs& x) { return sum(x[0]); }, in);
  check_gradients("sum dim 1", [](const Inputs& x) { return sum(x[0], {1}); }, in);
  check_gradients("sum dims 0,2 keepdim", [](const Inputs& x) { return sum(x[0], {0, 2}, true); }, in);
  check_gradients("sum dim -1 keepdim", [](const Inputs& x) { return sum(x[0], {-1}, true); }, in);
  check_gradients("mean dims 1,2", [](const Inputs& x) { return mean(x[0], {1, 2}); }, in);
  check_gradients("mean all", [](const Inputs& x) { return mean(x[0]); }, in);
  check_gradients("max dim 2", [](const Inputs& x) { return max(x[0], {2}); }, in);
  check_gradients("max dims 0,1 keepdim", [](const Inputs& x) { return max(x[0], {0, 1}, true); }, in);
  check_gradients("sum of transposed", [](const Inputs& x) { return sum(x[0].transpose(0, 2), {1}); }, in);
}

TEST_CASE("grad: matmul, batched, broadcast and transposed operands") {
  check_gradients("matmul 2d", [](const Inputs& x) { return matmul(x[0], x[1]); },
                  {random_input({3, 4}, 12), random_input({4, 5}, 13)});
  check_gradients("matmul batched", [](const Inputs& x) { return matmul(x[0], x[1]); },
                  {random_input({2, 3, 4}, 14), random_input({2, 4, 5}, 15)});
  check_gradients("matmul broadcast batch", [](const Inputs& x) { return matmul(x[0], x[1]); },
                  {random_input({2, 2, 3, 4}, 16), random_input({4, 5}, 17)});
  check_gradients("matmul broadcast batch (left)", [](const Inputs& x) { return matmul(x[0], x[1]); },
                  {random_input({3, 4}, 18), random_input({2, 4, 5}, 19)});
  check_gradients("matmul a^T b", [](const Inputs& x) { return matmul(x[0].transpose(-1, -2), x[1]); },
                  {random_input({2, 4, 3}, 20), random_input({2, 4, 5}, 21)});
  check_gradients("matmul a b^T", [](const Inputs& x) { return matmul(x[0], x[1].transpose(-1, -2)); },
                  {random_input({2, 3, 4}, 22), random_input({2, 5, 4}, 23)});
  check_gradients("matmul of permuted batch",
                  [](const Inputs& x) { return matmul(x[0].permute({1, 0, 2}), x[1]); },
                  {random_input({3, 2, 4}, 24), random_input({2, 4, 1}, 25)});
  check_gradients("matmul size-1 dims", [](const Inputs& x) { return matmul(x[0], x[1]); },
                  {random_input({1, 4}, 26), random_input({4, 1}, 27)});
  check_gradients("matmul of a strided broadcast operand",
                  [](const Inputs& x) { return matmul(x[0].slice(-1, 0, 8, 2), x[1]); },
                  {random_input({2, 1, 3, 8}, 28), random_input({2, 3, 4, 5}, 29)});
}

TEST_CASE("grad: linear with and without bias") {
  Inputs in = {random_input({2, 3, 4}, 30), random_input({5, 4}, 31), random_input({5}, 32)};
  check_gradients("linear", [](const Inputs& x) { return linear(x[0], x[1], x[2]); }, in);
  check_gradients("linear no bias", [](const Inputs& x) { return linear(x[0], x[1]); },
                  {in[0], in[1]});
  check_gradients("linear transposed input",
                  [](const Inputs& x) { return linear(x[0].transpose(0, 1), x[1], x[2]); }, in);
}

TEST_CASE("grad: softmax and log_softmax over one and several dimensions") {
  Inputs in = {random_input({2, 3, 4, 2}, 40, -3.0, 3.0)};
  for (int64_t dim : {0, 1, 3, -1}) {
    check_gradients("softmax dim " + std::to_string(dim), [dim](const Inputs& x) { return softmax(x[0], dim); }, in);
    check_gradients("log_softmax dim " + std::to_string(dim),
                    [dim](const Inputs& x) { return log_softmax(x[0], dim); }, in);
  }
  check_gradients("softmax dims 2,3", [](const Inputs& x) { return softmax(x[0], std::vector<int64_t>{2, 3}); }, in);
  check_gradients("softmax dims 1,2", [](const Inputs& x) { return softmax(x[0], std::vector<int64_t>{1, 2}); }, in);
  check_gradients("log_softmax dims 0,1", [](const Inputs& x) { return log_softmax(x[0], std::vector<int64_t>{0, 1}); }, in);
  check_gradients("softmax of transposed", [](const Inputs& x) { return softmax(x[0].transpose(1, 2), -1); }, in);
}

TEST_CASE("grad: layer_norm with and without affine parameters") {
  Inputs in = {random_input({2, 3, 6}, 50, -2.0, 2.0), random_input({6}, 51, 0.5, 1.5),
               random_input({6}, 52)};
  check_gradients("layer_norm", [](const Inputs& x) { return layer_norm(x[0], 1, x[1], x[2]); }, in);
  check_gradients("layer_norm no affine",
                  [](const Inputs& x) { return layer_norm(x[0], 1, Tensor(), Tensor()); }, {in[0]});
  check_gradients("layer_norm over 2 dims",
                  [](const Inputs& x) { return layer_norm(x[0], 2, x[1], x[2]); },
                  {random_input({2, 3, 6}, 53), random_input({3, 6}, 54), random_input({3, 6}, 55)});
  check_gradients("layer_norm transposed input",
                  [](const Inputs& x) { return layer_norm(x[0].transpose(0, 1), 1, x[1], x[2]); }, in);
}

TEST_CASE("grad: dropout with a fixed seed") {
  Inputs in = {random_input({4, 5}, 60)};
  check_gradients("dropout", [](const Inputs& x) {
    Generator gen(77);  // the same mask for every evaluation
    return dropout(x[0], 0.3, true, gen);
  }, in);
  check_gradients("dropout transposed input", [](const Inputs& x) {
    Generator gen(78);
    return dropout(x[0].transpose(0, 1), 0.3, true, gen);
  }, in);
  check_gradients("relu_dropout", [](const Inputs& x) {
    Generator gen(79);
    return relu_dropout(x[0], 0.3, true, gen);
  }, in);
  check_gradients("relu_dropout transposed input, p 0.5", [](const Inputs& x) {
    Generator gen(80);
    return relu_dropout(x[0].transpose(0, 1), 0.5, true, gen);
  }, in);
}

TEST_CASE("grad: add_layer_norm (residual + dropout, then layer norm)") {
  Inputs in = {random_input({3, 2, 6}, 61), random_input({3, 2, 6}, 62), random_input({6}, 63),
               random_input({6}, 64)};
  check_gradients(
      "add_layer_norm",
      [](const Inputs& x) {
        Generator gen(81);
        return add_layer_norm(x[0], x[1], x[2], x[3], 1e-5, 0.3, true, gen);
      },
      in);
  check_gradients("add_layer_norm without parameters, transposed branch",
                  [](const Inputs& x) {
                    Generator gen(82);
                    return add_layer_norm(x[0], x[1].transpose(0, 1).contiguous().transpose(0, 1),
                                          Tensor(), Tensor(), 1e-5, 0.5, true, gen);
                  },
                  {in[0], in[1]});
}

TEST_CASE("grad: cross entropy with labels, smoothing and soft targets") {
  const Tensor labels = Tensor::from_vector<int64_t>({2, 0, 4}, {3});
  Inputs in = {random_input({3, 5}, 70, -2.0, 2.0)};
  check_gradients("cross_entropy", [&](const Inputs& x) { return cross_entropy(x[0], labels); }, in);
  check_gradients("cross_entropy smoothing",
                  [&](const Inputs& x) { return cross_entropy(x[0], labels, 0.1); }, in);
  const Tensor targets = softmax(random_input({3, 5}, 71), -1);
  check_gradients("soft_cross_entropy",
                  [&](const Inputs& x) { return soft_cross_entropy(x[0], targets); }, in);
}

TEST_CASE("grad: scaled dot-product attention") {
  Inputs in = {random_input({2, 3, 5, 4}, 80), random_input({2, 3, 6, 4}, 81),
               random_input({2, 3, 6, 4}, 82)};
  check_gradients("sdpa", [](const Inputs& x) { return scaled_dot_product_attention(x[0], x[1], x[2]); }, in);
  check_gradients("sdpa with dropout", [](const Inputs& x) {
    Generator gen(5);
    return scaled_dot_product_attention(x[0], x[1], x[2], 0.25, true, &gen);
  }, in);
}

TEST_CASE("grad: shape ops") {
  Inputs in = {random_input({2, 3, 4}, 90), random_input({2, 2, 4}, 91)};
  check_gradients("reshape", [](const Inputs& x) { return x[0].reshape({4, 6}); }, in);
  check_gradients("reshape of transposed (copies)", [](const Inputs& x) { return x[0].transpose(0, 2).reshape({-1}); }, in);
  check_gradients("permute", [](const Inputs& x) { return x[0].permute({2, 0, 1}); }, in);
  check_gradients("transpose", [](const Inputs& x) { return x[0].transpose(0, 1); }, in);
  check_gradients("slice with step", [](const Inputs& x) { return x[0].slice(2, 1, 4, 2); }, in);
  check_gradients("select", [](const Inputs& x) { return x[0].select(1, -1); }, in);
  check_gradients("concat", [](const Inputs& x) { return concat({x[0], x[1]}, 1); }, in);
  check_gradients("split", [](const Inputs& x) {
    const auto parts = split(x[0], {1, 2}, 1);
    return concat({parts[1], mul(parts[0], 2.0)}, 1);
  }, in);
  check_gradients("chunk", [](const Inputs& x) { return mul(chunk(x[0], 2, 2)[0], chunk(x[0], 2, 2)[1]); }, in);
  check_gradients("stack", [](const Inputs& x) { return stack({x[0].select(1, 0), x[1].select(1, 1)}, 0); }, in);
  check_gradients("expand", [](const Inputs& x) { return x[0].slice(1, 0, 1).expand({2, 5, 4}); }, in);
  check_gradients("unsqueeze/squeeze", [](const Inputs& x) { return x[0].unsqueeze(1).squeeze(1).unsqueeze(-1); }, in);
  check_gradients("flatten", [](const Inputs& x) { return x[0].flatten(1); }, in);
  check_gradients("to float32 and back", [](const Inputs& x) { return x[0].to(DType::Float32).to(DType::Float64); },
                  in, {1e-3, 1e-6, 1e-3});
}

TEST_CASE("grad: patchify") {
  Inputs in = {random_input({2, 3, 4, 6}, 95)};
  check_gradients("patchify", [](const Inputs& x) { return patchify(x[0], 2); }, in);
}

TEST_CASE("grad: a small transformer layer end to end") {
  // Post-norm encoder layer as the reference computes it, composed of engine ops.
  Inputs in = {random_input({2, 5, 8}, 100), random_input({24, 8}, 101), random_input({24}, 102),
               random_input({8, 8}, 103), random_input({16, 8}, 104), random_input({8, 16}, 105)};
  check_gradients("encoder layer", [](const Inputs& x) {
    const Tensor qkv = linear(x[0], x[1], x[2]);
    auto heads = [](const Tensor& t) { return t.reshape({2, 5, 2, 4}).transpose(1, 2); };
    const auto parts = chunk(qkv, 3, -1);
    const Tensor ctx = scaled_dot_product_attention(heads(parts[0]), heads(parts[1]), heads(parts[2]));
    const Tensor attn = linear(ctx.transpose(1, 2).reshape({2, 5, 8}), x[3]);
    const Tensor h = layer_norm(add(x[0], attn), 1, Tensor(), Tensor());
    const Tensor f = linear(relu(linear(h, x[4])), x[5]);
    return layer_norm(add(h, f), 1, Tensor(), Tensor());
  }, in);
}
