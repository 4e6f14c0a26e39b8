// Times fgmoe's CUDA kernels at soft_moe_32's training shapes (batch 128, 196
// tokens, width 384, 6 heads of 64, FFN 2048, 32 experts) and, with
// --compare-pytorch, the same operations in PyTorch in the same run
// (bench/cuda_kernels_bench_torch.py): layer norm, softmax, attention, GEMM
// with bias epilogue, AdamW over the whole model, and encoder layers forward +
// backward under bf16 autocast. Device time per repetition is measured with
// CUDA events on fgmoe's stream; the table shows medians and the ratio
// PyTorch time / fgmoe time (above 1: fgmoe is faster).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/autocast.h"
#include "engine/cuda_support.h"
#include "engine/ops.h"
#include "engine/optim/adamw.h"
#include "models/soft_moe_vit.h"

#if defined(FGMOE_WITH_CUDA)
#include <cuda_runtime.h>
#endif

using namespace fg;

namespace {

struct Timing {
  double median = 0, min = 0, max = 0;  // milliseconds
};

struct Options {
  int64_t batch = 128;
  int warmup = 5, repeat = 20;
  bool compare = false;
  std::string python = "python3";
  std::string filter;
};

#if defined(FGMOE_WITH_CUDA)
void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

// Device time of run() per repetition; setup() runs before each, untimed.
Timing time_device(const Options& o, const std::function<void()>& setup,
                   const std::function<void()>& run) {
  cudaStream_t stream = static_cast<cudaStream_t>(cuda_stream());
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<double> times;
  for (int it = 0; it < o.warmup + o.repeat; ++it) {
    if (setup) setup();
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    run();
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    if (it >= o.warmup) times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return {times[times.size() / 2], times.front(), times.back()};
}
#else
Timing time_device(const Options&, const std::function<void()>&, const std::function<void()>&) {
  return {};
}
#endif

Tensor randn_cuda(const Shape& shape, uint64_t seed, DType dtype = DType::Float32,
                  double std = 1.0) {
  Generator gen(seed);
  return randn(shape, gen, 0.0, std, DType::Float32, kCUDA).to(dtype);
}

struct Row {
  std::string name;
  Timing ours;
  double flops = 0;  // per repetition, for a TFLOP/s column
};

std::map<std::string, Timing> run_pytorch(const Options& o) {
  std::map<std::string, Timing> result;
  const std::string cmd =
      o.python + " " + FGMOE_BENCH_DIR + "/cuda_kernels_bench_torch.py --batch " +
      std::to_string(o.batch) + " --warmup " + std::to_string(o.warmup) + " --repeat " +
      std::to_string(o.repeat) + (o.filter.empty() ? "" : " --filter '" + o.filter + "'");
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) {
    std::fprintf(stderr, "cannot run the PyTorch peer: %s\n", cmd.c_str());
    return result;
  }
  char line[512];
  while (std::fgets(line, sizeof(line), pipe)) {
    // "name|median|min|max" in milliseconds
    std::string s(line);
    std::vector<std::string> parts;
    size_t start = 0, bar;
    while ((bar = s.find('|', start)) != std::string::npos) {
      parts.push_back(s.substr(start, bar - start));
      start = bar + 1;
    }
    parts.push_back(s.substr(start));
    if (parts.size() != 4) continue;
    result[parts[0]] = {std::atof(parts[1].c_str()), std::atof(parts[2].c_str()),
                        std::atof(parts[3].c_str())};
  }
  if (pclose(pipe) != 0) std::fprintf(stderr, "the PyTorch peer failed: %s\n", cmd.c_str());
  return result;
}

void usage() {
  std::printf(
      "usage: fgmoe-cuda-bench [--batch N] [--warmup N] [--repeat N] [--filter TEXT]\n"
      "                        [--compare-pytorch] [--python PATH]\n"
      "Times fgmoe's CUDA kernels at soft_moe_32 training shapes; with --compare-pytorch\n"
      "also PyTorch's (PATH: a python3 with torch and CUDA, default python3).\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value after %s\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--batch")
      o.batch = std::atol(next().c_str());
    else if (arg == "--warmup")
      o.warmup = std::atoi(next().c_str());
    else if (arg == "--repeat")
      o.repeat = std::atoi(next().c_str());
    else if (arg == "--filter")
      o.filter = next();
    else if (arg == "--python")
      o.python = next();
    else if (arg == "--compare-pytorch")
      o.compare = true;
    else if (arg == "--help" || arg == "-h") {
      usage();
      return 0;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", arg.c_str());
      usage();
      return 2;
    }
  }
  if (!cuda_available()) {
    std::printf("no CUDA GPU: nothing to time\n");
    return 0;
  }
  const int64_t b = o.batch, tokens = 196, width = 384, heads = 6, head_dim = 64, ffn = 2048;
  const int64_t rows = b * tokens;
  std::vector<Row> rows_out;
  auto wanted = [&](const std::string& name) {
    return o.filter.empty() || name.find(o.filter) != std::string::npos;
  };
  auto add = [&](const std::string& name, double flops, const std::function<void()>& setup,
                 const std::function<void()>& run) {
    if (!wanted(name)) return;
    rows_out.push_back({name, time_device(o, setup, run), flops});
    std::fprintf(stderr, "timed %s\n", name.c_str());
  };

  // ---- layer norm (float32: under autocast the residual stream is float32) ----
  {
    NoGradGuard no_grad;
    const Tensor x = randn_cuda({rows, width}, 1);
    const Tensor w = randn_cuda({width}, 2), bias = randn_cuda({width}, 3);
    Tensor out = Tensor::empty({rows, width}, DType::Float32, kCUDA);
    Tensor mean = Tensor::empty({rows}, DType::Float32, kCUDA),
           rstd = Tensor::empty({rows}, DType::Float32, kCUDA);
    Backend& be = backend_for(kCUDA);
    add("layer_norm fwd fp32 (b*196, 384)", 0, nullptr,
        [&] { be.layer_norm(x, w, bias, 1e-5, rows, width, out, mean, rstd); });
    const Tensor g = randn_cuda({rows, width}, 4);
    Tensor gx = Tensor::empty({rows, width}, DType::Float32, kCUDA);
    Tensor gw = Tensor::empty({width}, DType::Float32, kCUDA),
           gb = Tensor::empty({width}, DType::Float32, kCUDA);
    add("layer_norm bwd fp32 (b*196, 384)", 0, nullptr,
        [&] { be.layer_norm_backward(g, x, mean, rstd, w, rows, width, gx, gw, gb); });
  }
  // ---- softmax ----
  {
    NoGradGuard no_grad;
    Backend& be = backend_for(kCUDA);
    const int64_t score_rows = b * heads * tokens;
    const Tensor s = randn_cuda({score_rows, tokens}, 5);
    Tensor y = Tensor::empty({score_rows, tokens}, DType::Float32, kCUDA);
    add("softmax fwd fp32 attention rows (b*6*196, 196)", 0, nullptr,
        [&] { be.softmax(s, y, score_rows, tokens, 1, false); });
    const Tensor g = randn_cuda({score_rows, tokens}, 6);
    Tensor gx = Tensor::empty({score_rows, tokens}, DType::Float32, kCUDA);
    add("softmax bwd fp32 attention rows (b*6*196, 196)", 0, nullptr,
        [&] { be.softmax_backward(y, g, gx, score_rows, tokens, 1, false); });
    const Tensor logits = randn_cuda({b, tokens, 32}, 7);
    Tensor d = Tensor::empty({b, tokens, 32}, DType::Float32, kCUDA);
    add("softmax fwd fp32 Soft MoE dispatch (b, 196, 32) over tokens", 0, nullptr,
        [&] { be.softmax(logits, d, b, tokens, 32, false); });
    add("softmax fwd fp32 Soft MoE combine (b*196, 32)", 0, nullptr,
        [&] { be.softmax(logits, d, b * tokens, 32, 1, false); });
  }
  // ---- attention (bf16, dropout 0.1 as in training) ----
  {
    const Tensor q0 = randn_cuda({b, heads, tokens, head_dim}, 8, DType::BFloat16);
    const Tensor k0 = randn_cuda({b, heads, tokens, head_dim}, 9, DType::BFloat16);
    const Tensor v0 = randn_cuda({b, heads, tokens, head_dim}, 10, DType::BFloat16);
    const Tensor grad = randn_cuda({b, heads, tokens, head_dim}, 11, DType::BFloat16);
    const double attention_flops = 4.0 * b * heads * tokens * tokens * head_dim;
    Generator gen(12);
    // "fused": the default (tensor cores for bfloat16); "fused cuda-cores": the
    // CUDA-core kernel the tensor-core one replaced; "composite": GEMMs + softmax.
    for (const std::string kind : {"fused", "fused cuda-cores", "composite"}) {
      cuda_set_fused_attention(kind != "composite");
      cuda_set_tensor_core_attention(kind == "fused");
      add("attention fwd bf16 " + kind + " (b, 6, 196, 64), p 0.1", attention_flops, nullptr, [&] {
        NoGradGuard no_grad;
        scaled_dot_product_attention(q0, k0, v0, 0.1, true, &gen);
      });
      Tensor q, k, v, out;
      add(
          "attention fwd+bwd bf16 " + kind + " (b, 6, 196, 64), p 0.1", 3.5 * attention_flops,
          [&] {
            q = q0.detach().set_requires_grad(true);
            k = k0.detach().set_requires_grad(true);
            v = v0.detach().set_requires_grad(true);
          },
          [&] {
            out = scaled_dot_product_attention(q, k, v, 0.1, true, &gen);
            out.backward(grad);
          });
    }
    cuda_set_fused_attention(true);
    cuda_set_tensor_core_attention(true);
  }
  // ---- GEMM with bias epilogue ----
  {
    NoGradGuard no_grad;
    const double flops = 2.0 * rows * width * ffn;
    const Tensor x = randn_cuda({rows, width}, 13, DType::BFloat16);
    const Tensor w = randn_cuda({ffn, width}, 14, DType::BFloat16, 0.05);
    const Tensor bias = randn_cuda({ffn}, 15, DType::BFloat16);
    add("linear+bias bf16 (b*196, 384) -> 2048", flops, nullptr, [&] { linear(x, w, bias); });
    const Tensor x32 = x.to(DType::Float32), w32 = w.to(DType::Float32),
                 b32 = bias.to(DType::Float32);
    cuda_set_allow_tf32(true);
    add("linear+bias fp32 tf32 (b*196, 384) -> 2048", flops, nullptr,
        [&] { linear(x32, w32, b32); });
    cuda_set_allow_tf32(false);
    const Tensor h = randn_cuda({rows, ffn}, 16, DType::BFloat16);
    const Tensor w2 = randn_cuda({width, ffn}, 17, DType::BFloat16, 0.02);
    const Tensor b2 = randn_cuda({width}, 18, DType::BFloat16);
    add("linear+bias bf16 (b*196, 2048) -> 384", flops, nullptr, [&] { linear(h, w2, b2); });
  }
  // ---- AdamW over the whole soft_moe_32 model ----
  if (wanted("adamw")) {
    models::SoftMoEViT model(models::model_preset("soft_moe_32", 100));
    model.to(kCUDA);
    std::vector<Tensor> decay, no_decay;
    model.split_decay_groups(decay, no_decay);
    uint64_t seed = 100;
    for (const Tensor& p : model.parameters())
      p.set_grad(randn_cuda(p.shape(), seed++, DType::Float32, 1e-3));
    optim::AdamW opt({{decay, 0.05}, {no_decay, 0.0}}, 5e-4);
    add("adamw step, all soft_moe_32 parameters (fp32)", 0, nullptr, [&] { opt.step(); });
  }
  // ---- encoder layers forward + backward, bf16 autocast, training mode ----
  for (int64_t index : {int64_t{0}, int64_t{7}}) {
    const std::string name = std::string("encoder layer ") + (index == 0 ? "dense" : "Soft MoE") +
                             " fwd+bwd bf16 autocast (b, 196, 384)";
    if (!wanted(name)) continue;
    models::ModelConfig config = models::model_preset("soft_moe_32", 100);
    Generator init(20), drop(21);
    models::EncoderLayer layer(config, index, init, drop);
    layer.to(kCUDA);
    layer.train();
    const Tensor x0 = randn_cuda({b, tokens, width}, 22);
    const Tensor grad = randn_cuda({b, tokens, width}, 23);
    Tensor x;
    add(
        name, 0,
        [&] {
          layer.zero_grad();
          x = x0.detach().set_requires_grad(true);
        },
        [&] {
          models::EncoderLayer::Output out;
          {
            AutocastGuard autocast;
            out = layer.forward(x);
          }
          out.x.backward(grad);
        });
  }

  std::map<std::string, Timing> peer;
  if (o.compare) peer = run_pytorch(o);
  std::printf("\nfgmoe CUDA kernels, batch %lld, median of %d (min-max), milliseconds\n",
              static_cast<long long>(b), o.repeat);
  std::printf("%-64s %22s %10s %8s %9s\n", "case", "fgmoe", "pytorch", "ratio", "TFLOP/s");
  for (const Row& r : rows_out) {
    char ours[64];
    std::snprintf(ours, sizeof(ours), "%.3f (%.3f-%.3f)", r.ours.median, r.ours.min, r.ours.max);
    const auto it = peer.find(r.name);
    char theirs[32] = "-", ratio[32] = "-", tflops[32] = "-";
    if (it != peer.end()) {
      std::snprintf(theirs, sizeof(theirs), "%.3f", it->second.median);
      std::snprintf(ratio, sizeof(ratio), "%.2fx", it->second.median / r.ours.median);
    }
    if (r.flops > 0)
      std::snprintf(tflops, sizeof(tflops), "%.1f", r.flops / (r.ours.median * 1e-3) / 1e12);
    std::printf("%-64s %22s %10s %8s %9s\n", r.name.c_str(), ours, theirs, ratio, tflops);
  }
  return 0;
}
