// The reference's training procedure: AdamW with decay groups, linearly scaled
// learning rates on a per-step cosine schedule with warm-up, gradient clipping,
// accumulation, soft-target or label-smoothed cross-entropy plus the weighted
// foreground-guided loss, evaluation every epoch, checkpoints and auto-resume.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "engine/cuda_graph.h"
#include "engine/optim/adamw.h"
#include "models/alignment.h"
#include "models/soft_moe_vit.h"
#include "train/batch.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/distributed.h"
#include "train/grad_sync.h"
#include "train/logger.h"
#include "train/schedule.h"

namespace fg::train {

struct EvalResult {
  double acc1 = 0, acc5 = 0, loss = 0;
  int64_t samples = 0;
  // Per Soft MoE layer, when the validation set has masks: dispatch/foreground alignment.
  std::vector<int64_t> alignment_layers;
  std::vector<models::AlignmentSums> alignment;
};

class Trainer {
 public:
  // The sources may be null when a mode does not need them (e.g. no train source for --eval).
  Trainer(Config config, Communicator& comm, std::unique_ptr<BatchSource> train_source,
          std::unique_ptr<BatchSource> val_source);

  // Runs what the config asks for: evaluation only, throughput, or training.
  // Returns the process exit code.
  int run();

  EvalResult validate();
  // Inference images/s as the reference measures it (50 warm-up, 30 timed forwards).
  double throughput();

  models::SoftMoEViT& model() { return *model_; }
  const std::string& output_dir() const { return output_dir_; }
  const TrainState& state() const { return state_; }

  // Asks the run to stop at the next step boundary and save a checkpoint (signal-safe).
  static void request_stop();
  // Called after every training step with (epoch, step); tests use it to interrupt runs.
  std::function<void(int64_t epoch, int64_t step)> on_step;

 private:
  void setup_optimizer();
  void resume_if_asked();
  // Trains the rest of state_.epoch; false when stopped early.
  bool train_one_epoch();
  void save(const std::string& name);
  // Whether any rank was asked to stop (a collective when world > 1).
  bool stop_agreed();
  // TRAIN.CUDA_GRAPH: the step replayed from two captured CUDA graphs, the
  // gradients (forward, loss, backward, norm) and the update (AdamW); batches
  // are copied into the graphs' input tensors.
  // What the gradients part of a step leaves: loss, auxiliary loss, gradient
  // norm and, with clipping, the coefficient the update applies to the
  // gradients as it reads them (undefined without clipping).
  struct StepOutputs {
    Tensor loss, aux, norm, clip_coef;
  };
  using GradientsFn = std::function<StepOutputs(const std::vector<Tensor>& batch)>;
  struct StepGraphs {
    CudaGraph gradients, update;
    GraphInputs inputs;   // images, masks, mask_valid, targets
    StepOutputs outputs;  // rewritten by each replay
  };
  // Captures graphs_ for gradients(batch) and AdamW; on failure warns and turns graphs off.
  void capture_graphs(const std::vector<Tensor>& batch, const GradientsFn& gradients);
  // PRECISION bf16 on a CUDA device: forward and loss under bf16 autocast.
  bool bf16_autocast() const { return config_.str("PRECISION") == "bf16" && device_.is_cuda(); }
  Device device_;
  Config config_;
  Communicator& comm_;
  std::unique_ptr<BatchSource> train_source_, val_source_;
  std::unique_ptr<models::SoftMoEViT> model_;
  std::unique_ptr<optim::AdamW> optimizer_;
  std::unique_ptr<GradientAverager> averager_;  // world > 1 only
  bool use_graphs_ = false;                     // TRAIN.CUDA_GRAPH where it applies
  std::unique_ptr<StepGraphs> graphs_;          // captured after the first eager update
  bool eager_update_done_ = false;              // in this process (libraries and state warmed up)
  CosineSchedule schedule_;
  TrainState state_;
  Logger log_;
  std::string output_dir_;
  int64_t updates_per_epoch_ = 0;
  static std::atomic<bool> stop_requested_;
};

}  // namespace fg::train
