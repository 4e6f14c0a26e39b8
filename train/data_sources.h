// The trainer's data: the reference's folder layout read by fgmoe's loader.
#pragma once

#include <memory>

#include "train/batch.h"
#include "train/config.h"
#include "train/distributed.h"

namespace fg::train {

struct DataSources {
  std::unique_ptr<BatchSource> train;  // null when not needed
  std::unique_ptr<BatchSource> val;
  int64_t num_classes = 0;
};

// Scans DATA.DATA_PATH (train/, train_mask/, val/) and builds the loaders for
// this rank. Checks that MODEL.NUM_CLASSES matches the dataset.
DataSources make_data_sources(const Config& config, const Communicator& comm, bool need_train);

}  // namespace fg::train
