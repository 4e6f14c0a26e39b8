// Whole-step CUDA graphs (engine/cuda_graph.h): stream capture into a graph
// with its own memory pool, the per-replay shifts of the captured generators'
// Philox offsets, and the host work that runs before each replay.
#include <cuda_runtime.h>

#include <string>

#include "engine/cuda/context.h"
#include "engine/cuda/graph_kernels.cuh"
#include "engine/cuda_graph.h"
#include "engine/cuda_support.h"
#include "engine/random.h"

namespace fg {
namespace cuda {
namespace {

// Generators one captured step may draw from.
constexpr int kMaxGenerators = 16;
using graph_detail::kMaxValues;
using graph_detail::Values;
using graph_detail::write_values;

template <class T>
void launch_write(T* dst, const Values<T>& values, const char* what) {
  write_values<T><<<1, kMaxValues, 0, stream()>>>(dst, values);
  FG_CUDA_LAUNCH_CHECK(what);
}

// A generator drawn from in the capture: its seed (part of the graph), where
// it stood when the capture began and how many offsets the step takes.
struct CapturedGenerator {
  Generator* gen;
  uint64_t seed, start, count;
};

struct GraphData {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  GraphPool* pool = nullptr;
  DeviceBuffer shifts;  // kMaxGenerators uint64 values, the kernels' offset bases
  std::vector<CapturedGenerator> generators;
  std::vector<std::function<void()>> on_replay;
  size_t nodes = 0;

  GraphData() = default;
  GraphData(const GraphData&) = delete;
  GraphData& operator=(const GraphData&) = delete;
  ~GraphData() {
    // Queued replays write the pool: they finish before it is given back. No
    // throw from a destructor; a failure here leaves the memory to the driver.
    if (exec || graph || pool) cudaStreamSynchronize(stream());
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    release_graph_pool(pool);
    cudaGetLastError();
  }
  uint64_t* shift_slots() const { return shifts.as<uint64_t>(); }
};

thread_local GraphData* t_active = nullptr;

std::string cuda_error_text(cudaError_t status) {
  return str_cat(cudaGetErrorName(status), " (", cudaGetErrorString(status), ")");
}

}  // namespace
}  // namespace cuda

struct CudaGraph::Impl : cuda::GraphData {};

bool cuda_graph_capturing() { return cuda::t_active != nullptr; }

void cuda_graph_on_replay(std::function<void()> fn) {
  FG_CHECK(cuda::t_active, "cuda_graph_on_replay: no CUDA graph capture under way on this thread");
  cuda::t_active->on_replay.push_back(std::move(fn));
}

const uint64_t* cuda_graph_offset_base(Generator& gen) {
  cuda::GraphData* data = cuda::t_active;
  FG_CHECK(data, "cuda_graph_offset_base: no CUDA graph capture under way on this thread");
  for (size_t i = 0; i < data->generators.size(); ++i)
    if (data->generators[i].gen == &gen) return data->shift_slots() + i;
  FG_CHECK(data->generators.size() < static_cast<size_t>(cuda::kMaxGenerators),
           "a captured CUDA graph draws from at most ", cuda::kMaxGenerators, " generators");
  data->generators.push_back({&gen, gen.seed(), gen.offset(), 0});
  return data->shift_slots() + (data->generators.size() - 1);
}

void cuda_write_float64(const Tensor& dst, const std::vector<double>& values) {
  FG_CHECK(dst.defined() && dst.device().is_cuda() && dst.dtype() == DType::Float64 &&
               dst.is_contiguous() && dst.numel() == static_cast<int64_t>(values.size()),
           "cuda_write_float64: needs a contiguous float64 CUDA tensor of ", values.size(),
           " elements");
  FG_CHECK(values.size() <= static_cast<size_t>(cuda::kMaxValues), "cuda_write_float64: at most ",
           cuda::kMaxValues, " values, got ", values.size());
  if (values.empty()) return;
  cuda::Values<double> v{};
  v.n = static_cast<int>(values.size());
  for (size_t i = 0; i < values.size(); ++i) v.v[i] = values[i];
  cuda::launch_write(static_cast<double*>(dst.data_ptr()), v, "cuda_write_float64");
}

CudaGraph::CudaGraph() = default;
CudaGraph::~CudaGraph() = default;

void CudaGraph::reset() { impl_.reset(); }

bool CudaGraph::captured() const { return impl_ && impl_->exec; }

size_t CudaGraph::nodes() const { return impl_ ? impl_->nodes : 0; }

size_t CudaGraph::pool_bytes() const { return impl_ ? cuda::graph_pool_bytes(impl_->pool) : 0; }

void CudaGraph::capture(const std::function<void()>& step) {
  reset();
  FG_CHECK(cuda_available(), "CudaGraph::capture: ",
           cuda_compiled() ? "no CUDA GPU was found" : "fgmoe was built without CUDA");
  FG_CHECK(!cuda::t_active, "CudaGraph::capture: a capture is already under way on this thread");
  // The shared cache's unused blocks go back to the driver first (this waits
  // for the device), so that the graph's pool can have that memory.
  cuda_empty_cache();
  cudaStream_t s = cuda::stream();
  auto data = std::make_unique<Impl>();
  data->shifts = cuda::DeviceBuffer(cuda::kMaxGenerators * sizeof(uint64_t));
  FG_CUDA_CHECK(cudaMemsetAsync(data->shifts.get(), 0, cuda::kMaxGenerators * sizeof(uint64_t), s));
  data->pool = cuda::create_graph_pool();

  // Thread-local mode: other threads (the loader's) keep working while this
  // one captures; on this thread anything that would wait is refused.
  FG_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  cuda::set_capture_pool(data->pool);
  cuda::t_active = data.get();
  std::string failure;
  try {
    step();
  } catch (const std::exception& e) {
    failure = e.what();
  } catch (...) {
    failure = "an exception that is not a std::exception";
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(s, &graph);
  cuda::t_active = nullptr;
  cuda::set_capture_pool(nullptr);
  // The capture ran nothing: each generator goes back to where it stood, and
  // the replays move it (the first replay is the step just recorded).
  for (cuda::CapturedGenerator& g : data->generators) {
    g.count = g.gen->offset() - g.start;
    g.gen->set_state(g.seed, g.start);
    g.gen->set_offset_base(nullptr);
  }
  data->graph = graph;
  if (!failure.empty() || end != cudaSuccess) {
    cudaGetLastError();
    FG_CHECK(false, "CudaGraph::capture: ",
             !failure.empty()
                 ? str_cat("the step failed while capturing: ", failure)
                 : str_cat("CUDA refused the captured step (", cuda::cuda_error_text(end),
                           "): it did something a graph cannot hold, such as waiting "
                           "for the device or using another stream"));
  }
  FG_CUDA_CHECK(cudaGraphInstantiateWithFlags(&data->exec, graph, 0));
  FG_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &data->nodes));
  impl_ = std::move(data);
}

void CudaGraph::replay() {
  FG_CHECK(captured(), "CudaGraph::replay: nothing has been captured");
  FG_CHECK(!cuda::t_active, "CudaGraph::replay: not allowed inside a capture");
  for (const auto& fn : impl_->on_replay) fn();
  if (!impl_->generators.empty()) {
    cuda::Values<uint64_t> shifts{};
    shifts.n = static_cast<int>(impl_->generators.size());
    for (size_t i = 0; i < impl_->generators.size(); ++i) {
      cuda::CapturedGenerator& g = impl_->generators[i];
      FG_CHECK(g.gen->seed() == g.seed,
               "CudaGraph::replay: a generator drawn from in the graph was "
               "reseeded (seed ",
               g.seed, " became ", g.gen->seed(),
               "); its seed is part of the graph: capture again");
      // Unsigned arithmetic: a generator moved back (a resume) wraps around and still adds up.
      shifts.v[i] = g.gen->offset() - g.start;
      g.gen->set_state(g.seed, g.gen->offset() + g.count);
    }
    cuda::launch_write(impl_->shift_slots(), shifts, "CudaGraph::replay");
  }
  FG_CUDA_CHECK(cudaGraphLaunch(impl_->exec, cuda::stream()));
}

}  // namespace fg
