// Collectives over MPI_COMM_WORLD, for launches by mpirun (or srun with PMIx).
// mpirun ends the whole job when one process dies, so no rank waits forever.
// The C API only (Open MPI would otherwise pull in its deprecated C++ bindings).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <string>

#include "train/comm_backends.h"

namespace fg::train {

namespace {

void check_mpi(int status, const char* what) {
  if (status == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(status, text, &len);
  FG_CHECK(false, what, " failed: ", std::string(text, static_cast<size_t>(len)));
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

class MpiChannel : public HostChannel {
 public:
  MpiChannel() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // Only the training thread calls MPI.
      check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      owns_init_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_);
    // Errors come back as codes (and become exceptions with a message) instead of aborting in MPI.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    // The rank among the processes of this node.
    MPI_Comm node;
    check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
              "MPI_Comm_split_type");
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_free(&node);
    local_rank_ = env_int("OMPI_COMM_WORLD_LOCAL_RANK", local_rank_);
  }

  ~MpiChannel() override {
    if (!owns_init_) return;
    // Leaving on an error: skip MPI_Finalize (it may wait for the other ranks);
    // mpirun sees a process end without it and stops the job.
    if (std::uncaught_exceptions() > 0) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  std::string backend_name() const override { return "MPI"; }

  void reduce_sum_host(void* data, int64_t n, DType dtype) override {
    FG_CHECK(dtype == DType::Float32 || dtype == DType::Float64, "MPI all_reduce: unsupported dtype ",
             dtype_name(dtype));
    const MPI_Datatype type = dtype == DType::Float32 ? MPI_FLOAT : MPI_DOUBLE;
    // Reduce to rank 0, then broadcast: every rank receives the very bits rank 0
    // computed (an all-reduce may add in a different order on different ranks).
    const int64_t chunk = int64_t{1} << 28;  // MPI counts are ints
    char* p = static_cast<char*>(data);
    const size_t elem = dtype_size(dtype);
    for (int64_t start = 0; start < n; start += chunk) {
      const int count = static_cast<int>(std::min(chunk, n - start));
      void* at = p + static_cast<size_t>(start) * elem;
      check_mpi(MPI_Reduce(rank_ == 0 ? MPI_IN_PLACE : at, rank_ == 0 ? at : nullptr, count, type, MPI_SUM, 0,
                           MPI_COMM_WORLD),
                "MPI_Reduce");
      check_mpi(MPI_Bcast(at, count, type, 0, MPI_COMM_WORLD), "MPI_Bcast");
    }
  }

  void broadcast_host(void* data, size_t nbytes, int root) override {
    const size_t chunk = size_t{1} << 30;
    char* p = static_cast<char*>(data);
    for (size_t start = 0; start < nbytes; start += chunk) {
      const int count = static_cast<int>(std::min(chunk, nbytes - start));
      check_mpi(MPI_Bcast(p + start, count, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
  }

  void barrier() override { check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

 private:
  int rank_ = 0, world_ = 1, local_rank_ = 0;
  bool owns_init_ = false;
};

}  // namespace

bool mpi_compiled() { return true; }
std::unique_ptr<HostChannel> make_mpi_channel() { return std::make_unique<MpiChannel>(); }

}  // namespace fg::train
