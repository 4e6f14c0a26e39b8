// How a multi-tensor kernel (the fused AdamW, the gradient norm's sum of
// squares, the clipping's scale) splits a list of tensors into launches:
// plain host code, so the split is tested on any machine
// (tests/cuda/test_host_logic.cpp).
//
// A launch covers at most max_tensors tensors and max_blocks blocks; block b
// works on chunk block_chunk[b] (of `chunk` elements) of the tensor in slot
// block_tensor[b]. A tensor with more chunks than a launch has room for goes on
// in the next launch, in its slot 0.
#pragma once

#include <cstdint>
#include <vector>

namespace fg::cuda {

struct MultiTensorLaunch {
  std::vector<size_t> tensors;  // slot -> index into the list of tensors
  std::vector<int> block_tensor;
  std::vector<int64_t> block_chunk;
};

inline std::vector<MultiTensorLaunch> plan_multi_tensor_launches(const std::vector<int64_t>& numels,
                                                    int max_tensors, int max_blocks,
                                                    int64_t chunk) {
  std::vector<MultiTensorLaunch> launches;
  MultiTensorLaunch current;
  auto flush = [&] {
    if (!current.block_tensor.empty()) launches.push_back(std::move(current));
    current = MultiTensorLaunch{};
  };
  for (size_t index = 0; index < numels.size(); ++index) {
    const int64_t n = numels[index];
    if (n <= 0) continue;
    if (static_cast<int>(current.tensors.size()) == max_tensors ||
        static_cast<int>(current.block_tensor.size()) == max_blocks)
      flush();
    current.tensors.push_back(index);
    int slot = static_cast<int>(current.tensors.size()) - 1;
    const int64_t chunks = (n + chunk - 1) / chunk;
    for (int64_t c = 0; c < chunks; ++c) {
      if (static_cast<int>(current.block_tensor.size()) == max_blocks) {
        flush();
        current.tensors.push_back(index);
        slot = 0;
      }
      current.block_tensor.push_back(slot);
      current.block_chunk.push_back(c);
    }
  }
  flush();
  return launches;
}

// Copies a launch's block -> (slot, chunk) map into a kernel argument with
// block_tensor and block_chunk arrays (room checked by the plan's max_blocks).
template <class Batch>
void set_block_map(Batch& batch, const MultiTensorLaunch& plan) {
  for (size_t b = 0; b < plan.block_tensor.size(); ++b) {
    batch.block_tensor[b] = static_cast<uint16_t>(plan.block_tensor[b]);
    batch.block_chunk[b] = static_cast<int32_t>(plan.block_chunk[b]);
  }
}

}  // namespace fg::cuda
