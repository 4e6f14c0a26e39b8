// fgmoe-bench: times whole training steps (forward with the auxiliary loss,
// backward, gradient clipping, AdamW) of a model preset on synthetic in-memory
// batches, and with --compare-pytorch the same model in PyTorch in the same run.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/optim/adamw.h"
#include "models/soft_moe_vit.h"

using namespace fg;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void usage() {
  std::printf(
      "usage: fgmoe-bench [options]\n"
      "Times full training steps (forward + auxiliary loss + backward + clipping + AdamW)\n"
      "on synthetic batches and prints images/s and step-time statistics.\n\n"
      "  --model NAME        soft_moe_32 (default), soft_moe_128 or vit\n"
      "  --batch N           images per step (default 8)\n"
      "  --image-size N      input resolution (default 224)\n"
      "  --classes N         number of classes (default 1000)\n"
      "  --device D          cpu (default) or cuda\n"
      "  --precision P       fp32 (default) or bf16\n"
      "  --warmup N          untimed steps first (default 2)\n"
      "  --steps N           timed steps (default 5)\n"
      "  --threads N         CPU threads (default: all)\n"
      "  --compare-pytorch   also time the PyTorch reference model and print the ratio\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_name = "soft_moe_32", device_name = "cpu", precision = "fp32";
  int64_t batch = 8, image_size = 224, classes = 1000;
  int warmup = 2, steps = 5, threads = omp_get_max_threads();
  bool compare = false;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        FG_CHECK(i + 1 < argc, "missing value after ", arg);
        return argv[++i];
      };
      auto number = [&]() -> long {
        const std::string v = value();
        char* end = nullptr;
        const long n = std::strtol(v.c_str(), &end, 10);
        FG_CHECK(end && *end == '\0' && n > 0, arg, " needs a positive integer, got '", v, "'");
        return n;
      };
      if (arg == "--model") model_name = value();
      else if (arg == "--batch") batch = number();
      else if (arg == "--image-size") image_size = number();
      else if (arg == "--classes") classes = number();
      else if (arg == "--device") device_name = value();
      else if (arg == "--precision") precision = value();
      else if (arg == "--warmup") warmup = static_cast<int>(number());
      else if (arg == "--steps") steps = static_cast<int>(number());
      else if (arg == "--threads") threads = static_cast<int>(number());
      else if (arg == "--compare-pytorch") compare = true;
      else if (arg == "--help" || arg == "-h") { usage(); return 0; }
      else FG_CHECK(false, "unknown argument ", arg, " (see --help)");
    }
    FG_CHECK(precision == "fp32", "precision ", precision, " is not available yet on this device");
    omp_set_num_threads(threads);
    const Device device = Device::parse(device_name);

    models::ModelConfig config = models::model_preset(model_name, classes);
    config.image_size = image_size;
    models::SoftMoEViT model(config, 0, 1);
    model.to(device);
    model.train();
    std::vector<Tensor> decay, no_decay;
    model.split_decay_groups(decay, no_decay);
    optim::AdamW opt({{decay, 0.05}, {no_decay, 0.0}}, 1e-4);

    Generator gen(2);
    const Tensor images = randn({batch, 3, image_size, image_size}, gen).to(device);
    const Tensor masks = gt(rand({batch, 1, image_size, image_size}, gen), 0.5).to(DType::Float32).to(device);
    const Tensor targets = softmax(randn({batch, classes}, gen), -1).to(device);
    std::vector<double> times;
    for (int it = 0; it < warmup + steps; ++it) {
      const double t0 = now();
      auto out = model.forward(images, masks);
      Tensor loss = soft_cross_entropy(out.logits, targets);
      if (out.aux.defined()) loss = add(loss, mul(out.aux, config.aux_weight));
      loss.backward();
      optim::clip_grad_norm_(model.parameters(), 5.0);
      opt.step();
      opt.zero_grad();
      backend_for(device).synchronize();
      const double t1 = now();
      if (it >= warmup) times.push_back(t1 - t0);
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    std::printf("%s, batch %lld, %lldpx, %s %s, %d threads, %d timed steps\n", model_name.c_str(),
                static_cast<long long>(batch), static_cast<long long>(image_size), device_name.c_str(),
                precision.c_str(), threads, steps);
    std::printf("  fgmoe   : %7.2f images/s  step median %8.1f ms (min %.1f, max %.1f)\n",
                static_cast<double>(batch) / median, median * 1e3, times.front() * 1e3,
                times.back() * 1e3);
    if (!compare) return 0;
    const std::string cmd = std::string(FGMOE_PYTHON) + " " + FGMOE_SOURCE_DIR +
                            "/bench/step_bench_torch.py --model " + model_name + " --batch " +
                            std::to_string(batch) + " --image-size " + std::to_string(image_size) +
                            " --classes " + std::to_string(classes) + " --warmup " +
                            std::to_string(warmup) + " --steps " + std::to_string(steps) +
                            " --threads " + std::to_string(threads) + " --device " + device_name;
    FILE* pipe = popen(cmd.c_str(), "r");
    FG_CHECK(pipe != nullptr, "cannot run the PyTorch peer: ", cmd);
    double p_median = 0, p_min = 0, p_max = 0;
    const int got = std::fscanf(pipe, "%lf %lf %lf", &p_median, &p_min, &p_max);
    const int status = pclose(pipe);
    FG_CHECK(got == 3 && status == 0, "the PyTorch peer failed: ", cmd);
    std::printf("  pytorch : %7.2f images/s  step median %8.1f ms (min %.1f, max %.1f)\n",
                static_cast<double>(batch) / p_median, p_median * 1e3, p_min * 1e3, p_max * 1e3);
    std::printf("  ratio (fgmoe images/s over PyTorch's): %.2fx\n", p_median / median);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fgmoe-bench: %s\n", e.what());
    return 1;
  }
}
