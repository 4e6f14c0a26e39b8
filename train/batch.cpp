#include "train/batch.h"

#include "data/mixup.h"
#include "engine/error.h"

namespace fg::train {

Tensor targets_from_labels(const Tensor& labels, int64_t classes, double smoothing, const std::string& where) {
  FG_CHECK(labels.defined() && labels.device().is_cpu() && labels.dim() == 1, where,
           ": labels must be a 1-D host tensor");
  FG_CHECK(smoothing >= 0.0 && smoothing <= 1.0, where, ": label smoothing must be in [0, 1], got ", smoothing);
  const Tensor l = labels.to(DType::Int64).contiguous();
  const auto* p = static_cast<const int64_t*>(l.data_ptr());
  for (int64_t i = 0; i < l.numel(); ++i)
    FG_CHECK(p[i] >= 0 && p[i] < classes, where, ": label ", p[i], " (row ", i, ") is out of range for ",
             classes, " classes (MODEL.NUM_CLASSES)");
  Tensor t = Tensor::empty({l.numel(), classes}, DType::Float32, kCPU);
  data::smoothed_targets(p, l.numel(), classes, smoothing, static_cast<float*>(t.data_ptr()));
  return t;
}

Tensor batch_targets(const Batch& batch, int64_t classes, double smoothing, const std::string& where) {
  if (!batch.targets.defined()) return targets_from_labels(batch.labels, classes, smoothing, where);
  FG_CHECK(batch.targets.dim() == 2 && batch.targets.size(0) == batch.size() && batch.targets.size(1) == classes,
           where, ": soft targets of shape ", shape_str(batch.targets.shape()), " for a batch of ", batch.size(),
           " and ", classes, " classes (MODEL.NUM_CLASSES)");
  return batch.targets;
}

}  // namespace fg::train
