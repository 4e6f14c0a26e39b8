#include "train/schedule.h"

#include <cmath>

namespace fg::train {

double CosineSchedule::at(int64_t t) const {
  if (t < warmup_steps) {
    return warmup_lr + static_cast<double>(t) * (base_lr - warmup_lr) / static_cast<double>(warmup_steps);
  }
  const int64_t t_initial = warmup_prefix ? total_steps - warmup_steps : total_steps;
  const int64_t tc = warmup_prefix ? t - warmup_steps : t;
  if (t_initial <= 0 || tc >= t_initial) return min_lr;  // past the single cycle
  const double progress = static_cast<double>(tc) / static_cast<double>(t_initial);
  return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

double scale_lr(double lr, int64_t batch_size, int64_t world_size, int64_t accumulation_steps) {
  double scaled = lr * static_cast<double>(batch_size * world_size) / 512.0;
  if (accumulation_steps > 1) scaled *= static_cast<double>(accumulation_steps);
  return scaled;
}

}  // namespace fg::train
