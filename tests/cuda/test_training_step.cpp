// On CUDA, a warmed-up training step (bf16 autocast off and on) reads nothing
// back to the host, so it never waits for the GPU, and makes no cudaMalloc: the
// caching allocator serves every block.
#include <doctest/doctest.h>

#include "cuda_test_util.h"
#include "tests/models/training_step.h"

using namespace fg;

TEST_CASE("cuda: after warm-up a training step neither waits for the device (reads, uploads) nor calls cudaMalloc") {
  FG_SKIP_WITHOUT_GPU();
  const models::ModelConfig c = testing::step_test_config(2);  // head dim 64, as the fused kernel takes
  for (const bool bf16 : {false, true}) {
    INFO("bf16 autocast: " << bf16);
    testing::StepFixture fixture(c, kCUDA);
    auto step = [&] { fixture.step(bf16); };
    for (int i = 0; i < 2; ++i) step();
    backend_for(kCUDA).synchronize();
    const uint64_t reads = host_read_count();
    const uint64_t waits = host_wait_count();
    const size_t mallocs = cuda_memory_stats().device_allocations;
    for (int i = 0; i < 3; ++i) step();
    CHECK(host_read_count() - reads == 0);
    CHECK(host_wait_count() - waits == 0);  // no synchronous upload either
    backend_for(kCUDA).synchronize();
    // With the cache off (FGMOE_CUDA_EXACT_ALLOC, as under compute-sanitizer memcheck)
    // every block is a cudaMalloc by design.
    if (cuda_memory_stats().caching)
      CHECK(cuda_memory_stats().device_allocations - mallocs == 0);
  }
}

TEST_CASE("cuda: a batch uploader queues copies, holds their sources until released, and the data arrives") {
  FG_SKIP_WITHOUT_GPU();
  BatchUploader uploader(kCUDA);
  for (int batch = 0; batch < 3; ++batch) {
    uploader.release();
    CHECK(uploader.held() == 0);
    const Tensor images = empty_pinned({4, 3, 8, 8});
    const Tensor labels = Tensor::from_vector(std::vector<int64_t>{batch, 1, 2, 3}, {4});  // pageable
    const Tensor expected = cuda_testing::random_cpu({4, 3, 8, 8}, static_cast<uint64_t>(batch + 1));
    copy_(images, expected);
    const uint64_t reads = host_read_count();
    const uint64_t waits = host_wait_count();
    const Tensor on_device = uploader.upload(images);
    const Tensor labels_on_device = uploader.upload(labels);
    uploader.commit();
    CHECK(host_read_count() == reads);
    CHECK(host_wait_count() == waits);
    CHECK(uploader.held() == 2);
    CHECK(on_device.device().is_cuda());
    CHECK(max_abs_diff(on_device.to(kCPU), expected) == 0.0);
    CHECK(labels_on_device.to(kCPU).to_vector<int64_t>() == std::vector<int64_t>{batch, 1, 2, 3});
  }
  uploader.release();
  CHECK(uploader.held() == 0);
}
