// Process-group setup: the communicator for this process (from the launch
// environment) and the built-in single-node launcher (--nproc-per-node).
#pragma once

#include <memory>
#include <string>

#include "train/config.h"
#include "train/distributed.h"

namespace fg::train {

// A single-process communicator unless the environment describes a
// multi-process launch: torchrun's RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/
// MASTER_PORT (TCP rendezvous), or mpirun (MPI, when built in). Training on
// CUDA uses NCCL (when built in) with that rendezvous. Also selects the GPU
// (LOCAL_RANK) before any CUDA work.
std::unique_ptr<Communicator> make_communicator(const Config& config);

// Re-runs this program (/proc/self/exe) as n processes with the torchrun
// environment set (MASTER_ADDR 127.0.0.1, a free MASTER_PORT unless one is set)
// and waits for them. If one fails, the others get SIGTERM and, after
// FGMOE_KILL_GRACE seconds (default 10), SIGKILL. SIGINT/SIGTERM to the
// launcher are passed on. Returns 0, or the first failing rank's exit code
// (128 + signal for a killed one).
int launch_local_processes(int n, int argc, char** argv);

// The multi-process backends compiled in, for --help.
std::string distributed_support();

}  // namespace fg::train
