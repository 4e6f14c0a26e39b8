// fgmoe-train: the standalone trainer. Flags follow the reference trainer's.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "train/data_sources.h"
#include "train/launcher.h"
#include "train/trainer.h"

using namespace fg;
using namespace fg::train;

namespace {

void print_help() {
  std::printf(
      "usage: fgmoe-train --cfg FILE.json [options]\n"
      "\n"
      "Trains or evaluates a Soft MoE vision transformer with foreground-guided routing.\n"
      "\n"
      "options (as the reference trainer's):\n"
      "  --cfg FILE               JSON config (keys below); built-in defaults when omitted\n"
      "  --data-path DIR, --data  dataset root: train/<class>/*, train_mask/<class>/*.pth, val/<class>/*\n"
      "  --batch-size N           batch size per process (DATA.BATCH_SIZE)\n"
      "  --output DIR             output root; the run goes to DIR/MODEL.NAME/TAG\n"
      "  --tag T                  run tag (TAG)\n"
      "  --resume FILE            resume from a checkpoint (also automatic: TRAIN.AUTO_RESUME)\n"
      "  --pretrained FILE        start from these weights (.pth state dict/checkpoint or .safetensors)\n"
      "  --eval                   evaluate only\n"
      "  --throughput             measure inference throughput only\n"
      "  --accumulation-steps N   micro-batches per optimizer step\n"
      "  --opts KEY VALUE ...     override config keys, e.g. --opts TRAIN.EPOCHS 30 DATA.IMG_SIZE 64\n"
      "fgmoe options:\n"
      "  --device cpu|cuda        where to train (default: cuda when present)\n"
      "  --precision fp32|bf16    arithmetic (bf16: mixed precision on CUDA)\n"
      "  --nproc-per-node N       start N local processes (data parallel), like torchrun\n"
      "                           (also: mpirun -np N, torchrun --no-python; see docs/distributed.md)\n"
      "  --print-config           print the effective config and exit\n"
      "  -h, --help               this help\n"
      "\n"
      "config keys (defaults are the reference's):\n");
  const Json defaults = default_config();
  Config c;
  for (const auto& [key, doc] : config_key_docs())
    std::printf("  %-36s %-28s %s\n", key.c_str(), c.get(key).dump().c_str(), doc.c_str());
  std::printf("\ndistributed support: %s\n", distributed_support().c_str());
  std::printf(
      "\nSIGINT/SIGTERM stop at the next step boundary and write ckpt_interrupted.pth; running\n"
      "the same command again resumes from the newest checkpoint in the output folder.\n");
}

extern "C" void on_signal(int) { Trainer::request_stop(); }

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    Config config;
    std::string cfg_file;
    std::vector<std::pair<std::string, Json>> flags;
    std::vector<std::pair<std::string, std::string>> opts;
    int nproc = 0;
    bool print_config = false;
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      auto value = [&]() -> const std::string& {
        FG_CHECK(i + 1 < args.size(), "missing value after ", a, " (see --help)");
        return args[++i];
      };
      auto integer = [&]() -> int64_t {
        const std::string& v = value();
        try {
          size_t used = 0;
          const long long n = std::stoll(v, &used);
          FG_CHECK(used == v.size(), "");
          return n;
        } catch (const std::exception&) {
          FG_CHECK(false, a, " needs an integer, got '", v, "'");
        }
        return 0;
      };
      if (a == "-h" || a == "--help") {
        print_help();
        return 0;
      } else if (a == "--cfg") {
        cfg_file = value();
      } else if (a == "--data-path" || a == "--data") {
        flags.emplace_back("DATA.DATA_PATH", value());
      } else if (a == "--batch-size") {
        flags.emplace_back("DATA.BATCH_SIZE", integer());
      } else if (a == "--output") {
        flags.emplace_back("OUTPUT", value());
      } else if (a == "--tag") {
        flags.emplace_back("TAG", value());
      } else if (a == "--resume") {
        flags.emplace_back("MODEL.RESUME", value());
      } else if (a == "--pretrained") {
        flags.emplace_back("MODEL.PRETRAINED", value());
      } else if (a == "--eval") {
        flags.emplace_back("EVAL_MODE", true);
      } else if (a == "--throughput") {
        flags.emplace_back("THROUGHPUT_MODE", true);
      } else if (a == "--accumulation-steps") {
        flags.emplace_back("TRAIN.ACCUMULATION_STEPS", integer());
      } else if (a == "--device") {
        flags.emplace_back("DEVICE", value());
      } else if (a == "--precision") {
        flags.emplace_back("PRECISION", value());
      } else if (a == "--nproc-per-node" || a == "--nproc_per_node") {
        nproc = static_cast<int>(integer());
      } else if (a == "--print-config") {
        print_config = true;
      } else if (a == "--opts") {
        FG_CHECK(i + 1 < args.size(), "--opts needs KEY VALUE pairs");
        while (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
          const std::string key = args[++i];
          FG_CHECK(i + 1 < args.size(), "--opts: key ", key, " has no value");
          opts.emplace_back(key, args[++i]);
        }
      } else if (a.rfind("--local_rank", 0) == 0 || a.rfind("--local-rank", 0) == 0) {
        // torch.distributed.launch passes this; the environment says the same.
        if (a.find('=') == std::string::npos) value();
      } else {
        FG_CHECK(false, "unknown argument '", a, "' (see --help)");
      }
    }
    if (nproc > 0) return launch_local_processes(nproc, argc, argv);

    // Config file, then --opts, then the explicit flags, as the reference merges them.
    if (!cfg_file.empty()) config.merge_file(cfg_file);
    for (const auto& [k, v] : opts) config.set_from_string(k, v);
    for (const auto& [k, v] : flags) config.set(k, v);
    config.validate();
    if (print_config) {
      std::cout << config.dump() << std::endl;
      return 0;
    }
    // The rendezvous comes first: a signal during it ends the process at once.
    std::unique_ptr<Communicator> comm = make_communicator(config);
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    const bool eval_only = config.flag("EVAL_MODE") || config.flag("THROUGHPUT_MODE");
    auto sources = make_data_sources(config, *comm, !eval_only);
    Trainer trainer(config, *comm, std::move(sources.train), std::move(sources.val));
    return trainer.run();
  } catch (const std::exception& e) {
    // In a multi-process run, say which process failed.
    const char* world = std::getenv("WORLD_SIZE");
    const char* rank = std::getenv("RANK");
    if (!world) {
      world = std::getenv("OMPI_COMM_WORLD_SIZE");
      rank = std::getenv("OMPI_COMM_WORLD_RANK");
    }
    if (world && rank && std::atoi(world) > 1)
      std::fprintf(stderr, "fgmoe-train: error (rank %s): %s\n", rank, e.what());
    else
      std::fprintf(stderr, "fgmoe-train: error: %s\n", e.what());
    return 1;
  }
}
