// An in-memory BatchSource for trainer tests: a small labelled dataset whose
// class is visible in the image, shuffled per epoch from a seed.
#pragma once

#include <algorithm>
#include <numeric>

#include "engine/ops.h"
#include "train/batch.h"

namespace fg::testing {

class MemorySource : public train::BatchSource {
 public:
  MemorySource(int64_t samples, int64_t classes, int64_t image, int64_t batch, uint64_t seed,
               bool shuffle = true)
      : classes_(classes), batch_(batch), seed_(seed), shuffle_(shuffle) {
    Generator gen(seed);
    images_ = randn({samples, 3, image, image}, gen, 0.0, 0.5);
    std::vector<int64_t> labels(static_cast<size_t>(samples));
    for (int64_t i = 0; i < samples; ++i) labels[i] = i % classes;
    labels_ = Tensor::from_vector(labels, {samples});
    NoGradGuard g;
    // Class c puts stripes in a horizontal band of the image: an easy, learnable
    // signal that survives the per-patch LayerNorm (a flat offset would not).
    const int64_t band = std::max<int64_t>(1, image / classes);
    for (int64_t i = 0; i < samples; ++i) {
      const int64_t c = labels[i];
      add_(images_.select(0, i).slice(1, c * band, (c + 1) * band).slice(2, 0, image, 2), Tensor::scalar(2.0));
    }
    masks_ = Tensor::zeros({samples, 1, image, image});
    for (int64_t i = 0; i < samples; ++i)
      fill_(masks_.select(0, i).slice(1, labels[i] * band, (labels[i] + 1) * band), 1.0);
  }
  int64_t steps_per_epoch() const override { return images_.size(0) / batch_; }
  int64_t dataset_size() const override { return images_.size(0); }
  void start_epoch(int64_t epoch, int64_t first_step) override {
    order_.resize(static_cast<size_t>(images_.size(0)));
    std::iota(order_.begin(), order_.end(), 0);
    if (shuffle_) {
      Generator gen(seed_ * 1000 + static_cast<uint64_t>(epoch));
      for (size_t i = order_.size(); i > 1; --i)
        std::swap(order_[i - 1], order_[static_cast<size_t>(gen.randint(static_cast<int64_t>(i)))]);
    }
    step_ = first_step;
  }
  bool next(train::Batch& b) override {
    if (step_ >= steps_per_epoch()) return false;
    std::vector<Tensor> im, la, ma;
    for (int64_t k = 0; k < batch_; ++k) {
      const int64_t i = order_[static_cast<size_t>(step_ * batch_ + k)];
      im.push_back(images_.select(0, i));
      la.push_back(labels_.slice(0, i, i + 1));
      ma.push_back(masks_.select(0, i));
    }
    ++step_;
    b.images = stack(im, 0);
    b.labels = concat(la, 0);
    b.masks = stack(ma, 0);
    b.mask_valid = Tensor::ones({batch_}, DType::Bool);
    b.targets = Tensor();
    return true;
  }

 private:
  Tensor images_, labels_, masks_;
  int64_t classes_, batch_;
  uint64_t seed_;
  bool shuffle_;
  std::vector<int64_t> order_;
  int64_t step_ = 0;
};

}  // namespace fg::testing
