// A warmed-up training step reads nothing back to the host (on a GPU each read
// would wait for the queued work) and takes no new memory from the system (the
// allocator's cache serves every block). The same check on CUDA is in
// tests/cuda/test_training_step.cpp.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "tests/models/training_step.h"

using namespace fg;

TEST_CASE("training step: after warm-up, no host reads and no new system memory (CPU)") {
  testing::StepFixture fixture(testing::step_test_config(4), kCPU);
  for (int i = 0; i < 2; ++i) fixture.step();  // warm-up: the cache and AdamW's state fill
  const uint64_t reads = host_read_count();
  const size_t allocations = cpu::system_allocations();
  for (int i = 0; i < 3; ++i) fixture.step();
  CHECK(host_read_count() - reads == 0);
  CHECK(cpu::system_allocations() - allocations == 0);
  // The counters do count: a read of a value, and a block of a size the cache has not seen.
  const uint64_t before = host_read_count();
  CHECK(std::isfinite(sum(fixture.images).item()));
  CHECK(host_read_count() == before + 1);
  const size_t before_blocks = cpu::system_allocations();
  { const Tensor big = Tensor::empty({12345679}); }
  CHECK(cpu::system_allocations() == before_blocks + 1);
}
