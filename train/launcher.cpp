#include "train/launcher.h"

#include <cstdlib>
#include <string>

namespace fg::train {

namespace {
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}
}  // namespace

std::unique_ptr<Communicator> make_communicator(const Config& config) {
  (void)config;
  const int world = env_int("WORLD_SIZE", env_int("OMPI_COMM_WORLD_SIZE", 1));
  FG_CHECK(world <= 1, "this build runs one process; a launch of ", world,
           " processes needs distributed support (see the README)");
  return std::make_unique<Communicator>();
}

int launch_local_processes(int n, int argc, char** argv) {
  (void)argc;
  (void)argv;
  FG_CHECK(n == 1, "--nproc-per-node ", n, ": multi-process training is not available in this build yet");
  return 0;
}

}  // namespace fg::train
