// Times one forward + backward of a post-norm transformer encoder layer as the
// reference model uses it (width 384, 6 heads, FFN 2048, ReLU, dropout 0.1)
// and, with --compare-pytorch, the same layer in PyTorch in the same run.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/nn/layers.h"

using namespace fg;

namespace {

struct EncoderLayer : nn::Module {
  EncoderLayer(int64_t width, int64_t heads, int64_t ffn, double p, Generator& gen)
      : dropout(p), gen(&gen) {
    self_attn = register_module("self_attn", std::make_shared<nn::MultiheadAttention>(width, heads, p, gen));
    norm1 = register_module("norm1", std::make_shared<nn::LayerNorm>(width));
    norm2 = register_module("norm2", std::make_shared<nn::LayerNorm>(width));
    linear = register_module("linear", std::make_shared<nn::Linear>(width, ffn, true, gen));
    ffn_out = register_module("ffn", std::make_shared<nn::Linear>(ffn, width, true, gen));
  }
  Tensor forward(const Tensor& x) const {
    const bool train = is_training();
    Tensor h = norm1->forward(add(x, fg::dropout(self_attn->forward(x), dropout, train, *gen)));
    Tensor f = fg::relu_dropout(linear->forward(h), dropout, train, *gen);
    f = fg::dropout(ffn_out->forward(f), dropout, train, *gen);
    return norm2->forward(add(h, f));
  }
  double dropout;
  Generator* gen;
  std::shared_ptr<nn::MultiheadAttention> self_attn;
  std::shared_ptr<nn::LayerNorm> norm1, norm2;
  std::shared_ptr<nn::Linear> linear, ffn_out;
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Stats {
  double median, min, max;
};

Stats summarize(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  return {times[times.size() / 2], times.front(), times.back()};
}

void usage() {
  std::printf(
      "usage: fgmoe-layer-bench [--batch N] [--tokens N] [--width N] [--heads N] [--ffn N]\n"
      "                         [--warmup N] [--repeat N] [--threads N] [--compare-pytorch]\n"
      "Times forward+backward of one encoder layer on the CPU (float32, dropout 0.1).\n");
}

}  // namespace

int main(int argc, char** argv) {
  int64_t batch = 8, tokens = 196, width = 384, heads = 6, ffn = 2048;
  int warmup = 3, repeat = 10, threads = omp_get_max_threads();
  bool compare = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value after %s\n", arg.c_str());
        std::exit(2);
      }
      return std::strtol(argv[++i], nullptr, 10);
    };
    if (arg == "--batch") batch = next();
    else if (arg == "--tokens") tokens = next();
    else if (arg == "--width") width = next();
    else if (arg == "--heads") heads = next();
    else if (arg == "--ffn") ffn = next();
    else if (arg == "--warmup") warmup = static_cast<int>(next());
    else if (arg == "--repeat") repeat = static_cast<int>(next());
    else if (arg == "--threads") threads = static_cast<int>(next());
    else if (arg == "--compare-pytorch") compare = true;
    else if (arg == "--help" || arg == "-h") { usage(); return 0; }
    else { std::fprintf(stderr, "unknown argument %s\n", arg.c_str()); usage(); return 2; }
  }
  omp_set_num_threads(threads);
  setenv("OPENBLAS_NUM_THREADS", std::to_string(threads).c_str(), 1);

  Generator gen(0);
  EncoderLayer layer(width, heads, ffn, 0.1, gen);
  layer.train();
  const Tensor x = randn({batch, tokens, width}, gen);
  std::vector<double> times;
  for (int it = 0; it < warmup + repeat; ++it) {
    const double t0 = now();
    Tensor y = layer.forward(x);
    mean(y).backward();
    const double t1 = now();
    layer.zero_grad();
    if (it >= warmup) times.push_back(t1 - t0);
  }
  const Stats ours = summarize(times);
  std::printf("encoder layer fwd+bwd, batch %lld, tokens %lld, width %lld, ffn %lld, %d threads\n",
              static_cast<long long>(batch), static_cast<long long>(tokens),
              static_cast<long long>(width), static_cast<long long>(ffn), threads);
  std::printf("  fgmoe   : median %8.2f ms  (min %.2f, max %.2f)\n", ours.median * 1e3,
              ours.min * 1e3, ours.max * 1e3);
  if (!compare) return 0;
  const std::string cmd = std::string(FGMOE_PYTHON) + " " + FGMOE_BENCH_DIR +
                          "/layer_bench_torch.py --batch " + std::to_string(batch) +
                          " --tokens " + std::to_string(tokens) + " --width " +
                          std::to_string(width) + " --heads " + std::to_string(heads) +
                          " --ffn " + std::to_string(ffn) + " --warmup " + std::to_string(warmup) +
                          " --repeat " + std::to_string(repeat) + " --threads " +
                          std::to_string(threads);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) {
    std::fprintf(stderr, "cannot run the PyTorch peer: %s\n", cmd.c_str());
    return 1;
  }
  double median = 0, lo = 0, hi = 0;
  const int got = std::fscanf(pipe, "%lf %lf %lf", &median, &lo, &hi);
  const int status = pclose(pipe);
  if (got != 3 || status != 0) {
    std::fprintf(stderr, "the PyTorch peer failed (is python3-torch installed?)\n");
    return 1;
  }
  std::printf("  pytorch : median %8.2f ms  (min %.2f, max %.2f)\n", median * 1e3, lo * 1e3, hi * 1e3);
  std::printf("  ratio (pytorch time / fgmoe time): %.2fx\n", median / ours.median);
  return 0;
}
