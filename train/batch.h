// What the training loop consumes: batches on the host, one epoch at a time,
// in an order that depends only on (seed, epoch, rank, world size).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace fg::train {

struct Batch {
  Tensor images;      // (B, C, H, W) float32, normalized
  Tensor labels;      // (B) int64
  Tensor targets;     // (B, classes) float32 soft targets (label smoothing, mixup/cutmix
                      // applied), or undefined: then built from labels
  Tensor masks;       // (B, 1, H, W) float32 foreground masks, or undefined
  Tensor mask_valid;  // (B) bool: the sample has a usable mask, or undefined
  int64_t size() const { return images.defined() ? images.size(0) : 0; }
};

// Targets for soft_cross_entropy from 1-D host labels: one-hot with label
// smoothing (on = 1 - s + s/C, off = s/C), the loss cross_entropy(logits,
// labels, s) computes. Checked and built on the host, so a device never has to
// send labels back; a label outside [0, classes) fails naming `where` and the row.
Tensor targets_from_labels(const Tensor& labels, int64_t classes, double smoothing, const std::string& where);

// What a batch trains on: its own soft targets when it has them (checked to be
// (B, classes)), else targets_from_labels(labels, classes, smoothing).
Tensor batch_targets(const Batch& batch, int64_t classes, double smoothing, const std::string& where);

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Batches per epoch on this rank.
  virtual int64_t steps_per_epoch() const = 0;
  // Samples in the underlying dataset (all ranks together).
  virtual int64_t dataset_size() const = 0;
  // Starts (or resumes) an epoch at batch index first_step.
  virtual void start_epoch(int64_t epoch, int64_t first_step = 0) = 0;
  // The next batch of the epoch; false at its end.
  virtual bool next(Batch& batch) = 0;
  // What went wrong during the epoch on this rank (unreadable files, missing
  // masks) as counts; the trainer sums them over the ranks.
  virtual std::vector<double> epoch_counts() { return {}; }
  // Those counts (summed over the ranks) in words, for the log; empty if nothing went wrong.
  virtual std::string epoch_report(int64_t epoch, const std::vector<double>& counts) {
    (void)epoch;
    (void)counts;
    return "";
  }
};

}  // namespace fg::train
