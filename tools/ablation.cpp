// fgmoe-ablation: the paper's ablation on one dataset. Trains the four arms
// (Soft MoE baseline, + foreground-guided loss, + LayerScale, + both) with
// several seeds through fgmoe-train and prints top-1 (mean +- std) and the
// dispatch/foreground alignment per arm. Runs that already finished are
// reused, so an interrupted study continues where it stopped.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "train/config.h"
#include "train/logger.h"

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

struct Arm {
  std::string name, label;
  std::vector<std::string> opts;
};

const std::vector<Arm> kArms = {
    {"baseline", "Soft MoE baseline",
     {"MODEL.SOFT_MOE.LAYER_SCALE_LAYERS", "[]", "MODEL.SOFT_MOE.AUX_LAYER", "-1"}},
    {"fgloss", "+ foreground loss", {"MODEL.SOFT_MOE.LAYER_SCALE_LAYERS", "[]"}},
    {"layerscale", "+ LayerScale", {"MODEL.SOFT_MOE.AUX_LAYER", "-1"}},
    {"both", "+ both (the method)", {}},
};

void usage() {
  std::printf(
      "usage: fgmoe-ablation --cfg FILE.json --data-path DIR [options] [-- fgmoe-train options]\n"
      "\n"
      "Trains the four arms of the paper's ablation (baseline, + foreground loss,\n"
      "+ LayerScale, + both) for each seed and prints a table of top-1 accuracy\n"
      "(mean +- std over seeds, final epoch) and alignment (the paper's soft IoU q and\n"
      "the binary IoU of above-mean dispatch tokens with the foreground, on the last\n"
      "Soft MoE layer; needs val_mask/ in the dataset). The config's method settings\n"
      "(LayerScale layers, auxiliary layer) define the '+' arms.\n"
      "\n"
      "  --cfg FILE.json     trainer config\n"
      "  --data-path DIR     dataset (train/, train_mask/, val/, val_mask/)\n"
      "  --output DIR        where the runs go (default runs/ablation)\n"
      "  --seeds LIST        comma-separated seeds (default 1,2,3)\n"
      "  --arms LIST         subset of baseline,fgloss,layerscale,both (default all)\n"
      "  --trainer PATH      the fgmoe-train binary (default: beside this program)\n"
      "Output: the table on stdout and in OUTPUT/ablation.md, per-run numbers in OUTPUT/ablation.json.\n");
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

int run_process(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  FG_CHECK(pid >= 0, "cannot start ", args[0]);
  if (pid == 0) {
    execv(argv[0], argv.data());
    std::perror("exec");
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

struct Stats {
  double mean = 0, std = 0;
};

Stats stats(const std::vector<double>& v) {
  Stats s;
  if (v.empty()) return s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  if (v.size() > 1) {
    for (double x : v) s.std += (x - s.mean) * (x - s.mean);
    s.std = std::sqrt(s.std / static_cast<double>(v.size() - 1));
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string cfg, data, output = "runs/ablation", trainer;
    std::vector<std::string> seeds = {"1", "2", "3"}, arms, extra;
    for (const auto& a : kArms) arms.push_back(a.name);
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        FG_CHECK(i + 1 < argc, "missing value after ", a);
        return argv[++i];
      };
      if (a == "-h" || a == "--help") { usage(); return 0; }
      else if (a == "--cfg") cfg = value();
      else if (a == "--data-path" || a == "--data") data = value();
      else if (a == "--output") output = value();
      else if (a == "--seeds") seeds = split(value());
      else if (a == "--arms") arms = split(value());
      else if (a == "--trainer") trainer = value();
      else if (a == "--") { for (++i; i < argc; ++i) extra.push_back(argv[i]); }
      else FG_CHECK(false, "unknown argument ", a, " (see --help)");
    }
    FG_CHECK(!cfg.empty() && !data.empty(), "--cfg and --data-path are required (see --help)");
    FG_CHECK(!seeds.empty(), "no seeds given");
    if (trainer.empty()) trainer = (fs::canonical("/proc/self/exe").parent_path() / "fgmoe-train").string();
    FG_CHECK(fs::exists(trainer), "fgmoe-train not found at ", trainer, " (use --trainer)");
    std::vector<const Arm*> chosen;
    for (const auto& name : arms) {
      const Arm* found = nullptr;
      for (const auto& arm : kArms) if (arm.name == name) found = &arm;
      FG_CHECK(found, "unknown arm '", name, "' (baseline, fgloss, layerscale, both)");
      chosen.push_back(found);
    }
    // The runs' folder is named after MODEL.NAME, as the trainer names its output.
    fg::train::Config config;
    config.merge_file(cfg);
    const std::string model_name = config.str("MODEL.NAME");
    fs::create_directories(output);

    Json results = Json::array();
    // Progress: runs done, and the time left from the runs that trained in this
    // invocation (a finished run that is only read again takes no time).
    const size_t total_runs = chosen.size() * seeds.size();
    size_t run_index = 0, trained_runs = 0;
    double trained_seconds = 0;
    std::string table = "| arm | top-1 (mean +- std) | runs | alignment q | alignment IoU |\n| --- | --- | --- | --- | --- |\n";
    for (const Arm* arm : chosen) {
      std::vector<double> acc, q, iou;
      for (const auto& seed : seeds) {
        const std::string tag = arm->name + "-seed" + seed;
        const fs::path run = fs::path(output) / model_name / tag;
        const fs::path metrics = run / "metrics.jsonl";
        std::vector<std::string> args = {trainer, "--cfg", cfg, "--data-path", data, "--output", output,
                                         "--tag", tag};
        args.insert(args.end(), extra.begin(), extra.end());
        args.push_back("--opts");
        args.push_back("SEED");
        args.push_back(seed);
        args.insert(args.end(), arm->opts.begin(), arm->opts.end());
        ++run_index;
        std::string eta;
        if (trained_runs > 0) {
          const double left = trained_seconds / static_cast<double>(trained_runs) *
                              static_cast<double>(total_runs - run_index + 1);
          eta = ", about " + fg::train::format_duration(left) + " left";
        }
        std::fprintf(stderr, "== %s, seed %s (run %zu of %zu%s)\n", arm->label.c_str(), seed.c_str(), run_index,
                     total_runs, eta.c_str());
        std::error_code no_metrics;
        const auto written_before = fs::last_write_time(metrics, no_metrics);
        const auto started = std::chrono::steady_clock::now();
        const int rc = run_process(args);  // resumes, or returns at once when finished
        FG_CHECK(rc == 0, "the run ", tag, " failed (exit ", rc, "); its log is in ", run.string());
        std::error_code unused;
        if (no_metrics || fs::last_write_time(metrics, unused) != written_before) {
          trained_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
          ++trained_runs;
        }
        Json last;
        std::ifstream in(metrics);
        for (std::string line; std::getline(in, line);) {
          // A run killed while writing leaves a partial line; the resumed run goes on after it.
          const Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
          if (j.is_object() && j.value("kind", "") == "eval") last = j;
        }
        FG_CHECK(!last.is_null(), metrics.string(), " holds no evaluation");
        FG_CHECK(last["acc1"].is_number(), metrics.string(), ": the last evaluation has no acc1");
        Json record = {{"arm", arm->name}, {"seed", seed}, {"acc1", last["acc1"]}};
        acc.push_back(last["acc1"].get<double>());
        // The last Soft MoE layer's alignment, when validation masks exist (the
        // highest layer number: "layer10" comes after "layer9").
        const std::string q_prefix = "alignment_q_layer";
        long last_layer = -1;
        for (auto it = last.begin(); it != last.end(); ++it) {
          if (it.key().rfind(q_prefix, 0) == 0)
            last_layer = std::max(last_layer, std::strtol(it.key().c_str() + q_prefix.size(), nullptr, 10));
        }
        if (last_layer >= 0) {
          const std::string layer = std::to_string(last_layer);
          const Json& q_value = last[q_prefix + layer];
          const Json& iou_value = last["alignment_iou_layer" + layer];
          FG_CHECK(q_value.is_number() && iou_value.is_number(), metrics.string(),
                   ": the alignment of layer ", layer, " is not a number pair");
          q.push_back(q_value.get<double>());
          iou.push_back(iou_value.get<double>());
          record["q"] = q_value;
          record["iou"] = iou_value;
        }
        results.push_back(record);
      }
      const Stats a = stats(acc), sq = stats(q), si = stats(iou);
      table += "| " + arm->label + " | " + fixed(a.mean, 2) + " +- " + fixed(a.std, 2) + " | " +
               std::to_string(acc.size()) + " | " + (q.empty() ? "-" : fixed(sq.mean, 3) + " +- " + fixed(sq.std, 3)) +
               " | " + (iou.empty() ? "-" : fixed(si.mean, 3) + " +- " + fixed(si.std, 3)) + " |\n";
    }
    std::printf("%s", table.c_str());
    std::ofstream(fs::path(output) / "ablation.md") << table;
    std::ofstream(fs::path(output) / "ablation.json") << results.dump(2) << '\n';
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fgmoe-ablation: error: %s\n", e.what());
    return 1;
  }
}
