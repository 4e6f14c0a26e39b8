// CUDA softmax, layer norm, random draws, bicubic resize and AdamW against the
// CPU. Dropout masks and uniform draws must be bitwise the CPU's.
#include <doctest/doctest.h>

#include "cuda_test_util.h"
#include "engine/optim/adamw.h"

using namespace fg;
using namespace fg::cuda_testing;

TEST_CASE("cuda: softmax and log_softmax match the CPU, forward and backward") {
  FG_SKIP_WITHOUT_GPU();
  struct Case {
    Shape shape;
    std::vector<int64_t> dims;
  };
  const std::vector<Case> cases = {
      {{1, 1}, {-1}},           {{7, 5}, {-1}},   {{300, 196}, {-1}},  // warp rows
      {{3, 3000}, {-1}},                                               // block rows
      {{4, 196, 32}, {1}},                                             // dispatch: columns
      {{4, 196, 8, 4}, {2, 3}},                                        // combine: joint
      {{2, 5, 3, 4}, {1}},      {{2, 1, 9}, {1}},
  };
  for (const Case& c : cases) {
    for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16}) {
      for (bool log : {false, true}) {
        const DType cpu_type = dtype == DType::Float64 ? DType::Float64 : DType::Float32;
        const std::string what = std::string(log ? "log_softmax " : "softmax ") +
                                 dtype_name(dtype) + " " + shape_str(c.shape);
        Tensor x = rounded(random_cpu(c.shape, 91, -6.0, 6.0), dtype).to(cpu_type);
        Tensor gx = on_gpu(x.to(dtype));
        x.set_requires_grad(true);
        gx.set_requires_grad(true);
        const Tensor expected = log ? log_softmax(x, c.dims) : softmax(x, c.dims);
        const Tensor got = log ? log_softmax(gx, c.dims) : softmax(gx, c.dims);
        CHECK(got.dtype() == dtype);
        check_close(got, expected, rtol_for(dtype), dtype == DType::BFloat16 ? 1e-2 : 1e-6, what);
        const Tensor w = rounded(random_cpu(c.shape, 92, -1.0, 1.0), dtype).to(cpu_type);
        sum(mul(expected, w)).backward();
        sum(mul(got, on_gpu(w.to(dtype)))).backward();
        check_close(gx.grad(), x.grad(), dtype == DType::BFloat16 ? 3e-2 : rtol_for(dtype),
                    dtype == DType::BFloat16 ? 2e-2 : 1e-6, what + " backward");
      }
    }
  }
}

TEST_CASE("cuda: layer_norm matches the CPU, forward and backward") {
  FG_SKIP_WITHOUT_GPU();
  const std::vector<std::pair<int64_t, int64_t>> sizes = {{1, 1},    {7, 384},   {25, 768},
                                                          {3, 5000}, {1000, 33}, {2, 4097}};
  struct Types {
    DType x, params;
  };
  const std::vector<Types> types = {{DType::Float32, DType::Float32},
                                    {DType::Float64, DType::Float64},
                                    {DType::BFloat16, DType::Float32},
                                    {DType::BFloat16, DType::BFloat16}};
  for (auto [rows, cols] : sizes) {
    for (const Types& t : types) {
      for (bool affine : {true, false}) {
        const DType cpu_x = t.x == DType::Float64 ? DType::Float64 : DType::Float32;
        const DType cpu_p = t.params == DType::Float64 ? DType::Float64 : DType::Float32;
        const std::string what = std::string("layer_norm x ") + dtype_name(t.x) + ", params " +
                                 dtype_name(t.params) + (affine ? "" : " (no affine)") + " (" +
                                 std::to_string(rows) + ", " + std::to_string(cols) + ")";
        Tensor x = rounded(random_cpu({rows, cols}, 101, -3.0, 5.0), t.x).to(cpu_x);
        Tensor w = rounded(random_cpu({cols}, 102, 0.5, 1.5), t.params).to(cpu_p);
        Tensor b = rounded(random_cpu({cols}, 103, -1.0, 1.0), t.params).to(cpu_p);
        Tensor gx = on_gpu(x.to(t.x)), gw = on_gpu(w.to(t.params)), gb = on_gpu(b.to(t.params));
        for (Tensor* p : {&x, &w, &b, &gx, &gw, &gb}) p->set_requires_grad(true);
        const Tensor expected =
            affine ? layer_norm(x, 1, w, b) : layer_norm(x, 1, Tensor(), Tensor());
        const Tensor got =
            affine ? layer_norm(gx, 1, gw, gb) : layer_norm(gx, 1, Tensor(), Tensor());
        CHECK(got.dtype() == t.x);
        const bool low = t.x == DType::BFloat16;
        check_close(got, expected, low ? 2e-2 : (cpu_x == DType::Float64 ? 1e-10 : 1e-4),
                    low ? 2e-2 : 1e-5, what);
        const Tensor weights = rounded(random_cpu({rows, cols}, 104, -1.0, 1.0), t.x).to(cpu_x);
        sum(mul(expected, weights)).backward();
        sum(mul(got, on_gpu(weights.to(t.x)))).backward();
        const double rtol = low ? 5e-2 : (cpu_x == DType::Float64 ? 1e-9 : 1e-4);
        check_close(gx.grad(), x.grad(), rtol, low ? 5e-2 : 1e-5, what + " grad x");
        if (affine) {
          const double scale = std::sqrt(static_cast<double>(rows));
          check_close(gw.grad(), w.grad(), rtol, (low ? 5e-2 : 1e-5) * scale,
                      what + " grad weight");
          check_close(gb.grad(), b.grad(), rtol, (low ? 5e-2 : 1e-5) * scale, what + " grad bias");
        }
      }
    }
  }
}

TEST_CASE("cuda: add_layer_norm matches the CPU composite, float32 and a bfloat16 branch") {
  FG_SKIP_WITHOUT_GPU();
  // The fused residual + dropout + layer norm against the CPU's dropout, add
  // and layer_norm on the same values and the same draw. A bfloat16 branch
  // (autocast) has its kept products rounded to bfloat16 before the add, and
  // its gradient rounded to bfloat16 before dropout's backward: the CPU
  // reference rounds at the same places.
  for (const Shape& shape : {Shape{6, 196, 384}, Shape{5, 45}, Shape{2, 4099}}) {
    const int64_t cols = shape.back();
    for (bool bf16_branch : {false, true}) {
      const std::string what =
          std::string(bf16_branch ? "bfloat16" : "float32") + " branch " + shape_str(shape);
      INFO(what);
      const Tensor r = random_cpu(shape, 120, 1.0, 3.0);
      const Tensor x =
          bf16_branch ? rounded(random_cpu(shape, 121), DType::BFloat16) : random_cpu(shape, 121);
      const Tensor w = random_cpu({cols}, 122, 0.5, 1.5), b = random_cpu({cols}, 123);
      const Tensor g = random_cpu(shape, 124);
      auto round_branch = [&](const Tensor& t) {
        return bf16_branch ? rounded(t, DType::BFloat16) : t;
      };

      // The CPU: the branch dropped (and rounded), then add and layer_norm with autograd.
      Generator cpu_gen(9);
      const uint64_t offset = cpu_gen.offset();
      Tensor s = add(r, round_branch(dropout(x, 0.1, true, cpu_gen)));
      s = s.detach();
      s.set_requires_grad(true);
      Tensor cw = w.clone(), cb = b.clone();
      cw.set_requires_grad(true);
      cb.set_requires_grad(true);
      const Tensor expected = layer_norm(s, 1, cw, cb);
      sum(mul(expected, g)).backward();
      Tensor expected_gx = Tensor::empty(shape);
      backend_for(kCPU).dropout_backward(round_branch(s.grad()), Tensor(), expected_gx,
                                         DropoutArgs{0.1, cpu_gen.seed(), offset, false});
      expected_gx = round_branch(expected_gx);

      // The GPU: one fused op.
      Tensor gr = on_gpu(r), gxin = on_gpu(bf16_branch ? x.to(DType::BFloat16) : x);
      Tensor gw = on_gpu(w), gb = on_gpu(b);
      for (Tensor* t : {&gr, &gxin, &gw, &gb}) t->set_requires_grad(true);
      Generator gpu_gen(9);
      const Tensor got = add_layer_norm(gr, gxin, gw, gb, 1e-5, 0.1, true, gpu_gen);
      CHECK(got.dtype() == DType::Float32);
      CHECK(gpu_gen.offset() == cpu_gen.offset());
      check_close(got, expected, 1e-4, 1e-5, what);
      sum(mul(got, on_gpu(g))).backward();
      check_close(gr.grad(), s.grad(), 1e-4, 1e-5, what + " grad residual");
      CHECK(gxin.grad().dtype() == gxin.dtype());
      check_close(gxin.grad(), expected_gx, bf16_branch ? 1.6e-2 : 1e-4, 1e-5, what + " grad x");
      const double scale = std::sqrt(static_cast<double>(shape_numel(shape) / cols));
      check_close(gw.grad(), cw.grad(), 1e-4, 1e-5 * scale, what + " grad weight");
      check_close(gb.grad(), cb.grad(), 1e-4, 1e-5 * scale, what + " grad bias");
    }
  }
}

TEST_CASE("cuda: dropout masks are bitwise the CPU's, uniform and normal draws agree") {
  FG_SKIP_WITHOUT_GPU();
  const std::vector<int64_t> sizes = {1, 3, 4, 5, 1001, (1 << 20) + 7};
  for (int64_t n : sizes) {
    for (double p : {0.1, 0.5, 0.9}) {
      for (uint64_t seed : {uint64_t{0}, uint64_t{20030605}, uint64_t{0xdeadbeefcafef00dull}}) {
        const uint64_t offset = seed % 7 + static_cast<uint64_t>(n % 5);
        const std::string what =
            "n=" + std::to_string(n) + " p=" + std::to_string(p) + " seed=" + std::to_string(seed);
        Tensor cpu = Tensor::empty({n});
        backend_for(kCPU).dropout_mask(cpu, p, seed, offset);
        for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16}) {
          Tensor gpu = Tensor::empty({n}, dtype, kCUDA);
          backend_for(kCUDA).dropout_mask(gpu, p, seed, offset);
          Tensor expected = cpu;
          if (dtype == DType::Float64) {
            expected = Tensor::empty({n}, DType::Float64);
            backend_for(kCPU).dropout_mask(expected, p, seed, offset);
          } else if (dtype == DType::BFloat16) {
            expected = cpu.to(DType::BFloat16);
          }
          check_equal(gpu, expected, std::string("dropout mask ") + dtype_name(dtype) + " " + what);
        }
      }
    }
    for (DType dtype : {DType::Float32, DType::Float64}) {
      Tensor cu = Tensor::empty({n}, dtype), gu = Tensor::empty({n}, dtype, kCUDA);
      backend_for(kCPU).uniform(cu, 5, 3, -2.0, 7.0);
      backend_for(kCUDA).uniform(gu, 5, 3, -2.0, 7.0);
      // A fused multiply-add on one side may move the last bit.
      check_close(gu, cu, dtype == DType::Float64 ? 1e-15 : 2e-7, 1e-15,
                  std::string("uniform ") + dtype_name(dtype) + " n=" + std::to_string(n));
      Tensor cn = Tensor::empty({n}, dtype), gn = Tensor::empty({n}, dtype, kCUDA);
      backend_for(kCPU).normal(cn, 6, 1, 0.5, 2.0);
      backend_for(kCUDA).normal(gn, 6, 1, 0.5, 2.0);
      check_close(gn, cn, 1e-5, 1e-5,
                  std::string("normal ") + dtype_name(dtype) + " n=" + std::to_string(n));
    }
    Tensor cb = Tensor::empty({n}), gb = Tensor::empty({n}, DType::BFloat16, kCUDA);
    backend_for(kCPU).uniform(cb, 8, 2, 0.0, 1.0);
    backend_for(kCUDA).uniform(gb, 8, 2, 0.0, 1.0);
    check_close(gb, cb.to(DType::BFloat16), 8e-3, 1e-7, "uniform bfloat16 n=" + std::to_string(n));
  }
  // The public op: the same generator state drops the same elements on both devices.
  Generator cpu_gen(77), gpu_gen(77);
  const Tensor x = random_cpu({3, 196, 384}, 105);
  for (int draw = 0; draw < 3; ++draw) {
    check_equal(dropout(on_gpu(x), 0.1, true, gpu_gen), dropout(x, 0.1, true, cpu_gen),
                "dropout op draw " + std::to_string(draw));
  }
  CHECK(cpu_gen.offset() == gpu_gen.offset());
  // The fused ops' backwards in float32 and float64 (the mask drawn again, or
  // read from relu_dropout's output), on a misaligned view (no vector accesses).
  for (DType dtype : {DType::Float32, DType::Float64})
    for (bool relu_first : {false, true})
      for (int64_t skip : {0, 1}) {
        const std::string what = std::string(dtype_name(dtype)) +
                                 (relu_first ? " relu_dropout" : " dropout") + " skip " +
                                 std::to_string(skip);
        const Tensor base = random_cpu({3 * 196 * 384 + 1}, 106).to(dtype);
        const Tensor g = random_cpu({3 * 196 * 384}, 107).to(dtype);
        auto run = [&](const Tensor& all, const Tensor& grad) {
          Tensor leaf = all.narrow(0, skip, 3 * 196 * 384).detach();
          leaf.set_requires_grad(true);
          Generator gen(78);
          const Tensor y =
              relu_first ? relu_dropout(leaf, 0.2, true, gen) : dropout(leaf, 0.2, true, gen);
          sum(mul(y, grad)).backward();
          return std::pair<Tensor, Tensor>(y, leaf.grad());
        };
        const auto [y_gpu, g_gpu] = run(on_gpu(base), on_gpu(g));
        const auto [y_cpu, g_cpu] = run(base, g);
        check_equal(y_gpu, y_cpu, what);
        check_equal(g_gpu, g_cpu, what + " backward");
      }
}

TEST_CASE("cuda: bicubic resize matches the CPU") {
  FG_SKIP_WITHOUT_GPU();
  struct Case {
    Shape in;
    int64_t oh, ow;
  };
  const std::vector<Case> cases = {{{2, 3, 13, 17}, 7, 9},
                                   {{1, 1, 5, 5}, 16, 16},
                                   {{2, 1, 224, 224}, 14, 14},
                                   {{1, 2, 1, 9}, 3, 4}};
  for (const Case& c : cases) {
    for (bool align : {false, true}) {
      for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16}) {
        const DType cpu_type = dtype == DType::Float64 ? DType::Float64 : DType::Float32;
        const Tensor x = rounded(random_cpu(c.in, 111, 0.0, 1.0), dtype).to(cpu_type);
        const Tensor expected = bicubic_resize(x, c.oh, c.ow, align);
        const Tensor got = bicubic_resize(on_gpu(x.to(dtype)), c.oh, c.ow, align);
        check_close(got, expected, rtol_for(dtype), dtype == DType::BFloat16 ? 1e-2 : 1e-6,
                    std::string("bicubic ") + dtype_name(dtype) + " " + shape_str(c.in) +
                        (align ? " align_corners" : ""));
      }
    }
  }
}

TEST_CASE("cuda: gradient clipping's multi-tensor passes match the CPU") {
  FG_SKIP_WITHOUT_GPU();
  // Many tensors, empty ones, and one that continues across launches (more
  // than 320 chunks of 65536): the norm as the CPU's up to the order of the
  // float sums, and every gradient scaled by the same float32 coefficient.
  std::vector<Shape> shapes;
  for (int i = 0; i < 60; ++i) shapes.push_back({(i * 53) % 400});
  shapes.push_back({320 * 65536 + 77});
  shapes.push_back({2048, 384});
  std::vector<Tensor> cpu_params, gpu_params;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Tensor c = Tensor::zeros(shapes[i]), g = Tensor::zeros(shapes[i], DType::Float32, kCUDA);
    c.set_requires_grad(true);
    g.set_requires_grad(true);
    const Tensor grad = random_cpu(shapes[i], 300 + i, -0.01, 0.01);
    c.set_grad(grad.clone());
    g.set_grad(on_gpu(grad));
    cpu_params.push_back(c);
    gpu_params.push_back(g);
  }
  for (double max_norm : {0.5, 1e6}) {  // clipped, then (after the first) untouched
    const Tensor cpu_norm = optim::clip_grad_norm_(cpu_params, max_norm);
    const Tensor gpu_norm = optim::clip_grad_norm_(gpu_params, max_norm);
    CHECK(gpu_norm.device().is_cuda());
    check_close(gpu_norm, cpu_norm, 1e-5, 0.0, "norm, max_norm " + std::to_string(max_norm));
    for (size_t i = 0; i < shapes.size(); ++i)
      check_close(gpu_params[i].grad(), cpu_params[i].grad(), 2e-5, 0.0,
                  "gradient " + std::to_string(i) + " after clipping to " + std::to_string(max_norm));
  }
}

TEST_CASE("cuda: fused multi-tensor AdamW matches the CPU over several steps, with gradient scales") {
  FG_SKIP_WITHOUT_GPU();
  // Many tensors (several launches) and one large enough to continue across launches.
  std::vector<Shape> shapes;
  for (int i = 0; i < 45; ++i) shapes.push_back({1 + (i * 37) % 300});
  shapes.push_back({320 * 65536 + 123});
  shapes.push_back({384, 1152});
  shapes.push_back({7});
  for (DType dtype : {DType::Float32, DType::Float64}) {
    std::vector<Tensor> cpu_params, gpu_params;
    for (size_t i = 0; i < shapes.size(); ++i) {
      Tensor p = random_cpu(shapes[i], 200 + i, -1.0, 1.0, dtype);
      cpu_params.push_back(p.clone().detach().set_requires_grad(true));
      gpu_params.push_back(on_gpu(p).set_requires_grad(true));
    }
    auto groups = [](const std::vector<Tensor>& params) {
      std::vector<optim::ParamGroup> g(2);
      for (size_t i = 0; i < params.size(); ++i) g[i % 2].params.push_back(params[i]);
      g[0].weight_decay = 0.05;
      return g;
    };
    optim::AdamW cpu_opt(groups(cpu_params), 1e-3), gpu_opt(groups(gpu_params), 1e-3);
    for (int step = 0; step < 3; ++step) {
      for (size_t i = 0; i < shapes.size(); ++i) {
        const Tensor g = random_cpu(shapes[i], 1000 * step + i, -0.1, 0.1, dtype);
        cpu_params[i].set_grad(g);
        gpu_params[i].set_grad(on_gpu(g));
      }
      cpu_opt.set_lr(1e-3 * (step + 1));
      gpu_opt.set_lr(1e-3 * (step + 1));
      // Step 0 without a gradient scale, then a float32 and a float64 one (the
      // clipping coefficient the update applies), read where they live.
      auto scale = [&](Device device) {
        return step == 0 ? Tensor()
                         : Tensor::scalar(step == 1 ? 0.37 : 0.61,
                                          step == 1 ? DType::Float32 : DType::Float64, device);
      };
      cpu_opt.step(scale(kCPU));
      gpu_opt.step(scale(kCUDA));
    }
    const double rtol = dtype == DType::Float64 ? 1e-12 : 2e-5;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const std::string what =
          std::string("adamw ") + dtype_name(dtype) + " tensor " + std::to_string(i);
      check_close(gpu_params[i], cpu_params[i], rtol, rtol, what + " param");
      check_close(gpu_opt.states()[i % 2 == 0 ? i / 2 : (shapes.size() + 1) / 2 + i / 2].exp_avg,
                  cpu_opt.states()[i % 2 == 0 ? i / 2 : (shapes.size() + 1) / 2 + i / 2].exp_avg,
                  // float32: the two compilers fuse the moment update's multiply-adds
                  // differently (half an ulp of a product, carried across steps), which
                  // shows where m nearly cancels.
                  rtol, dtype == DType::Float64 ? 1e-15 : 1e-8, what + " exp_avg");
    }
  }
}
