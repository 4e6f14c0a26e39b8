#include "train/launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "engine/cuda_support.h"
#include "engine/device.h"
#include "train/comm_backends.h"

namespace fg::train {

namespace {

const char* env_str(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int env_int(const char* name, int fallback) {
  const char* v = env_str(name);
  if (!v) return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  FG_CHECK(end && *end == '\0', "environment variable ", name, " must be an integer, got '", v, "'");
  return static_cast<int>(n);
}

// The GPU this rank trains on, or -1 for the CPU (as the trainer resolves DEVICE).
int cuda_device_for(const Config& config, int local_rank) {
  const std::string name = config.str("DEVICE");
  if (name == "auto") return cuda_available() ? local_rank : -1;
  const Device d = Device::parse(name);
  if (!d.is_cuda()) return -1;
  return name == "cuda" ? local_rank : d.index;
}

}  // namespace

std::string distributed_support() {
  std::string s = "TCP (torchrun environment)";
  if (mpi_compiled()) s += ", MPI";
  if (nccl_compiled()) s += ", NCCL";
  return s;
}

std::unique_ptr<Communicator> make_communicator(const Config& config) {
  // mpirun (Open MPI) or a PMIx launcher, unless the torchrun variables say otherwise.
  // A PMIx launch (srun) names no size: MPI itself tells it, when built in.
  const int mpi_world = env_int("OMPI_COMM_WORLD_SIZE", env_int("PMI_SIZE", 0));
  const bool by_mpi = !env_str("WORLD_SIZE") && (mpi_world > 1 || (mpi_world == 0 && env_str("PMIX_RANK") && mpi_compiled()));
  std::unique_ptr<HostChannel> host;
  int local_rank = 0;
  if (by_mpi) {
    host = make_mpi_channel();
    if (host->world_size() <= 1) return std::make_unique<Communicator>();
    local_rank = host->local_rank();
  } else {
    LaunchEnv env;
    env.world_size = env_int("WORLD_SIZE", 1);
    if (env.world_size <= 1) {
      const int device = cuda_device_for(config, env_int("LOCAL_RANK", 0));
      if (device >= 0 && cuda_available()) cuda_set_device(device);
      return std::make_unique<Communicator>();
    }
    const char* rank = env_str("RANK");
    const char* addr = env_str("MASTER_ADDR");
    const char* port = env_str("MASTER_PORT");
    FG_CHECK(rank && addr && port, "WORLD_SIZE is ", env.world_size, " but ",
             !rank ? "RANK" : !addr ? "MASTER_ADDR" : "MASTER_PORT",
             " is not set; a multi-process launch needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT "
             "(fgmoe-train --nproc-per-node N and torchrun set them)");
    env.rank = env_int("RANK", 0);
    env.local_rank = env_int("LOCAL_RANK", env.rank);
    env.master_addr = addr;
    env.master_port = env_int("MASTER_PORT", 0);
    // torchrun's static rendezvous (its default with --master_addr/--master_port)
    // keeps its own store listening on MASTER_PORT and says so: use the next port.
    const char* agent_store = env_str("TORCHELASTIC_USE_AGENT_STORE");
    if (env_str("FGMOE_MASTER_PORT")) env.master_port = env_int("FGMOE_MASTER_PORT", 0);
    else if (agent_store && std::string(agent_store) == "True") env.master_port += 1;
    host = make_tcp_channel(env);
    local_rank = env.local_rank;
  }
  const int device = cuda_device_for(config, local_rank);
  if (device >= 0 && cuda_available()) {
    if (nccl_compiled()) return make_nccl_communicator(std::move(host), device);
    cuda_set_device(device);
    std::fprintf(stderr, "fgmoe: warning: built without NCCL; gradients travel through host memory\n");
  }
  return host;
}

namespace {

std::atomic<int> g_forward_signal{0};
extern "C" void on_launcher_signal(int sig) { g_forward_signal.store(sig); }

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  FG_CHECK(fd >= 0, "socket: ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  close(fd);
  FG_CHECK(ok, "cannot find a free TCP port: ", std::strerror(errno));
  return ntohs(a.sin_port);
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = strsignal(sig);
    return "signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : "");
  }
  return "status " + std::to_string(status);
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

double kill_grace_seconds() {
  const char* v = env_str("FGMOE_KILL_GRACE");
  return v ? std::max(0.0, std::atof(v)) : 10.0;
}

}  // namespace

int launch_local_processes(int n, int argc, char** argv) {
  FG_CHECK(n >= 1, "--nproc-per-node must be at least 1, got ", n);
  FG_CHECK(!env_str("WORLD_SIZE") && !env_str("OMPI_COMM_WORLD_SIZE"),
           "--nproc-per-node inside an already distributed launch (WORLD_SIZE or mpirun is set); use one or the other");
  // The children get the same arguments without --nproc-per-node N.
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc-per-node" || a == "--nproc_per_node") {
      ++i;
      continue;
    }
    args.push_back(a);
  }
  const std::string port = env_str("MASTER_PORT") ? env_str("MASTER_PORT") : std::to_string(free_port());
  // As torchrun: n processes share the cores, so each gets its share of OpenMP threads.
  std::string omp_threads;
  if (!env_str("OMP_NUM_THREADS") && n > 1) {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    omp_threads = std::to_string(std::max(1u, cores / static_cast<unsigned>(n)));
  }

  struct sigaction sa{};
  sa.sa_handler = on_launcher_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::vector<pid_t> pids(static_cast<size_t>(n), -1);
  std::fflush(nullptr);
  for (int r = 0; r < n; ++r) {
    const pid_t pid = fork();
    FG_CHECK(pid >= 0, "fork: ", std::strerror(errno));
    if (pid == 0) {
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(n).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(n).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", port.c_str(), 1);
      if (!omp_threads.empty()) setenv("OMP_NUM_THREADS", omp_threads.c_str(), 1);
      std::vector<char*> child_argv;
      child_argv.push_back(argv[0]);
      for (std::string& a : args) child_argv.push_back(a.data());
      child_argv.push_back(nullptr);
      execv("/proc/self/exe", child_argv.data());
      std::fprintf(stderr, "fgmoe-train: cannot start rank %d: %s\n", r, std::strerror(errno));
      _exit(127);
    }
    pids[static_cast<size_t>(r)] = pid;
  }
  std::fprintf(stderr, "fgmoe-train: started %d processes (MASTER_ADDR 127.0.0.1, MASTER_PORT %s)\n", n, port.c_str());

  int result = 0, running = n;
  bool stopping = false, interrupted = false;
  auto stop_others = [&](int sig) {
    for (pid_t p : pids)
      if (p > 0) kill(p, sig);
  };
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    if (const int sig = g_forward_signal.exchange(0)) {
      // Ctrl-C or a scheduler's SIGTERM: every rank stops at a step boundary and
      // rank 0 writes ckpt_interrupted.pth.
      interrupted = true;
      stop_others(sig);
    }
    int status = 0;
    const pid_t done = waitpid(-1, &status, WNOHANG);
    if (done < 0 && errno != EINTR) break;
    if (done <= 0) {
      if (stopping && std::chrono::steady_clock::now() > deadline) {
        std::fprintf(stderr, "fgmoe-train: ranks still running after %.0f s; killing them\n", kill_grace_seconds());
        stop_others(SIGKILL);
        deadline = std::chrono::steady_clock::time_point::max();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    int rank = -1;
    for (int r = 0; r < n; ++r)
      if (pids[static_cast<size_t>(r)] == done) rank = r;
    if (rank < 0) continue;
    pids[static_cast<size_t>(rank)] = -1;
    --running;
    const bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!failed || interrupted) {
      // Interrupted: the ranks were asked to stop; their exit status is the answer.
      if (failed && result == 0) result = exit_code(status);
      continue;
    }
    if (result == 0) result = std::max(1, exit_code(status));
    // Every failure is named: the first one reaped is not always the cause (a
    // rank killed by a signal makes its peers fail too, possibly a moment earlier).
    std::fprintf(stderr, "fgmoe-train: rank %d (pid %d) failed with %s%s\n", rank, static_cast<int>(done),
                 describe(status).c_str(), running > 0 && !stopping ? "; stopping the other ranks" : "");
    if (running > 0 && !stopping) {
      stopping = true;
      stop_others(SIGTERM);
      deadline = std::chrono::steady_clock::now() +
                 std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                     std::chrono::duration<double>(kill_grace_seconds()));
    }
  }
  return result;
}

}  // namespace fg::train
