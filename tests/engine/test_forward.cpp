// Forward values against independently computed expectations (plain loops in
// double precision written here, or values worked out by hand).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <numeric>

#include <omp.h>

#include "engine/backend.h"
#include "engine/cpu/philox_simd.h"
#include "engine/ops.h"
#include "engine/philox.h"

using namespace fg;

namespace {

Tensor random_f32(const Shape& shape, uint64_t seed, double low = -1, double high = 1) {
  Generator gen(seed);
  return rand(shape, gen, low, high);
}

}  // namespace

TEST_CASE("forward: softmax and log_softmax stay finite on large logits") {
  const Tensor x = Tensor::from_vector<float>({1000, 1001, 1002, -1000, -1001, -1002}, {2, 3});
  const auto p = softmax(x, -1).to_vector<double>();
  const auto lp = log_softmax(x, -1).to_vector<double>();
  const double z = std::exp(0.0) + std::exp(1.0) + std::exp(2.0);
  const double expected[3] = {1 / z, std::exp(1.0) / z, std::exp(2.0) / z};
  for (int i = 0; i < 3; ++i) {
    CHECK(p[i] == doctest::Approx(expected[i]).epsilon(1e-6));
    CHECK(p[3 + 2 - i] == doctest::Approx(expected[i]).epsilon(1e-6));
    CHECK(lp[i] == doctest::Approx(std::log(expected[i])).epsilon(1e-6));
    CHECK(std::isfinite(lp[3 + i]));
  }
}

TEST_CASE("forward: softmax over several dimensions sums to one over them") {
  const Tensor x = random_f32({2, 5, 3, 4}, 1, -5, 5);
  const Tensor joint = softmax(x, std::vector<int64_t>{2, 3});  // combine-style
  const Tensor over_tokens = softmax(x, 1);                      // dispatch-style
  const auto a = sum(joint, {2, 3}).to_vector<double>();
  const auto b = sum(over_tokens, {1}).to_vector<double>();
  for (double v : a) CHECK(v == doctest::Approx(1.0).epsilon(1e-6));
  for (double v : b) CHECK(v == doctest::Approx(1.0).epsilon(1e-6));
  // Against a loop: element (0, 1, 2, 3) of the joint softmax.
  const auto xv = x.to_vector<double>();
  double mx = -1e30, s = 0;
  for (int k = 0; k < 12; ++k) mx = std::max(mx, xv[(0 * 5 + 1) * 12 + k]);
  for (int k = 0; k < 12; ++k) s += std::exp(xv[(0 * 5 + 1) * 12 + k] - mx);
  const double expected = std::exp(xv[(0 * 5 + 1) * 12 + 2 * 4 + 3] - mx) / s;
  CHECK(joint.to_vector<double>()[(0 * 5 + 1) * 12 + 11] == doctest::Approx(expected).epsilon(1e-6));
}

TEST_CASE("forward: layer_norm against a two-pass formula") {
  const int rows = 7, cols = 384;
  const Tensor x = random_f32({rows, cols}, 2, -3, 5);
  const Tensor w = random_f32({cols}, 3, 0.5, 1.5);
  const Tensor b = random_f32({cols}, 4);
  const auto y = layer_norm(x, 1, w, b, 1e-5).to_vector<double>();
  const auto xv = x.to_vector<double>(), wv = w.to_vector<double>(), bv = b.to_vector<double>();
  double worst = 0;
  for (int r = 0; r < rows; ++r) {
    double m = 0, v = 0;
    for (int j = 0; j < cols; ++j) m += xv[r * cols + j];
    m /= cols;
    for (int j = 0; j < cols; ++j) v += (xv[r * cols + j] - m) * (xv[r * cols + j] - m);
    v /= cols;
    for (int j = 0; j < cols; ++j) {
      const double e = (xv[r * cols + j] - m) / std::sqrt(v + 1e-5) * wv[j] + bv[j];
      worst = std::max(worst, std::abs(e - y[r * cols + j]));
    }
  }
  CHECK(worst < 1e-5);
}

TEST_CASE("forward: matmul against a triple loop, awkward sizes and transposed views") {
  for (auto [m, k, n] : {std::tuple{1, 1, 1}, {3, 17, 5}, {33, 7, 65}}) {
    const Tensor a = random_f32({2, k, m}, 5).transpose(1, 2);  // (2, m, k), transposed storage
    const Tensor b = random_f32({2, k, n}, 6);
    const auto c = matmul(a, b).to_vector<double>();
    const auto av = a.contiguous().to_vector<double>(), bv = b.to_vector<double>();
    double worst = 0;
    for (int bt = 0; bt < 2; ++bt)
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double s = 0;
          for (int p = 0; p < k; ++p) s += av[(bt * m + i) * k + p] * bv[(bt * k + p) * n + j];
          worst = std::max(worst, std::abs(s - c[(bt * m + i) * n + j]));
        }
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("forward: matmul with broadcast operands BLAS cannot read in place (copied once)") {
  // Column step 2: no BLAS layout, so the operand is copied before the GEMM; its
  // broadcast batches (all of them, or one of two) must still pair up right.
  const int64_t m = 5, k = 4, n = 3;
  auto reference = [](const Tensor& a, const Tensor& b) {  // (B, m, k) @ (B, k, n), loops
    const auto av = a.contiguous().to_vector<double>(), bv = b.contiguous().to_vector<double>();
    const int64_t bt = a.size(0), m = a.size(1), k = a.size(2), n = b.size(2);
    std::vector<double> c(static_cast<size_t>(bt * m * n), 0.0);
    for (int64_t t = 0; t < bt; ++t)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j)
          for (int64_t p = 0; p < k; ++p)
            c[(t * m + i) * n + j] += av[(t * m + i) * k + p] * bv[(t * k + p) * n + j];
    return c;
  };
  auto worst = [](const std::vector<double>& x, const std::vector<double>& y) {
    REQUIRE(x.size() == y.size());
    double w = 0;
    for (size_t i = 0; i < x.size(); ++i) w = std::max(w, std::abs(x[i] - y[i]));
    return w;
  };
  const Tensor a = random_f32({m, 2 * k}, 31).slice(1, 0, 2 * k, 2);  // (m, k), column stride 2
  const Tensor b = random_f32({3, k, n}, 32);
  CHECK(worst(matmul(a, b).reshape({3 * m * n}).to_vector<double>(),
              reference(a.unsqueeze(0).expand({3, m, k}), b)) < 1e-5);
  const Tensor a2 = random_f32({2, 1, m, 2 * k}, 33).slice(3, 0, 2 * k, 2);  // (2, 1, m, k)
  const Tensor b2 = random_f32({2, 3, k, n}, 34);
  CHECK(worst(matmul(a2, b2).reshape({6 * m * n}).to_vector<double>(),
              reference(a2.expand({2, 3, m, k}).reshape({6, m, k}), b2.reshape({6, k, n}))) < 1e-5);
}

TEST_CASE("forward: a GEMM with k = 0 is C = beta C (+ bias), then ReLU") {
  const int64_t m = 3, n = 4;
  const std::vector<double> c0 = {-2, -1, 0, 1, 2, 3, -3, 4, 5, -6, 7, -8};
  const std::vector<double> bias = {1, -2, 3, -4};
  for (bool relu : {false, true})
    for (bool with_bias : {false, true})
      for (double beta : {0.0, 0.5, 1.0}) {
        if (with_bias && beta != 0.0) continue;  // not supported
        Tensor c = Tensor::from_vector<double>(c0, {m, n});
        const Tensor b = Tensor::from_vector<double>(bias, {n});
        GemmArgs g;
        g.dtype = DType::Float64;
        g.m = m;
        g.n = n;
        g.k = 0;
        g.lda = 1;
        g.ldb = n;
        g.c = c.data_ptr();
        g.ldc = n;
        g.alpha = 2.0;
        g.beta = beta;
        g.bias = with_bias ? b.data_ptr() : nullptr;
        g.relu = relu;
        backend_for(kCPU).gemm(g);
        const auto got = c.to_vector<double>();
        for (int64_t i = 0; i < m * n; ++i) {
          double want = with_bias ? bias[i % n] : beta * c0[i];
          if (relu) want = std::max(want, 0.0);
          INFO("relu " << relu << " bias " << with_bias << " beta " << beta << " element " << i);
          CHECK(got[i] == want);
        }
      }
}

TEST_CASE("forward: linear is x W^T + b") {
  const Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor w = Tensor::from_vector<float>({1, 0, -1, 2, 1, 0}, {2, 3});
  const Tensor b = Tensor::from_vector<float>({10, 20}, {2});
  CHECK(linear(x, w, b).to_vector<float>() == std::vector<float>{8, 24, 8, 33});
}

TEST_CASE("forward: reductions against loops") {
  const Tensor x = random_f32({3, 4, 5}, 7);
  const auto xv = x.to_vector<double>();
  const auto s = sum(x, {0, 2}).to_vector<double>();
  const auto m = max(x, {1}).to_vector<double>();
  const auto mn = mean(x, {2}, true);
  CHECK(mn.shape() == Shape{3, 4, 1});
  for (int j = 0; j < 4; ++j) {
    double e = 0;
    for (int i = 0; i < 3; ++i)
      for (int k = 0; k < 5; ++k) e += xv[(i * 4 + j) * 5 + k];
    CHECK(s[j] == doctest::Approx(e).epsilon(1e-6));
  }
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 5; ++k) {
      double e = -1e30;
      for (int j = 0; j < 4; ++j) e = std::max(e, xv[(i * 4 + j) * 5 + k]);
      CHECK(m[i * 5 + k] == doctest::Approx(e));
    }
  CHECK(sum(x).item() == doctest::Approx(std::accumulate(xv.begin(), xv.end(), 0.0)).epsilon(1e-6));
  CHECK(argmax(Tensor::from_vector<float>({1, 5, 2, 7, 0, 3}, {2, 3}), 1).to_vector<int64_t>() ==
        std::vector<int64_t>{1, 0});
}

TEST_CASE("forward: long sums are accurate and do not depend on the thread count") {
  // Over a million values a whole-tensor sum is split in fixed chunks across threads.
  const Tensor x = random_f32({1 << 20 | 7}, 31, -1.0, 3.0);
  const auto values = x.to_vector<float>();
  const double expected = std::accumulate(values.begin(), values.end(), 0.0);
  const int threads = omp_get_max_threads();
  const double all = sum(x).item();
  CHECK(std::abs(all - expected) <= 1e-6 * std::abs(expected));
  omp_set_num_threads(1);
  const double one = sum(x).item();
  omp_set_num_threads(threads);
  CHECK(one == all);
  // Rows of a 2-D tensor: each long row summed on its own.
  const Tensor rows = x.slice(0, 0, 1 << 20).reshape({2, 1 << 19});
  const auto per_row = sum(rows, {1}).to_vector<double>();
  const double first = std::accumulate(values.begin(), values.begin() + (1 << 19), 0.0);
  const double second = std::accumulate(values.begin() + (1 << 19), values.begin() + (1 << 20), 0.0);
  CHECK(std::abs(per_row[0] - first) <= 1e-6 * std::abs(first));
  CHECK(std::abs(per_row[1] - second) <= 1e-6 * std::abs(second));
}

TEST_CASE("forward: the fused sum of squares equals square-then-sum, for any thread count") {
  Backend& cpu = backend_for(kCPU);
  for (const int64_t n : {int64_t{1}, int64_t{13}, int64_t{(1 << 18) + 5}}) {
    for (const DType dtype : {DType::Float32, DType::Float64}) {
      const Tensor x = random_f32({n}, 41, -2.0, 2.0).to(dtype);
      const Tensor fused = Tensor::empty({}, dtype), composite = Tensor::empty({}, dtype);
      cpu.sum_squares(x, fused);
      cpu.Backend::sum_squares(x, composite);  // the default: square, then sum
      const auto v = x.to_vector<double>();
      double expected = 0;
      for (double e : v) expected += e * e;
      INFO("n " << n << " " << dtype_name(dtype));
      CHECK(fused.item() == doctest::Approx(expected).epsilon(1e-6));
      CHECK(composite.item() == doctest::Approx(expected).epsilon(1e-6));
      const int threads = omp_get_max_threads();
      omp_set_num_threads(1);
      const Tensor one = Tensor::empty({}, dtype);
      cpu.sum_squares(x, one);
      omp_set_num_threads(threads);
      CHECK(one.item() == fused.item());
    }
  }
}

TEST_CASE("forward: elementwise functions") {
  const Tensor x = Tensor::from_vector<double>({-2.0, -0.5, 0.0, 0.5, 3.0}, {5});
  const auto g = gelu(x).to_vector<double>();
  const auto s = sigmoid(x).to_vector<double>();
  const auto r = relu(x).to_vector<double>();
  const double xs[5] = {-2.0, -0.5, 0.0, 0.5, 3.0};
  for (int i = 0; i < 5; ++i) {
    CHECK(g[i] == doctest::Approx(0.5 * xs[i] * (1 + std::erf(xs[i] / std::sqrt(2.0)))));
    CHECK(s[i] == doctest::Approx(1 / (1 + std::exp(-xs[i]))));
    CHECK(r[i] == (xs[i] > 0 ? xs[i] : 0.0));
  }
  // Broadcasting: (2, 1) + (3) -> (2, 3)
  const Tensor a = Tensor::from_vector<float>({1, 2}, {2, 1});
  const Tensor b = Tensor::from_vector<float>({10, 20, 30}, {3});
  CHECK((a + b).to_vector<float>() == std::vector<float>{11, 21, 31, 12, 22, 32});
  CHECK((a - b).shape() == Shape{2, 3});
  CHECK(where(gt(b, 15.0), b, -1.0).to_vector<float>() == std::vector<float>{-1, 20, 30});
  CHECK(masked_fill(b, lt(b, 25.0), 0.0).to_vector<float>() == std::vector<float>{0, 0, 30});
  CHECK(logical_and(gt(b, 15.0), lt(b, 25.0)).to_vector<uint8_t>() == std::vector<uint8_t>{0, 1, 0});
  CHECK(logical_or(gt(b, 25.0), lt(b, 15.0)).to_vector<uint8_t>() == std::vector<uint8_t>{1, 0, 1});
  CHECK(logical_not(gt(b, 15.0)).to_vector<uint8_t>() == std::vector<uint8_t>{1, 0, 0});
  CHECK(eq(b, 20.0).to_vector<uint8_t>() == std::vector<uint8_t>{0, 1, 0});
}

TEST_CASE("forward: cross entropy by hand") {
  const Tensor logits = Tensor::from_vector<double>({1, 2, 3, 0, 0, 0}, {2, 3});
  const Tensor labels = Tensor::from_vector<int64_t>({2, 0}, {2});
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  const double nll0 = -std::log(std::exp(3.0) / z), nll1 = std::log(3.0);
  CHECK(cross_entropy(logits, labels).item() == doctest::Approx((nll0 + nll1) / 2));
  // Label smoothing eps: (1 - eps) nll + eps * mean over classes of -log p.
  const double eps = 0.1;
  const double uni0 = -(std::log(std::exp(1.0) / z) + std::log(std::exp(2.0) / z) + std::log(std::exp(3.0) / z)) / 3;
  const double uni1 = std::log(3.0);
  const double expected = ((1 - eps) * nll0 + eps * uni0 + (1 - eps) * nll1 + eps * uni1) / 2;
  CHECK(cross_entropy(logits, labels, eps).item() == doctest::Approx(expected));
  CHECK_THROWS_WITH_AS(cross_entropy(logits, Tensor::from_vector<int64_t>({3, 0}, {2})),
                       doctest::Contains("label 3 out of range"), Error);
}

TEST_CASE("forward: attention against loops") {
  const Tensor q = random_f32({1, 2, 3, 4}, 8), k = random_f32({1, 2, 5, 4}, 9),
               v = random_f32({1, 2, 5, 4}, 10);
  const auto out = scaled_dot_product_attention(q, k, v).to_vector<double>();
  const auto qv = q.to_vector<double>(), kv = k.to_vector<double>(), vv = v.to_vector<double>();
  double worst = 0;
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 3; ++i) {
      double scores[5], mx = -1e30, s = 0;
      for (int j = 0; j < 5; ++j) {
        double d = 0;
        for (int c = 0; c < 4; ++c) d += qv[(h * 3 + i) * 4 + c] * kv[(h * 5 + j) * 4 + c];
        scores[j] = d / 2.0;
        mx = std::max(mx, scores[j]);
      }
      for (double& sc : scores) s += (sc = std::exp(sc - mx));
      for (int c = 0; c < 4; ++c) {
        double e = 0;
        for (int j = 0; j < 5; ++j) e += scores[j] / s * vv[(h * 5 + j) * 4 + c];
        worst = std::max(worst, std::abs(e - out[(h * 3 + i) * 4 + c]));
      }
    }
  CHECK(worst < 1e-6);
}

TEST_CASE("forward: patchify orders each patch (row, col, channel)") {
  // Pixel value encodes (channel, y, x).
  const int C = 3, H = 4, W = 6, P = 2;
  std::vector<float> pixels(C * H * W);
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) pixels[(c * H + y) * W + x] = static_cast<float>(c * 100 + y * 10 + x);
  const Tensor tokens = patchify(Tensor::from_vector(pixels, {1, C, H, W}), P);
  REQUIRE(tokens.shape() == Shape{1, (H / P) * (W / P), P * P * C});
  const auto t = tokens.to_vector<float>();
  for (int gy = 0; gy < H / P; ++gy)
    for (int gx = 0; gx < W / P; ++gx)
      for (int py = 0; py < P; ++py)
        for (int px = 0; px < P; ++px)
          for (int c = 0; c < C; ++c) {
            const int token = gy * (W / P) + gx, feature = (py * P + px) * C + c;
            CHECK(t[token * P * P * C + feature] == c * 100 + (gy * P + py) * 10 + gx * P + px);
          }
  CHECK(unpatchify(tokens, P, C, H, W).to_vector<float>() == pixels);
}

TEST_CASE("forward: bicubic resize matches PyTorch's formula") {
  // Direct, unfactored evaluation of PyTorch's bicubic (A = -0.75, half-pixel
  // centres, border replicate) for comparison.
  auto cubic = [](double t) {
    const double A = -0.75;
    t = std::abs(t);
    if (t <= 1) return ((A + 2) * t - (A + 3)) * t * t + 1;
    if (t < 2) return ((A * t - 5 * A) * t + 8 * A) * t - 4 * A;
    return 0.0;
  };
  const int H = 5, W = 7, OH = 3, OW = 11;
  const Tensor x = random_f32({1, 2, H, W}, 11);
  const auto xv = x.to_vector<double>();
  const auto y = bicubic_resize(x, OH, OW).to_vector<double>();
  double worst = 0;
  for (int c = 0; c < 2; ++c)
    for (int oy = 0; oy < OH; ++oy)
      for (int ox = 0; ox < OW; ++ox) {
        const double sy = (oy + 0.5) * H / OH - 0.5, sx = (ox + 0.5) * W / OW - 0.5;
        const int fy = static_cast<int>(std::floor(sy)), fx = static_cast<int>(std::floor(sx));
        double acc = 0;
        for (int i = fy - 1; i <= fy + 2; ++i)
          for (int j = fx - 1; j <= fx + 2; ++j) {
            const int ci = std::clamp(i, 0, H - 1), cj = std::clamp(j, 0, W - 1);
            acc += cubic(sy - i) * cubic(sx - j) * xv[(c * H + ci) * W + cj];
          }
        worst = std::max(worst, std::abs(acc - y[(c * OH + oy) * OW + ox]));
      }
  CHECK(worst < 1e-5);
  // Same size is the identity; a constant image stays constant.
  CHECK(max_abs_diff(bicubic_resize(x, H, W), x) < 1e-6);
  const Tensor ones = Tensor::ones({1, 1, 224, 224});
  CHECK(max_abs_diff(bicubic_resize(ones, 14, 14), Tensor::ones({1, 1, 14, 14})) < 1e-5);
}

TEST_CASE("forward: dropout masks, scaling and determinism") {
  const Tensor x = Tensor::ones({100000});
  Generator g1(3), g2(3);
  const auto a = dropout(x, 0.25, true, g1).to_vector<float>();
  const auto b = dropout(x, 0.25, true, g2).to_vector<float>();
  CHECK(a == b);
  int zeros = 0;
  for (float v : a) {
    CHECK((v == 0.0f || std::abs(v - 1.0f / 0.75f) < 1e-6f));
    zeros += v == 0.0f;
  }
  CHECK(zeros / 100000.0 == doctest::Approx(0.25).epsilon(0.03));
  Generator g3(3);
  CHECK(dropout(x, 0.25, false, g3).same(x));
  // The next draw of a generator gives a different mask.
  CHECK(dropout(x, 0.25, true, g1).to_vector<float>() != a);
}

TEST_CASE("forward: dropout and relu_dropout are x times the mask, and their gradients the mask's") {
  // The fused ops against the composite they replace: dropout_mask's tensor
  // (the same Philox draw) multiplied in, bitwise, forward and backward, for
  // both float types, odd sizes and a non-contiguous input.
  for (DType dtype : {DType::Float32, DType::Float64}) {
    for (const Shape& shape : {Shape{1}, Shape{5}, Shape{33, 31}, Shape{3, 196, 40}}) {
      for (bool relu_first : {false, true}) {
        const std::string what = std::string(dtype_name(dtype)) + " " + shape_str(shape) +
                                 (relu_first ? " relu_dropout" : " dropout");
        INFO(what);
        Generator gx(11), gg(12);
        const Tensor x = randn(shape, gx).to(dtype), g = randn(shape, gg).to(dtype);
        Generator gen(21), same(21);
        Tensor leaf = x.clone();
        leaf.set_requires_grad(true);
        const Tensor y = relu_first ? relu_dropout(leaf, 0.3, true, gen) : dropout(leaf, 0.3, true, gen);
        CHECK(gen.offset() == same.offset() + 1);  // one draw
        sum(mul(y, g)).backward();

        Tensor mask = Tensor::empty(shape, dtype);
        backend_for(kCPU).dropout_mask(mask, 0.3, same.seed(), same.next_offset());
        const Tensor in = relu_first ? relu(x) : x;
        CHECK(y.to_vector<double>() == mul(in, mask).to_vector<double>());
        // d/dx: g * mask where the ReLU passes.
        const Tensor expected = relu_first ? where(gt(x, 0.0), mul(g, mask), 0.0) : mul(g, mask);
        CHECK(leaf.grad().to_vector<double>() == expected.to_vector<double>());
      }
    }
  }
  // A transposed (non-contiguous) input draws over its own row-major order.
  Generator gx(13);
  const Tensor x = randn({6, 9}, gx);
  Generator a(5), b(5);
  CHECK(relu_dropout(x.transpose(0, 1), 0.2, true, a).to_vector<float>() ==
        relu_dropout(x.transpose(0, 1).contiguous(), 0.2, true, b).to_vector<float>());
  // Not training, p = 0 or an empty tensor: no draw; p = 1: zeros.
  Generator c(5);
  CHECK(relu_dropout(x, 0.2, false, c).to_vector<float>() == relu(x).to_vector<float>());
  CHECK(relu_dropout(x, 0.0, true, c).to_vector<float>() == relu(x).to_vector<float>());
  CHECK(dropout(Tensor::empty({0, 4}), 0.2, true, c).numel() == 0);
  CHECK(c.offset() == 0);
  CHECK(sum(abs(relu_dropout(x, 1.0, true, c))).item() == 0.0);
  CHECK_THROWS_WITH_AS(relu_dropout(x, 1.5, true, c), doctest::Contains("relu_dropout: probability"),
                       Error);
}

TEST_CASE("forward: add_layer_norm is layer_norm(residual + dropout(x)), forward and backward") {
  // The same draw, the same numbers and the same gradients as the composite
  // (on the CPU the backend composes the same kernels, so bitwise).
  for (DType dtype : {DType::Float32, DType::Float64}) {
    Generator init(31);
    const Tensor r = randn({4, 5, 24}, init).to(dtype), x = randn({4, 5, 24}, init).to(dtype);
    const Tensor w = randn({24}, init).to(dtype), b = randn({24}, init).to(dtype);
    const Tensor g = randn({4, 5, 24}, init).to(dtype);
    auto run = [&](bool fused) {
      std::vector<Tensor> leaves = {r.clone(), x.clone(), w.clone(), b.clone()};
      for (Tensor& t : leaves) t.set_requires_grad(true);
      Generator gen(41);
      const Tensor y =
          fused ? add_layer_norm(leaves[0], leaves[1], leaves[2], leaves[3], 1e-5, 0.25, true, gen)
                : layer_norm(add(leaves[0], dropout(leaves[1], 0.25, true, gen)), 1, leaves[2],
                             leaves[3], 1e-5);
      CHECK(gen.offset() == 1);
      sum(mul(y, g)).backward();
      std::vector<std::vector<double>> values = {y.to_vector<double>()};
      for (const Tensor& t : leaves) values.push_back(t.grad().to_vector<double>());
      return values;
    };
    const auto fused = run(true), composite = run(false);
    for (size_t i = 0; i < fused.size(); ++i) {
      INFO(dtype_name(dtype) << " result " << i);
      CHECK(fused[i] == composite[i]);
    }
  }
  // Not training (or p = 0): layer_norm(residual + x), nothing drawn.
  Generator init(32), gen(5);
  const Tensor r = randn({3, 8}, init), x = randn({3, 8}, init);
  CHECK(add_layer_norm(r, x, Tensor(), Tensor(), 1e-5, 0.1, false, gen).to_vector<float>() ==
        layer_norm(add(r, x), 1, Tensor(), Tensor()).to_vector<float>());
  CHECK(gen.offset() == 0);
  CHECK_THROWS_WITH_AS(add_layer_norm(r, x, Tensor(), Tensor(), 1e-5, -0.1, true, gen),
                       doctest::Contains("add_layer_norm: dropout probability"), Error);
  // Mismatched parameters fall back to the composite, which names the problem.
  CHECK_THROWS_WITH_AS(add_layer_norm(r, x, Tensor::ones({5}), Tensor(), 1e-5, 0.1, true, gen),
                       doctest::Contains("layer_norm"), Error);
}

TEST_CASE("forward: masks and uniform draws are the shared Philox words, element by element") {
  // The CPU draws eight Philox blocks at a time (vectorized where the build allows);
  // every element must still be word i % 4 of philox4x32(i / 4, offset, seed), the
  // function the CUDA kernels use.
  const uint64_t seed = 0x123456789abcdefULL, offset = 77;
  for (const uint64_t first : {uint64_t{0}, uint64_t{5}, uint64_t{0xFFFFFFFCull}}) {
    uint32_t words[32];
    cpu::philox4x32_8(first, offset, seed, words);
    for (int l = 0; l < 8; ++l) {
      const Philox4 r = philox4x32(first + l, offset, seed);
      for (int w = 0; w < 4; ++w) CHECK(words[4 * l + w] == r.v[w]);  // incl. the 2^32 carry
    }
  }
  const int64_t n = 1001;  // not a multiple of 32 elements
  const Tensor mask = Tensor::empty({n});
  backend_for(kCPU).dropout_mask(mask, 0.3, seed, offset);
  const Tensor uniform = Tensor::empty({n});
  backend_for(kCPU).uniform(uniform, seed, offset, 0.0, 1.0);
  const auto m = mask.to_vector<float>(), u = uniform.to_vector<float>();
  for (int64_t i = 0; i < n; ++i) {
    const float expected = philox_uniform(static_cast<uint64_t>(i), offset, seed);
    REQUIRE(u[i] == doctest::Approx(expected).epsilon(1e-7));
    REQUIRE(m[i] == (expected >= 0.3f ? 1.0f / 0.7f : 0.0f));
  }
}

TEST_CASE("forward: random numbers are seeded and well distributed") {
  Generator a(42), b(42), c(43);
  const Tensor u1 = rand({50000}, a, -2, 3), u2 = rand({50000}, b, -2, 3), u3 = rand({50000}, c, -2, 3);
  CHECK(u1.to_vector<float>() == u2.to_vector<float>());
  CHECK(u1.to_vector<float>() != u3.to_vector<float>());
  CHECK(max(u1).item() < 3.0);
  CHECK(neg(max(neg(u1))).item() >= -2.0);
  CHECK(mean(u1).item() == doctest::Approx(0.5).epsilon(0.02));
  const Tensor n = randn({200000}, a, 1.0, 2.0);
  const double m = mean(n).item();
  const double sd = std::sqrt(mean(square(n - m)).item());
  CHECK(m == doctest::Approx(1.0).epsilon(0.02));
  CHECK(sd == doctest::Approx(2.0).epsilon(0.02));
  // Host draws: in range and reproducible.
  Generator h1(9), h2(9);
  for (int i = 0; i < 100; ++i) {
    const int64_t r = h1.randint(7);
    CHECK(r == h2.randint(7));
    CHECK((r >= 0 && r < 7));
  }
}

TEST_CASE("forward: one_hot") {
  const Tensor labels = Tensor::from_vector<int64_t>({2, 0}, {2});
  CHECK(one_hot(labels, 3).to_vector<float>() == std::vector<float>{0, 0, 1, 1, 0, 0});
}
