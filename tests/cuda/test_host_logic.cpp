// Host-side logic of the CUDA backend, checked on any machine: the strided
// indexer's offsets, the row-major -> column-major GEMM mapping handed to
// cuBLAS, pinned memory (ordinary memory without a GPU) and autocast leaving
// CPU tensors alone.
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "engine/autocast.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cuda/multi_tensor_plan.h"
#include "engine/cuda/gemm_plan.h"
#include "engine/cuda/strided_indexer.h"

using namespace fg;

namespace {

int64_t naive_offset(const Tensor& t, int64_t linear) {
  int64_t offset = 0;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    const int64_t coord = linear % t.size(d);
    linear /= t.size(d);
    offset += coord * t.stride(d);
  }
  return offset;
}

void check_indexer(const Tensor& out, const Tensor& a, const Tensor& b) {
  const auto ix = cuda::make_indexer<3>(out.shape(), {&out, &a, &b});
  REQUIRE(ix.numel == out.numel());
  for (int64_t i = 0; i < out.numel(); ++i) {
    int64_t off[3];
    ix.offsets(i, off);
    REQUIRE(off[0] == naive_offset(out, i));
    REQUIRE(off[1] == naive_offset(a, i));
    REQUIRE(off[2] == naive_offset(b, i));
  }
}

}  // namespace

TEST_CASE("cuda host: strided indexer offsets match the tensors' strides") {
  const Tensor base = Tensor::zeros({4, 5, 6});
  // Contiguous operands coalesce into one flat dimension.
  {
    const auto ix = cuda::make_indexer<2>(base.shape(), {&base, &base});
    CHECK(ix.ndim == 1);
    CHECK(ix.is_flat());
  }
  // A broadcast scalar stays flat (stride 0).
  {
    const Tensor scalar = Tensor::zeros({}).expand({4, 5, 6});
    const auto ix = cuda::make_indexer<2>(base.shape(), {&base, &scalar});
    CHECK(ix.is_flat());
    CHECK(ix.is_broadcast(1));
    check_indexer(base, scalar, base);
  }
  // Permuted, sliced with a step, broadcast along a middle dimension, size-1 dims.
  const Tensor permuted = Tensor::zeros({6, 4, 5}).permute({1, 2, 0});
  const Tensor stepped = Tensor::zeros({8, 5, 13}).slice(0, 1, 8, 2).slice(2, 3, 9);
  const Tensor middle = Tensor::zeros({4, 1, 6}).expand({4, 5, 6});
  CHECK(stepped.shape() == Shape{4, 5, 6});
  check_indexer(base, permuted, stepped);
  check_indexer(permuted, middle, base);
  check_indexer(stepped, base, middle);
  const Tensor ones = Tensor::zeros({1, 7, 1, 3});
  const Tensor ones_t = Tensor::zeros({3, 1, 7, 1}).permute({3, 2, 1, 0});
  check_indexer(ones, ones_t, ones);
  // A single element and an empty tensor.
  const Tensor single = Tensor::zeros({1, 1});
  const auto ix1 = cuda::make_indexer<1>(single.shape(), {&single});
  CHECK(ix1.numel == 1);
  CHECK(ix1.ndim == 0);
  const Tensor empty = Tensor::zeros({3, 0, 2});
  CHECK(cuda::make_indexer<1>(empty.shape(), {&empty}).numel == 0);
}

namespace {

// C (column-major, as cuBLAS sees it) from the mapped problem, on the host.
void column_major_reference(const cuda::ColumnMajorGemm& cm, double alpha, double beta) {
  const double* first = static_cast<const double*>(cm.first.ptr);
  const double* second = static_cast<const double*>(cm.second.ptr);
  double* d = static_cast<double*>(cm.d);
  for (int64_t b = 0; b < cm.batch; ++b)
    for (int64_t i = 0; i < cm.m; ++i)
      for (int64_t j = 0; j < cm.n; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < cm.k; ++p)
          acc += first[b * cm.first.batch_stride + cuda::column_major_index(cm.first, i, p)] *
                 second[b * cm.second.batch_stride + cuda::column_major_index(cm.second, p, j)];
        double& out = d[b * cm.stride_d + i + j * cm.ldd];
        out = alpha * acc + (beta == 0.0 ? 0.0 : beta * out);
      }
}

struct GemmCase {
  bool trans_a, trans_b;
  int64_t m, n, k, batch;
  int64_t pad;                    // extra elements per row beyond the minimum ld
  bool broadcast_a, broadcast_b;  // batch stride 0
};

}  // namespace

TEST_CASE("cuda host: row-major GEMM maps onto cuBLAS's column-major problem") {
  const std::vector<GemmCase> cases = {
      {false, false, 3, 4, 5, 1, 0, false, false}, {true, false, 3, 4, 5, 1, 0, false, false},
      {false, true, 3, 4, 5, 1, 0, false, false},  {true, true, 3, 4, 5, 1, 0, false, false},
      {false, true, 7, 1, 9, 2, 3, false, false},  {true, false, 1, 6, 2, 3, 1, false, false},
      {false, false, 5, 5, 1, 4, 2, true, false},  {true, true, 2, 3, 4, 3, 0, false, true},
      {false, false, 1, 1, 1, 1, 0, false, false},
  };
  Generator gen(7);
  for (const GemmCase& c : cases) {
    CAPTURE(c.trans_a);
    CAPTURE(c.trans_b);
    CAPTURE(c.m);
    CAPTURE(c.n);
    CAPTURE(c.k);
    CAPTURE(c.batch);
    // Stored shapes (row-major): A is m x k, or k x m when transposed; B is k x n or n x k.
    const int64_t a_rows = c.trans_a ? c.k : c.m, a_cols = c.trans_a ? c.m : c.k;
    const int64_t b_rows = c.trans_b ? c.n : c.k, b_cols = c.trans_b ? c.k : c.n;
    GemmArgs g;
    g.dtype = DType::Float64;
    g.trans_a = c.trans_a;
    g.trans_b = c.trans_b;
    g.m = c.m;
    g.n = c.n;
    g.k = c.k;
    g.lda = a_cols + c.pad;
    g.ldb = b_cols + c.pad;
    g.ldc = c.n + c.pad;
    g.stride_a = c.broadcast_a ? 0 : a_rows * g.lda;
    g.stride_b = c.broadcast_b ? 0 : b_rows * g.ldb;
    g.stride_c = c.m * g.ldc;
    g.batch = c.batch;
    g.alpha = 0.75;
    const auto values = [&](int64_t n) {
      return rand({n}, gen, -1, 1, DType::Float64).to_vector<double>();
    };
    const std::vector<double> a = values(std::max<int64_t>(1, c.batch * a_rows * g.lda));
    const std::vector<double> b = values(std::max<int64_t>(1, c.batch * b_rows * g.ldb));
    std::vector<double> expected(static_cast<size_t>(c.batch * g.stride_c), 0.0);
    std::vector<double> got = expected;
    g.a = a.data();
    g.b = b.data();
    g.c = expected.data();
    backend_for(kCPU).gemm(g);  // row-major BLAS
    g.c = got.data();
    const cuda::ColumnMajorGemm cm = cuda::to_column_major(g);
    // What cuBLAS requires of a column-major matrix: ld >= its stored rows.
    CHECK(cm.first.ld >= cm.first.rows);
    CHECK(cm.second.ld >= cm.second.rows);
    CHECK(cm.ldd >= cm.m);
    CHECK((cm.first.transposed ? cm.first.cols : cm.first.rows) == cm.m);
    CHECK((cm.second.transposed ? cm.second.rows : cm.second.cols) == cm.n);
    column_major_reference(cm, g.alpha, g.beta);
    for (int64_t bi = 0; bi < c.batch; ++bi)
      for (int64_t i = 0; i < c.m; ++i)
        for (int64_t j = 0; j < c.n; ++j) {
          const size_t at = static_cast<size_t>(bi * g.stride_c + i * g.ldc + j);
          REQUIRE(got[at] == doctest::Approx(expected[at]).epsilon(1e-12));
        }
  }
}

TEST_CASE("cuda host: pinned host tensors work with or without a GPU") {
  Tensor t = empty_pinned({3, 5}, DType::Float32);
  CHECK(t.device().is_cpu());
  CHECK(t.is_contiguous());
  float* p = t.data<float>();
  for (int i = 0; i < 15; ++i) p[i] = static_cast<float>(i) * 0.5f;
  const auto v = t.to_vector<float>();
  for (int i = 0; i < 15; ++i) CHECK(v[i] == static_cast<float>(i) * 0.5f);
  void* raw = pinned_alloc(100);
  CHECK(raw != nullptr);
  pinned_free(raw);
  UploadFence fence;
  CHECK(fence.ready());  // nothing recorded yet
}

TEST_CASE("cuda host: autocast leaves CPU tensors in float32") {
  const Tensor x = cuda_testing::random_cpu({4, 6}, 1);
  const Tensor w = cuda_testing::random_cpu({3, 6}, 2);
  const Tensor b = cuda_testing::random_cpu({3}, 3);
  const Tensor plain = linear(x, w, b);
  Tensor cast;
  {
    AutocastGuard autocast;
    CHECK(autocast_enabled());
    cast = linear(x, w, b);
    CHECK(softmax(cast, -1).dtype() == DType::Float32);
  }
  CHECK_FALSE(autocast_enabled());
  CHECK(cast.dtype() == DType::Float32);
  CHECK(max_abs_diff(cast, plain) == 0.0);
}

TEST_CASE("cuda host: a batch uploader for the CPU hands back the host tensors and holds nothing") {
  const Tensor x = cuda_testing::random_cpu({2, 3}, 4);
  BatchUploader uploader(kCPU);
  const Tensor up = uploader.upload(x);
  CHECK(up.data_ptr() == x.data_ptr());
  CHECK_FALSE(uploader.upload(Tensor()).defined());
  uploader.commit();
  CHECK(uploader.held() == 0);
  uploader.release();
}

namespace {

// Every chunk of every non-empty tensor updated exactly once, within a launch's limits.
void check_multi_tensor_plan(const std::vector<int64_t>& numels, int max_tensors, int max_blocks,
                      int64_t chunk) {
  const auto launches = cuda::plan_multi_tensor_launches(numels, max_tensors, max_blocks, chunk);
  std::map<std::pair<size_t, int64_t>, int> seen;
  for (const auto& launch : launches) {
    REQUIRE(!launch.block_tensor.empty());
    REQUIRE(launch.block_tensor.size() == launch.block_chunk.size());
    REQUIRE(static_cast<int>(launch.block_tensor.size()) <= max_blocks);
    REQUIRE(static_cast<int>(launch.tensors.size()) <= max_tensors);
    for (size_t b = 0; b < launch.block_tensor.size(); ++b) {
      const int slot = launch.block_tensor[b];
      REQUIRE(slot >= 0);
      REQUIRE(slot < static_cast<int>(launch.tensors.size()));
      const size_t tensor = launch.tensors[slot];
      REQUIRE(tensor < numels.size());
      const int64_t c = launch.block_chunk[b];
      REQUIRE(c >= 0);
      REQUIRE(c * chunk < numels[tensor]);
      ++seen[{tensor, c}];
    }
  }
  size_t expected = 0;
  for (size_t t = 0; t < numels.size(); ++t) {
    const int64_t chunks = numels[t] > 0 ? (numels[t] + chunk - 1) / chunk : 0;
    expected += static_cast<size_t>(chunks);
    for (int64_t c = 0; c < chunks; ++c) REQUIRE(seen[{t, c}] == 1);
  }
  CHECK(seen.size() == expected);
}

}  // namespace

TEST_CASE("cuda host: multi-tensor launches (AdamW, clipping) cover every chunk once, also across launches") {
  // The CUDA kernel's limits: 36 tensors, 320 blocks of 65536 elements a launch.
  // soft_moe_128's experts (100.7M elements, 1536 chunks, after phi) span five launches.
  check_multi_tensor_plan({1000, 100663296}, 36, 320, 65536);
  check_multi_tensor_plan({int64_t{65536} * 300, int64_t{65536} * 700 + 1, 5}, 36, 320, 65536);
  check_multi_tensor_plan({0, 0, 7, 0}, 36, 320, 65536);
  check_multi_tensor_plan({}, 36, 320, 65536);
  std::mt19937 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int64_t> numels(static_cast<size_t>(rng() % 60));
    for (auto& n : numels) n = (rng() % 4 == 0) ? 0 : static_cast<int64_t>(rng() % 40) + 1;
    check_multi_tensor_plan(numels, 1 + static_cast<int>(rng() % 5), 1 + static_cast<int>(rng() % 7), 4);
  }
}
