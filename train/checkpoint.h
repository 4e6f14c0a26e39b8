// Training checkpoints in the reference's .pth layout: a dict holding the model
// state dict under "model", the optimizer as torch.optim.AdamW.state_dict()
// writes it, the schedule, "epoch", "max_accuracy" and the config, plus
// fgmoe's own entries (position inside the epoch, generator state) under
// "fgmoe". Files are written atomically (temporary file, then rename).
#pragma once

#include <optional>
#include <string>

#include "engine/optim/adamw.h"
#include "models/soft_moe_vit.h"
#include "train/schedule.h"

namespace fg::train {

struct TrainState {
  int64_t epoch = 0;            // the epoch this state belongs to
  int64_t next_step = 0;        // the next batch of `epoch` to train
  bool epoch_finished = false;  // true: resume at epoch + 1, step 0
  int64_t updates = 0;          // optimizer updates done (the schedule's position)
  double max_accuracy = 0.0;
  int64_t nonfinite_streak = 0, nonfinite_total = 0;
  uint64_t dropout_seed = 0, dropout_offset = 0;
};

void save_checkpoint(const std::string& path, const models::SoftMoEViT& model,
                     const optim::AdamW& optimizer, const CosineSchedule& schedule,
                     const TrainState& state, const std::string& config_json);

struct LoadedCheckpoint {
  TrainState state;
  bool has_optimizer = false;
  bool has_fgmoe_state = false;  // written by fgmoe (else a reference checkpoint)
};
// Restores the model (strict) and, when given and present, the optimizer.
LoadedCheckpoint load_checkpoint(const std::string& path, models::SoftMoEViT& model,
                                 optim::AdamW* optimizer);

// The most recently written checkpoint (*.pth) in dir, or empty.
std::string find_latest_checkpoint(const std::string& dir);

// Loads weights for fine-tuning or evaluation from a state dict / checkpoint
// .pth or a .safetensors file, non-strictly; returns the report.
nn::Module::LoadReport load_weights(const std::string& path, nn::Module& model, bool strict);

}  // namespace fg::train
