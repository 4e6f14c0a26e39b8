// fgmoe-bench: times whole training steps (forward with the auxiliary loss,
// backward, gradient clipping, AdamW) of a model preset, on synthetic in-memory
// batches or through the data loader, and with --compare-pytorch the same model
// in PyTorch (bench/step_bench_torch.py) in the same run.
#include <omp.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "engine/autocast.h"
#include "engine/backend.h"
#include "engine/cuda_graph.h"
#include "engine/cuda_support.h"
#include "engine/optim/adamw.h"
#include "models/reference_config.h"
#include "models/soft_moe_vit.h"
#include "tools/cli.h"

using namespace fg;
using Json = nlohmann::ordered_json;

namespace {

const char* kUsage = R"(usage: fgmoe-bench [options]

Times whole training steps (forward + auxiliary loss + backward + gradient
clipping + AdamW) and prints step-time statistics (median, min, max,
interquartile range), images/s, the model FLOPs per image and the achieved
FLOP rate (and model FLOP utilization on CUDA), and peak memory. Batches are
synthetic and held in memory unless --data-path feeds them through the loader.

model:
  --model NAME          soft_moe_32 (default), soft_moe_128 or vit
  --image-size N        input resolution (default 224)
  --classes N           number of classes (default 1000; with --data-path the dataset's)
  --patch-size N        override the preset's patch size (16)
  --width N             override the transformer width (384)
  --depth N             override the number of encoder layers (8); Soft MoE presets keep
                        LayerScale and the auxiliary loss on the last layer
  --heads N             override the attention heads (6)
  --ffn-width N         override the FFN hidden width (2048)
  --moe-layers N        override how many of the last layers use Soft MoE (2; vit: 0)
  --experts N           override the experts per Soft MoE layer (32 or 128)

run:
  --batch N             images per step (default 8)
  --device D            cpu (default) or cuda
  --precision P         fp32 (default) or bf16 (CUDA only: forward and loss under bf16
                        autocast, float32 master weights and optimizer)
  --no-tf32             CUDA fp32: keep float32 GEMMs off the TF32 tensor cores
                        (allowed by default, on both sides alike)
  --attention A         fused (default): the backend's fused attention kernel (tensor
                        cores for bf16 on CUDA); cuda-cores: the fused CUDA-core kernel
                        even for bf16; composite: matmul, softmax, dropout and matmul as
                        separate ops (to compare them on a device; the PyTorch peer is
                        not affected)
  --cuda-graph          CUDA: after the warm-up (at least one step), capture one whole
                        step (forward, loss, backward, clipping, AdamW) as a CUDA graph
                        and time its replays: one launch a step instead of hundreds
                        (the PyTorch peers run without graphs)
  --warmup N            untimed steps first (default 2)
  --steps N             timed steps (default 5)
  --threads N           CPU threads, for fgmoe and the PyTorch peer (default: all)
  --breakdown           also time forward (with the loss), backward and optimizer
                        (clipping, AdamW, zero_grad) apart; on CUDA this synchronizes
                        between phases, which costs a little
  --peak-tflops X       peak rate for the utilization figure. Default on CUDA, as an
                        assumption stated in the output: the H100 SXM's dense peak,
                        989 (bf16), 494 (fp32 with TF32) or 67 (fp32). None on the CPU
                        (GFLOP/s is printed there). E.g. --peak-tflops 790 for the
                        H200's measured dense bf16 rate.

data:
  --data-path DIR       feed the steps through the data loader from DIR/train (and
                        DIR/train_mask when present) with the reference's training
                        transforms; also times the loader alone over as many batches
                        and says whether it keeps up with the step
  --workers N           loader worker threads (default: --threads)

peer:
  --compare-pytorch     also time the PyTorch reference model, eager (bf16: under
                        torch.autocast; fp32 on CUDA: TF32 as above), same batch, steps
                        and threads, and print the ratios
  --compile             also time it under torch.compile (implies --compare-pytorch;
                        reported as unavailable where the torch has no torch.compile)
  --compile-mode MODE   torch.compile's mode: default, reduce-overhead (CUDA graphs:
                        compare with --cuda-graph), max-autotune or
                        max-autotune-no-cudagraphs (implies --compile)
  --python PATH         Python interpreter with torch for the peer (default: the one
                        found at configure time)

output:
  --json FILE           write every number to FILE as JSON
  --help                this text

Exit status: 0; 1 on an error; 3 when a PyTorch peer failed (its row says why;
fgmoe's numbers are still printed and written).

Ratios are the peer's median step time over fgmoe's (above 1: fgmoe is faster).
)";

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Options {
  std::string model = "soft_moe_32", device = "cpu", precision = "fp32", attention = "fused";
  int64_t batch = 8, image_size = 224, classes = 1000;
  bool classes_given = false;
  std::map<std::string, int64_t> overrides;  // --patch-size etc.
  int warmup = 2, steps = 5, threads = 0, workers = 0;
  bool tf32 = true, breakdown = false, compare = false, compile = false, cuda_graph = false;
  double peak_tflops = 0;
  std::string python = FGMOE_PYTHON, data_path, json_path, compile_mode = "default";
};

Options parse_options(int argc, char** argv, bool& help) {
  Options o;
  o.threads = omp_get_max_threads();
  const std::vector<std::string> override_flags = {"--patch-size", "--width",     "--depth",
                                                   "--heads",      "--ffn-width", "--moe-layers",
                                                   "--experts"};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&] { return tools::option_value(argc, argv, i); };
    auto positive = [&] { return tools::option_integer(arg, value(), 1); };
    if (arg == "--help" || arg == "-h") {
      help = true;
      return o;
    } else if (arg == "--model") o.model = value();
    else if (arg == "--batch") o.batch = positive();
    else if (arg == "--image-size") o.image_size = positive();
    else if (arg == "--classes") { o.classes = positive(); o.classes_given = true; }
    else if (std::find(override_flags.begin(), override_flags.end(), arg) != override_flags.end())
      o.overrides[arg] = tools::option_integer(arg, value(), arg == "--moe-layers" ? 0 : 1);
    else if (arg == "--device") o.device = value();
    else if (arg == "--precision") o.precision = value();
    else if (arg == "--no-tf32") o.tf32 = false;
    else if (arg == "--attention") o.attention = value();
    else if (arg == "--warmup") o.warmup = static_cast<int>(tools::option_integer(arg, value(), 0));
    else if (arg == "--steps") o.steps = static_cast<int>(positive());
    else if (arg == "--threads") o.threads = static_cast<int>(positive());
    else if (arg == "--workers") o.workers = static_cast<int>(tools::option_integer(arg, value(), 0));
    else if (arg == "--breakdown") o.breakdown = true;
    else if (arg == "--cuda-graph") o.cuda_graph = true;
    else if (arg == "--peak-tflops") {
      const std::string v = value();
      char* end = nullptr;
      o.peak_tflops = std::strtod(v.c_str(), &end);
      FG_CHECK(!v.empty() && end && *end == '\0' && o.peak_tflops > 0 && std::isfinite(o.peak_tflops),
               "--peak-tflops needs a positive number, got '", v, "'");
    } else if (arg == "--compare-pytorch") o.compare = true;
    else if (arg == "--compile") o.compare = o.compile = true;
    else if (arg == "--compile-mode") {
      o.compile_mode = value();
      FG_CHECK(o.compile_mode == "default" || o.compile_mode == "reduce-overhead" ||
                   o.compile_mode == "max-autotune" || o.compile_mode == "max-autotune-no-cudagraphs",
               "--compile-mode must be default, reduce-overhead, max-autotune or "
               "max-autotune-no-cudagraphs, got '", o.compile_mode, "'");
      o.compare = o.compile = true;
    }
    else if (arg == "--python") o.python = value();
    else if (arg == "--data-path") o.data_path = value();
    else if (arg == "--json") o.json_path = value();
    else FG_CHECK(false, "unknown argument '", arg, "' (see --help)");
  }
  FG_CHECK(o.precision == "fp32" || o.precision == "bf16", "--precision must be fp32 or bf16, got '",
           o.precision, "'");
  FG_CHECK(o.attention == "fused" || o.attention == "composite" || o.attention == "cuda-cores",
           "--attention must be fused, cuda-cores or composite, got '", o.attention, "'");
  FG_CHECK(o.workers == 0 || !o.data_path.empty(), "--workers needs --data-path");
  FG_CHECK(!o.cuda_graph || o.device == "cuda", "--cuda-graph needs --device cuda");
  FG_CHECK(!o.cuda_graph || o.warmup >= 1, "--cuda-graph needs at least one warm-up step (--warmup 1): "
           "the optimizer's state and the libraries' workspaces must exist before the capture");
  FG_CHECK(!o.cuda_graph || !o.breakdown, "--cuda-graph runs the step as one launch: --breakdown cannot "
           "time its phases apart");
  if (o.workers == 0) o.workers = o.threads;
  if (!o.data_path.empty())
    FG_CHECK(std::filesystem::is_directory(std::filesystem::path(o.data_path) / "train"),
             "--data-path: no train/ folder in ", o.data_path);
  if (!o.json_path.empty()) {
    const std::filesystem::path parent = std::filesystem::absolute(o.json_path).parent_path();
    FG_CHECK(std::filesystem::is_directory(parent), "--json: folder ", parent.string(), " does not exist");
  }
  FG_CHECK(!o.compare || !o.python.empty(),
           "--compare-pytorch: no Python interpreter was found at configure time; give --python PATH");
  return o;
}

models::ModelConfig model_config(const Options& o, int64_t classes) {
  models::ModelConfig c = models::model_preset(o.model, classes);
  c.image_size = o.image_size;
  for (const auto& [flag, v] : o.overrides) {
    if (flag == "--patch-size") c.patch_size = v;
    else if (flag == "--width") c.width = v;
    else if (flag == "--heads") c.heads = v;
    else if (flag == "--ffn-width") c.ffn_width = v;
    else if (flag == "--experts") c.num_experts = v;
    else if (flag == "--moe-layers") c.moe_layers = v;
    else if (flag == "--depth") {
      // Keep the preset's structure: the last layers use Soft MoE, and the very
      // last carries LayerScale and feeds the auxiliary loss.
      c.depth = v;
      if (!o.overrides.count("--moe-layers")) c.moe_layers = std::min(c.moe_layers, v);
      if (!c.layer_scale_layers.empty()) c.layer_scale_layers = {v - 1};
      if (c.aux_layer >= 0) c.aux_layer = v - 1;
    }
  }
  if (c.moe_layers == 0) c.aux_layer = -1;
  c.validate();
  return c;
}

// ---------------------------------------------------------------- statistics

struct Stats {
  double median = 0, min = 0, max = 0, q1 = 0, q3 = 0;
  double iqr() const { return q3 - q1; }
};

double quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

Stats stats_of(std::vector<double> v) {
  FG_CHECK(!v.empty(), "no timings");
  std::sort(v.begin(), v.end());
  return {quantile(v, 0.5), v.front(), v.back(), quantile(v, 0.25), quantile(v, 0.75)};
}

Json stats_json(const std::vector<double>& times) {
  const Stats s = stats_of(times);
  return Json{{"times_s", times}, {"median_s", s.median}, {"min_s", s.min},  {"max_s", s.max},
              {"q1_s", s.q1},     {"q3_s", s.q3},         {"iqr_s", s.iqr()}};
}

const char* kPhases[] = {"forward", "backward", "optimizer"};

// One measured side (fgmoe or a PyTorch variant).
struct Side {
  std::string name;
  bool available = false;
  std::string why;  // when unavailable
  bool failed = false;  // the peer's process failed (not merely unavailable, as torch.compile can be)
  std::vector<double> times;
  std::map<std::string, std::vector<double>> phases;
  double peak_memory = -1, max_rss = -1, tensor_peak = -1;
  std::string torch_version;
};

// ---------------------------------------------------------------- machine

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(colon + 1);
        name.erase(0, name.find_first_not_of(' '));
        return name;
      }
    }
  return "unknown CPU";
}

std::vector<double> load_average() {
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) != 3) return {};
  return {load[0], load[1], load[2]};
}

// The process's peak resident set. VmHWM belongs to this program's address
// space; getrusage's ru_maxrss also keeps the peak of whatever process was
// replaced by exec (e.g. a Python test driver that forked this tool), so it is
// only the fallback.
double max_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) * 1024.0;  // kB
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;  // kilobytes on Linux
}

// ---------------------------------------------------------------- the PyTorch peer

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

Side run_peer(const Options& o, const models::ModelConfig& config, const std::string& variant) {
  Side side;
  side.name = "PyTorch " + variant;
  std::vector<std::string> args = {o.python, std::string(FGMOE_SOURCE_DIR) + "/bench/step_bench_torch.py",
                                   "--variant", variant, "--config", models::reference_config_json(config).dump(),
                                   "--device", o.device, "--precision", o.precision,
                                   "--batch", std::to_string(o.batch),
                                   "--warmup", std::to_string(o.warmup),
                                   "--steps", std::to_string(o.steps),
                                   "--threads", std::to_string(o.threads)};
  if (!o.tf32) args.push_back("--no-tf32");
  if (o.breakdown) args.push_back("--breakdown");
  if (variant == "compiled") {
    args.push_back("--compile-mode");
    args.push_back(o.compile_mode);
  }
  std::string cmd;
  for (const std::string& a : args) {
    if (!cmd.empty()) cmd += ' ';
    cmd += shell_quote(a);
  }
  std::fflush(stdout);
  FILE* pipe = popen(cmd.c_str(), "r");  // the peer's standard error reaches the user directly
  FG_CHECK(pipe != nullptr, "cannot start the PyTorch peer: ", cmd);
  std::string output;
  char buffer[4096];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, got);
  const int status = pclose(pipe);
  std::string json_line;
  size_t start = 0;
  while (start < output.size()) {
    size_t end = output.find('\n', start);
    if (end == std::string::npos) end = output.size();
    const std::string line = output.substr(start, end - start);
    if (!line.empty() && line.front() == '{') json_line = line;
    else if (!line.empty()) std::printf("  [peer] %s\n", line.c_str());
    start = end + 1;
  }
  // A peer that fails (no torch for that Python, a crash inside the compiler, out
  // of memory) is reported in the table; fgmoe's own measurement stands.
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto unavailable = [&](const std::string& why) {
    std::fprintf(stderr, "fgmoe-bench: warning: the PyTorch peer (%s) %s. Command: %s\n", variant.c_str(),
                 why.c_str(), cmd.c_str());
    side.why = "failed: " + why;
    side.failed = true;
    return side;
  };
  if (code != 0)
    return unavailable(WIFSIGNALED(status) ? "was killed by signal " + std::to_string(WTERMSIG(status))
                                           : "exited with status " + std::to_string(code) +
                                                 " (its messages are above)");
  if (json_line.empty()) return unavailable("printed no result");
  Json r;
  try {
    r = Json::parse(json_line);
  } catch (const std::exception& e) {
    return unavailable(std::string("printed a result that is not JSON (") + e.what() + ")");
  }
  side.torch_version = r.value("torch_version", "");
  if (!r.value("ok", false)) {
    side.why = r.value("unavailable", "the peer reported no reason");
    return side;
  }
  side.available = true;
  side.times = r.at("times").get<std::vector<double>>();
  FG_CHECK(static_cast<int>(side.times.size()) == o.steps, "the PyTorch peer timed ", side.times.size(),
           " steps instead of ", o.steps);
  if (r.contains("phases"))
    for (const char* p : kPhases) side.phases[p] = r["phases"].at(p).get<std::vector<double>>();
  if (r.contains("peak_memory_bytes")) side.peak_memory = r["peak_memory_bytes"].get<double>();
  if (r.contains("max_rss_bytes")) side.max_rss = r["max_rss_bytes"].get<double>();
  if (r.contains("tensor_peak_bytes")) side.tensor_peak = r["tensor_peak_bytes"].get<double>();
  for (const auto& note : r.value("notes", Json::array())) std::printf("  [peer] %s\n", note.get<std::string>().c_str());
  return side;
}

// ---------------------------------------------------------------- printing

std::string mib(double bytes) {
  if (bytes < 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f MiB", bytes / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    bool help = false;
    const Options o = parse_options(argc, argv, help);
    if (help) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    omp_set_num_threads(o.threads);
    const Device device = Device::parse(o.device);
    const bool cuda = device.is_cuda();
    FG_CHECK(o.precision == "fp32" || cuda, "--precision bf16 runs on CUDA only (the CPU backend computes in "
             "float32; autocast never lowers CPU tensors); use --device cuda or --precision fp32");
    if (cuda) {
      FG_CHECK(cuda_available(), "--device cuda: ",
               cuda_compiled() ? "no CUDA GPU was found" : "fgmoe was built without CUDA");
      // As the peer: TF32 for float32 matmuls in fp32 mode only (under bf16 autocast
      // the matmuls run in bfloat16 and PyTorch's default, TF32 off, is kept).
      cuda_set_allow_tf32(o.tf32 && o.precision == "fp32");
    }
    cpu_set_fused_attention(o.attention != "composite");
    cuda_set_fused_attention(o.attention != "composite");
    cuda_set_tensor_core_attention(o.attention == "fused");
    Backend& backend = backend_for(device);

    // ---- data (optional): the loader with the reference's training transforms
    std::shared_ptr<const data::ImageFolderDataset> dataset;
    std::unique_ptr<data::DataLoader> loader;
    int64_t classes = o.classes;
    bool masks_on_disk = false;
    if (!o.data_path.empty()) {
      masks_on_disk = std::filesystem::is_directory(std::filesystem::path(o.data_path) / "train_mask");
      dataset = std::make_shared<const data::ImageFolderDataset>(
          data::ImageFolderDataset::scan(o.data_path, "train", masks_on_disk ? "train_mask" : ""));
      FG_CHECK(!o.classes_given || o.classes == dataset->num_classes(), "--classes ", o.classes,
               " but the dataset in ", o.data_path, " has ", dataset->num_classes(), " classes");
      classes = dataset->num_classes();
      FG_CHECK(dataset->size() >= o.batch, "the dataset in ", o.data_path, " has ", dataset->size(),
               " training images, fewer than one batch of ", o.batch);
      data::DataOptions dopt;
      dopt.img_size = static_cast<int>(o.image_size);
      dopt.masks = masks_on_disk;
      dopt.validate();
      data::LoaderOptions lopt;
      lopt.batch_size = o.batch;
      lopt.num_workers = o.workers;
      lopt.train = true;
      lopt.shuffle = true;
      lopt.drop_last = true;
      if (cuda) lopt.allocator = data::pinned_host_allocator();  // as the trainer's DATA.PIN_MEMORY
      loader = std::make_unique<data::DataLoader>(dataset, dopt, lopt);
    }

    const models::ModelConfig config = model_config(o, classes);
    models::SoftMoEViT model(config, 0, 1);
    model.to(device);
    model.train();
    std::vector<Tensor> decay, no_decay;
    model.split_decay_groups(decay, no_decay);
    optim::AdamW opt({{decay, 0.05}, {no_decay, 0.0}}, 1e-4);
    const bool bf16 = o.precision == "bf16";

    const double forward_flops = model.forward_flops_per_image();
    const double step_flops_per_image = 3 * forward_flops;
    double peak_tflops = o.peak_tflops;
    std::string peak_basis = o.peak_tflops > 0 ? "given with --peak-tflops" : "";
    if (cuda && peak_tflops <= 0) {
      peak_tflops = bf16 ? 989 : (o.tf32 ? 494 : 67);
      peak_basis = bf16 ? "assumed: H100 SXM dense BF16 peak" :
                   (o.tf32 ? "assumed: H100 SXM dense TF32 peak" : "assumed: H100 SXM FP32 peak");
    }

    // ---- header
    const std::vector<double> load_before = load_average();
    std::printf("%s (%.4gM parameters), batch %lld, %lld px, %s %s%s, %d threads, %d timed steps after %d "
                "warm-up\n",
                o.model.c_str(), model.parameter_count() / 1e6, static_cast<long long>(o.batch),
                static_cast<long long>(o.image_size), o.device.c_str(), o.precision.c_str(),
                cuda && !bf16 ? (o.tf32 ? " (TF32 allowed)" : " (no TF32)") : "", o.threads, o.steps,
                o.warmup);
    if (o.attention == "composite")
      std::printf("attention: composite (matmul, softmax, dropout, matmul)\n");
    else if (o.attention == "cuda-cores")
      std::printf("attention: fused, CUDA cores only (no tensor-core kernel for bfloat16)\n");
    std::printf("machine: %s, %u hardware threads, load average %.2f %.2f %.2f\n", cpu_model().c_str(),
                std::thread::hardware_concurrency(), load_before.size() == 3 ? load_before[0] : 0.0,
                load_before.size() == 3 ? load_before[1] : 0.0, load_before.size() == 3 ? load_before[2] : 0.0);
    std::printf("work: %.3f GFLOP forward per image, %.3f GFLOP per image per training step (3x forward; "
                "matmul FLOPs, multiply-add = 2)\n",
                forward_flops / 1e9, step_flops_per_image / 1e9);

    // ---- inputs
    Generator gen(2);
    Tensor images, masks, mask_valid, targets;
    if (!loader) {
      images = randn({o.batch, config.num_channels, o.image_size, o.image_size}, gen).to(device);
      masks = gt(rand({o.batch, 1, o.image_size, o.image_size}, gen), 0.5).to(DType::Float32).to(device);
      targets = softmax(randn({o.batch, classes}, gen), -1).to(device);
    }
    int64_t epoch = 0;
    auto next_batch = [&]() {
      std::optional<data::Batch> b = loader->next();
      if (!b) {
        loader->start_epoch(++epoch);
        b = loader->next();
        FG_CHECK(b.has_value(), "the loader delivered no batch in epoch ", epoch);
      }
      return std::move(*b);
    };

    // ---- the loader alone, over as many batches as the timed steps
    double loader_seconds = 0;
    if (loader) {
      loader->start_epoch(epoch);
      const double t0 = now();
      for (int i = 0; i < o.steps; ++i) next_batch();
      loader_seconds = now() - t0;
      loader->start_epoch(++epoch);
    }

    // ---- fgmoe's steps
    Side fg_side;
    fg_side.name = "fgmoe";
    fg_side.available = true;
    std::vector<double> wait_times, end_to_end;
    BatchUploader uploader(device);
    // What the step reads: the batch (images, masks, mask_valid, targets), or
    // with --cuda-graph the graph's inputs, into which each batch is copied.
    std::vector<Tensor> in;
    GraphInputs graph_inputs;
    Tensor loss;
    auto forward_loss = [&] {
      AutocastGuard autocast(bf16);
      auto out = model.forward(in[0], in[1], in[2]);
      loss = soft_cross_entropy(out.logits, in[3]);
      if (out.aux.defined()) loss = add(loss, mul(out.aux, config.aux_weight));
    };
    auto optimizer_step = [&] {
      // Clipping applied by the update as it reads the gradients, as the trainer does.
      opt.step(optim::clip_coefficient(model.parameters(), 5.0).coef);
      opt.zero_grad();
    };
    CudaGraph graph;
    double capture_seconds = 0;
    for (int it = 0; it < o.warmup + o.steps; ++it) {
      if (it == o.warmup) {
        backend.synchronize();
        backend.reset_peak();
      }
      const bool replay = o.cuda_graph && it >= o.warmup;
      const double t_start = now();
      if (loader) {
        uploader.release();
        data::Batch b = next_batch();
        const double t_got = now();
        // Queued uploads from pinned memory, as the trainer makes them.
        images = uploader.upload(b.images);
        const bool use_masks = b.masks.defined() && config.aux_layer >= 0;
        masks = use_masks ? uploader.upload(b.masks) : Tensor();
        mask_valid = use_masks ? uploader.upload(b.mask_valid) : Tensor();
        targets = uploader.upload(b.targets);
        uploader.commit();
        if (it >= o.warmup) wait_times.push_back(t_got - t_start);
      }
      const std::vector<Tensor> batch = {images, masks, mask_valid, targets};
      if (replay && !graph.captured()) {
        // Untimed: fixed input tensors, then one step recorded (not run).
        graph_inputs = GraphInputs(batch);
        in = graph_inputs.tensors();
        backend.synchronize();
        const double c0 = now();
        graph.capture([&] {
          forward_loss();
          loss.backward();
          optimizer_step();
        });
        capture_seconds = now() - c0;
      } else if (replay) {
        if (loader) graph_inputs.copy_from(batch);
      } else {
        in = batch;
      }
      // The step proper starts from the batch in hand (and after a capture).
      const double t0 = loader || replay ? now() : t_start;
      double t1 = t0, t2 = t0;
      if (replay) {
        graph.replay();
      } else {
        forward_loss();
        if (o.breakdown) backend.synchronize();
        t1 = now();
        loss.backward();
        if (o.breakdown) backend.synchronize();
        t2 = now();
        optimizer_step();
      }
      backend.synchronize();
      const double t3 = now();
      if (it >= o.warmup) {
        fg_side.times.push_back(t3 - t0);
        if (loader) end_to_end.push_back(t3 - t_start - (it == o.warmup ? capture_seconds : 0.0));
        if (o.breakdown) {
          fg_side.phases["forward"].push_back(t1 - t0);
          fg_side.phases["backward"].push_back(t2 - t1);
          fg_side.phases["optimizer"].push_back(t3 - t2);
        }
      }
    }
    // On CUDA the tensors' own sizes rounded to 512 bytes, as PyTorch counts them
    // (the allocator's size classes hold up to 6.25% more; printed beside it).
    double size_class_peak = -1;
    if (cuda) {
      fg_side.peak_memory = static_cast<double>(cuda_memory_stats().peak_requested);
      size_class_peak = static_cast<double>(backend.peak_bytes());
    } else {
      fg_side.tensor_peak = static_cast<double>(backend.peak_bytes());
    }
    fg_side.max_rss = max_rss_bytes();
    if (loader) loader->stop();
    Json graph_json;  // null without --cuda-graph
    if (graph.captured()) {
      const double last_loss = loss.item();  // after the last replay: a sanity check of the graph
      FG_CHECK(std::isfinite(last_loss), "the last replay of the captured step gave a loss of ", last_loss);
      graph_json = Json{{"nodes", graph.nodes()},
                        {"pool_bytes", graph.pool_bytes()},
                        {"capture_seconds", capture_seconds},
                        {"last_loss", last_loss}};
      std::printf("CUDA graph: one launch a step, %zu nodes, its pool %.1f MiB, captured in %.1f ms; loss "
                  "after the last replay %.4f\n",
                  graph.nodes(), static_cast<double>(graph.pool_bytes()) / (1 << 20), capture_seconds * 1e3,
                  last_loss);
      graph.reset();  // its pool back to the cache, which the peers get below
    }

    // ---- the peers
    std::vector<Side> sides = {fg_side};
    if (o.compare && cuda) {
      // The peer gets the GPU's memory that fgmoe's cache holds.
      cuda_synchronize();
      cuda_empty_cache();
    }
    if (o.compare) {
      sides.push_back(run_peer(o, config, "eager"));
      if (o.compile) sides.push_back(run_peer(o, config, "compiled"));
    }
    const std::vector<double> load_after = load_average();

    // ---- table
    const double fg_median = stats_of(fg_side.times).median;
    const double flops_step = step_flops_per_image * static_cast<double>(o.batch);
    const bool show_mfu = peak_tflops > 0;
    // On the CPU a column of the tensors' own peak beside the process's.
    std::printf("\n%-18s %9s %10s %9s %9s %9s %10s%s%s %10s %9s\n", "", "images/s", "median ms", "min ms", "max ms",
                "IQR ms", cuda ? "TFLOP/s" : "GFLOP/s", show_mfu ? "      MFU" : "", cuda ? "" : "    tensors",
                cuda ? "peak mem" : "max RSS", "ratio");
    for (const Side& s : sides) {
      if (!s.available) {
        std::printf("%-18s %s\n", s.name.c_str(), s.why.c_str());
        continue;
      }
      const Stats st = stats_of(s.times);
      const double rate = flops_step / st.median;
      char mfu[32] = "";
      if (show_mfu) std::snprintf(mfu, sizeof mfu, " %8.1f%%", 100.0 * rate / (peak_tflops * 1e12));
      char tensors[32] = "";
      if (!cuda) std::snprintf(tensors, sizeof tensors, " %10s", mib(s.tensor_peak).c_str());
      std::printf("%-18s %9.2f %10.1f %9.1f %9.1f %9.1f %10.1f%s%s %10s %8.2fx\n", s.name.c_str(),
                  static_cast<double>(o.batch) / st.median, st.median * 1e3, st.min * 1e3, st.max * 1e3,
                  st.iqr() * 1e3, cuda ? rate / 1e12 : rate / 1e9, mfu, tensors,
                  mib(cuda ? s.peak_memory : s.max_rss).c_str(), st.median / fg_median);
    }
    std::printf("ratio: the row's median step time over fgmoe's, i.e. fgmoe's speed-up over that row "
                "(above 1: fgmoe is faster)\n");
    if (show_mfu)
      std::printf("MFU against %.0f TFLOP/s (%s)\n", peak_tflops, peak_basis.c_str());
    if (cuda)
      std::printf("peak mem: most bytes held by live tensors during the timed steps, each rounded up to "
                  "512 bytes (fgmoe's allocator; torch.cuda.max_memory_allocated); fgmoe's size classes "
                  "held %s at the peak\n", mib(size_class_peak).c_str());
    else
      std::printf("tensors: most bytes held by live tensors in a step (weights, gradients, AdamW's moments, "
                  "batch, activations); fgmoe: its CPU allocator's count over the timed steps; PyTorch eager: "
                  "the C library's bytes in use, read around every operator of one more step, less those in use "
                  "before the model was built (- where it cannot be metered)\n"
                  "max RSS: the process's peak resident memory (includes the interpreter and libraries for "
                  "PyTorch)\n");
    if (o.breakdown) {
      std::printf("\nphases (median ms): %18s %10s %10s\n", "forward+loss", "backward", "optimizer");
      for (const Side& s : sides) {
        if (!s.available || s.phases.empty()) continue;
        std::printf("  %-18s %18.1f %10.1f %10.1f\n", s.name.c_str(), stats_of(s.phases.at("forward")).median * 1e3,
                    stats_of(s.phases.at("backward")).median * 1e3,
                    stats_of(s.phases.at("optimizer")).median * 1e3);
      }
    }

    // ---- data
    Json data_json;
    if (loader) {
      const double images_timed = static_cast<double>(o.batch) * o.steps;
      const double loader_rate = images_timed / loader_seconds;
      const double step_rate = static_cast<double>(o.batch) / fg_median;
      const Stats e2e = stats_of(end_to_end), wait = stats_of(wait_times);
      std::printf("\ndata: %lld training images in %s (%lld classes, %s), reference train transforms at %lld px, "
                  "%d worker%s\n",
                  static_cast<long long>(dataset->size()), o.data_path.c_str(),
                  static_cast<long long>(dataset->num_classes()), masks_on_disk ? "with masks" : "no masks",
                  static_cast<long long>(o.image_size), o.workers, o.workers == 1 ? "" : "s");
      std::printf("  loader alone       : %9.1f images/s (%d batches)\n", loader_rate, o.steps);
      std::printf("  steps with loader  : %9.1f images/s end to end; waiting for data: median %.1f ms, max %.1f "
                  "ms per step\n",
                  static_cast<double>(o.batch) / e2e.median, wait.median * 1e3, wait.max * 1e3);
      if (loader_rate >= step_rate)
        std::printf("  loader %.0f img/s vs step %.1f img/s: keeps up\n", loader_rate, step_rate);
      else
        std::printf("  loader %.0f img/s vs step %.1f img/s: falls short by %.0f%%\n", loader_rate, step_rate,
                    100.0 * (1.0 - loader_rate / step_rate));
      if (!cuda)
        std::printf("  (on the CPU the workers and the step share the cores, so the end-to-end rate is what "
                    "counts)\n");
      data_json = Json{{"path", o.data_path},
                       {"images", dataset->size()},
                       {"classes", dataset->num_classes()},
                       {"masks", masks_on_disk},
                       {"workers", o.workers},
                       {"loader_batches", o.steps},
                       {"loader_seconds", loader_seconds},
                       {"loader_images_per_s", loader_rate},
                       {"step_images_per_s", step_rate},
                       {"end_to_end", stats_json(end_to_end)},
                       {"end_to_end_images_per_s", static_cast<double>(o.batch) / e2e.median},
                       {"data_wait", stats_json(wait_times)},
                       {"keeps_up", loader_rate >= step_rate}};
    }

    // ---- JSON
    if (!o.json_path.empty()) {
      Json j;
      j["tool"] = "fgmoe-bench";
      Json model_json = models::reference_config_json(config);
      model_json["aux_weight"] = config.aux_weight;
      j["config"] = Json{{"model", o.model},
                         {"model_config", model_json},
                         {"parameters", model.parameter_count()},
                         {"batch", o.batch},
                         {"image_size", o.image_size},
                         {"classes", classes},
                         {"device", o.device},
                         {"precision", o.precision},
                         {"tf32", cuda && !bf16 && o.tf32},
                         {"attention", o.attention},
                         {"threads", o.threads},
                         {"warmup", o.warmup},
                         {"steps", o.steps},
                         {"breakdown", o.breakdown},
                         {"cuda_graph", o.cuda_graph},
                         {"compile_mode", o.compile ? Json(o.compile_mode) : Json()},
                         {"data", loader ? "loader" : "synthetic"}};
      if (!graph_json.is_null()) j["cuda_graph"] = graph_json;
      j["machine"] = Json{{"cpu", cpu_model()},
                          {"hardware_threads", std::thread::hardware_concurrency()},
                          {"load_average_before", load_before},
                          {"load_average_after", load_after}};
      j["flops"] = Json{{"forward_per_image", forward_flops},
                        {"step_per_image", step_flops_per_image},
                        {"step", flops_step},
                        {"peak_tflops", show_mfu ? Json(peak_tflops) : Json()},
                        {"peak_basis", peak_basis}};
      Json ratios = Json::object();
      for (const Side& s : sides) {
        const std::string key = s.name == "fgmoe" ? "fgmoe" : (s.name == "PyTorch eager" ? "pytorch_eager" : "pytorch_compiled");
        Json sj;
        if (!s.available) {
          sj["available"] = false;
          sj["reason"] = s.why;
          if (!s.torch_version.empty()) sj["torch_version"] = s.torch_version;
          j[key] = sj;
          continue;
        }
        sj = stats_json(s.times);
        sj["available"] = true;
        const double median = stats_of(s.times).median;
        sj["images_per_s"] = static_cast<double>(o.batch) / median;
        sj["achieved_tflops"] = flops_step / median / 1e12;
        sj["mfu"] = show_mfu ? Json(flops_step / median / (peak_tflops * 1e12)) : Json();
        if (s.peak_memory >= 0) sj["peak_memory_bytes"] = s.peak_memory;
        if (key == "fgmoe" && size_class_peak >= 0) sj["size_class_peak_bytes"] = size_class_peak;
        if (s.tensor_peak >= 0) sj["tensor_peak_bytes"] = s.tensor_peak;
        if (s.max_rss >= 0) sj["max_rss_bytes"] = s.max_rss;
        if (!s.torch_version.empty()) sj["torch_version"] = s.torch_version;
        if (!s.phases.empty()) {
          Json ph;
          for (const char* p : kPhases) ph[p] = stats_json(s.phases.at(p));
          sj["phases"] = ph;
        }
        j[key] = sj;
        if (key != "fgmoe") ratios[key.substr(8)] = median / fg_median;
      }
      j["ratios"] = ratios;
      j["ratio_definition"] = "peer median step time / fgmoe median step time (above 1: fgmoe faster)";
      if (loader) j["data"] = data_json;
      std::ofstream out(o.json_path);
      FG_CHECK(out.good(), "cannot write ", o.json_path);
      out << j.dump(2) << "\n";
      FG_CHECK(out.good(), "cannot write ", o.json_path);
    }
    // A peer that failed (not one reported unavailable, such as torch.compile
    // missing) fails the run once everything measured has been printed and saved.
    for (const Side& s : sides)
      if (s.failed) {
        std::fprintf(stderr, "fgmoe-bench: the %s peer %s\n", s.name.c_str(), s.why.c_str());
        return 3;
      }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fgmoe-bench: %s\n", e.what());
    return 1;
  }
}
