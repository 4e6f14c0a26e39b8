// Process-group setup: the communicator for this process (from the launch
// environment) and the built-in single-node launcher (--nproc-per-node).
#pragma once

#include <memory>

#include "train/config.h"
#include "train/distributed.h"

namespace fg::train {

// A single-process communicator unless the environment describes a
// multi-process launch (mpirun, or torchrun's RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT).
std::unique_ptr<Communicator> make_communicator(const Config& config);

// Re-runs this program as n processes with the torchrun environment set and
// waits for them; returns the exit code (non-zero if any process failed).
int launch_local_processes(int n, int argc, char** argv);

}  // namespace fg::train
