// The reference's learning-rate schedule: timm's CosineLRScheduler with a linear
// warm-up prefix, updated every optimizer step (t_in_epochs=False).
#pragma once

#include <cstdint>

namespace fg::train {

struct CosineSchedule {
  double base_lr = 5e-4, warmup_lr = 5e-7, min_lr = 5e-6;
  int64_t warmup_steps = 0, total_steps = 1;
  bool warmup_prefix = true;

  // The schedule's value at step t.
  double at(int64_t t) const;
  // The rate optimizer update u (0-based) runs with. The reference sets the rate
  // for the next update after each one (step_update(u) after update u), and the
  // first update runs with the initial value, so update u uses at(max(u - 1, 0)).
  double for_update(int64_t u) const { return at(u > 0 ? u - 1 : 0); }
};

// The reference scales rates linearly with the total batch: lr * batch * world * accumulation / 512.
double scale_lr(double lr, int64_t batch_size, int64_t world_size, int64_t accumulation_steps);

}  // namespace fg::train
