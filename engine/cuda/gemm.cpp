// GEMM through cuBLASLt: (batched, strided) row-major products as GemmArgs
// describes them, mapped to cuBLAS's column-major form by to_column_major
// (gemm_plan.h), with the bias and ReLU fused as cuBLASLt epilogues.
//
// float32 computes in float (TF32 tensor cores when cuda_set_allow_tf32(true)),
// bfloat16 with float accumulation, float64 in double. Descriptors and the
// heuristic's algorithm are cached per problem (shapes, strides, pointer
// alignments, epilogue, math mode), so the steady state does no heuristic
// search. When cuBLASLt offers no algorithm (or FGMOE_CUBLASLT=0 is set), the
// classic cuBLAS strided-batched GEMM runs instead with the bias and ReLU as
// separate kernels.
#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "engine/cuda/context.h"
#include "engine/cuda/gemm_epilogue.h"
#include "engine/cuda/gemm_plan.h"
#include "engine/cuda/kernels.h"

namespace fg::cuda {

namespace {

[[noreturn]] void throw_cublas_error(const char* file, int line, const char* what,
                                     cublasStatus_t status) {
  throw_error(file, line,
              str_cat("cuBLAS error in matmul (", what, "): ", cublasGetStatusString(status)));
}

#define FG_CUBLAS_CHECK(expr)                                          \
  do {                                                                 \
    const cublasStatus_t fg_cublas_status = (expr);                    \
    if (fg_cublas_status != CUBLAS_STATUS_SUCCESS)                     \
      throw_cublas_error(__FILE__, __LINE__, #expr, fg_cublas_status); \
  } while (0)

// 32 MiB: what cuBLAS recommends on Hopper; shared by both handles (one stream).
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

struct Libraries {
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;
  void* workspace = nullptr;
  bool use_lt = true;
};

Libraries& libraries() {
  static Libraries* libs = [] {
    auto* l = new Libraries();  // never destroyed (process lifetime)
    cudaStream_t s = stream();
    FG_CUBLAS_CHECK(cublasLtCreate(&l->lt));
    FG_CUBLAS_CHECK(cublasCreate(&l->blas));
    FG_CUBLAS_CHECK(cublasSetStream(l->blas, s));
    l->workspace = cached_malloc(kWorkspaceBytes);
    // An explicit workspace keeps the classic path usable under graph capture.
    FG_CUBLAS_CHECK(cublasSetWorkspace(l->blas, l->workspace, kWorkspaceBytes));
    const char* env = std::getenv("FGMOE_CUBLASLT");
    l->use_lt = !(env && std::strcmp(env, "0") == 0);
    return l;
  }();
  return *libs;
}

cudaDataType data_type(DType dtype) {
  switch (dtype) {
    case DType::Float32:
      return CUDA_R_32F;
    case DType::Float64:
      return CUDA_R_64F;
    case DType::BFloat16:
      return CUDA_R_16BF;
    default:
      FG_CHECK(false, "matmul: dtype ", dtype_name(dtype),
               " is not supported on CUDA (float32, bfloat16 and float64 are)");
  }
  return CUDA_R_32F;
}

cublasComputeType_t compute_type(DType dtype, bool tf32) {
  if (dtype == DType::Float64) return CUBLAS_COMPUTE_64F;
  if (dtype == DType::Float32 && tf32) return CUBLAS_COMPUTE_32F_FAST_TF32;
  return CUBLAS_COMPUTE_32F;
}

// The largest power of two (at most 256) dividing the address of every matrix
// of a batch and of every column: what the heuristic may assume.
uint32_t alignment_of(const void* ptr, int64_t ld, int64_t batch_stride, int64_t batch,
                      size_t element) {
  uint64_t bits = reinterpret_cast<uintptr_t>(ptr);
  bits |= static_cast<uint64_t>(ld) * element;
  if (batch > 1) bits |= static_cast<uint64_t>(batch_stride) * element;
  uint32_t alignment = 256;
  while (alignment > 1 && (bits % alignment) != 0) alignment /= 2;
  return alignment;
}

struct PlanKey {
  DType dtype;
  bool tf32, trans_first, trans_second;
  uint32_t epilogue;
  int64_t m, n, k, ld_first, ld_second, ldd, stride_first, stride_second, stride_d, batch;
  uint32_t align_first, align_second, align_d, align_bias;
  bool operator==(const PlanKey& o) const { return std::memcmp(this, &o, sizeof(PlanKey)) == 0; }
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& key) const {
    // FNV-1a over the key's bytes (the key is zero-initialized, padding included).
    const auto* bytes = reinterpret_cast<const unsigned char*>(&key);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(PlanKey); ++i) h = (h ^ bytes[i]) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};

struct Plan {
  bool usable = false;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t first = nullptr, second = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

std::mutex g_mutex;
std::unordered_map<PlanKey, Plan, PlanKeyHash>& plans() {
  static auto* cache = new std::unordered_map<PlanKey, Plan, PlanKeyHash>();
  return *cache;
}

cublasLtMatrixLayout_t make_layout(cudaDataType type, int64_t rows, int64_t cols, int64_t ld,
                                   int64_t batch, int64_t batch_stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  FG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows),
                                             static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    FG_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                     &count, sizeof(count)));
    FG_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &batch_stride, sizeof(batch_stride)));
  }
  return layout;
}

void destroy_plan(Plan& plan) {
  if (plan.desc) cublasLtMatmulDescDestroy(plan.desc);
  if (plan.first) cublasLtMatrixLayoutDestroy(plan.first);
  if (plan.second) cublasLtMatrixLayoutDestroy(plan.second);
  if (plan.d) cublasLtMatrixLayoutDestroy(plan.d);
  plan = Plan{};
}

Plan make_plan(const PlanKey& key, const ColumnMajorGemm& cm, const void* bias) {
  Libraries& libs = libraries();
  Plan plan;
  const cudaDataType type = data_type(key.dtype);
  const cudaDataType scale = key.dtype == DType::Float64 ? CUDA_R_64F : CUDA_R_32F;
  FG_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, compute_type(key.dtype, key.tf32), scale));
  const cublasOperation_t op_first = key.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = key.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N;
  FG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
                                                 sizeof(op_first)));
  FG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                                                 sizeof(op_second)));
  FG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                 &key.epilogue, sizeof(key.epilogue)));
  if (bias) {
    // The heuristic reads the pointer's alignment; the same bias vector serves every batch.
    FG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                   &bias, sizeof(bias)));
    const int64_t bias_stride = 0;
    FG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
        plan.desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &bias_stride, sizeof(bias_stride)));
  }
  plan.first =
      make_layout(type, cm.first.rows, cm.first.cols, cm.first.ld, cm.batch, cm.first.batch_stride);
  plan.second = make_layout(type, cm.second.rows, cm.second.cols, cm.second.ld, cm.batch,
                            cm.second.batch_stride);
  plan.d = make_layout(type, cm.m, cm.n, cm.ldd, cm.batch, cm.stride_d);

  cublasLtMatmulPreference_t preference = nullptr;
  FG_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  const uint64_t workspace = kWorkspaceBytes;
  FG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  FG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference,
                                                       CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                       &key.align_first, sizeof(key.align_first)));
  FG_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                           &key.align_second, sizeof(key.align_second)));
  FG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align_d, sizeof(key.align_d)));
  FG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align_d, sizeof(key.align_d)));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(libs.lt, plan.desc, plan.first, plan.second, plan.d, plan.d,
                                     preference, 1, &result, &returned);
  FG_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(preference));
  if (status != CUBLAS_STATUS_SUCCESS || returned == 0 || result.state != CUBLAS_STATUS_SUCCESS) {
    destroy_plan(plan);  // not usable: the caller takes the classic path
    return plan;
  }
  plan.algo = result.algo;
  plan.usable = true;
  return plan;
}

// The classic cuBLAS path: bias rows first (beta becomes 1), GEMM, ReLU after.
void classic_gemm(const GemmArgs& g, const ColumnMajorGemm& cm, bool tf32) {
  Libraries& libs = libraries();
  double beta = g.beta;
  if (g.bias) {
    gemm_start_rows(g.dtype, g.c, g.ldc, g.stride_c, g.batch, g.m, g.n, g.bias, 0.0);
    beta = 1.0;
  }
  const cudaDataType type = data_type(g.dtype);
  const cublasOperation_t op_first = cm.first.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = cm.second.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const float alpha_f = static_cast<float>(g.alpha), beta_f = static_cast<float>(beta);
  const double alpha_d = g.alpha, beta_d = beta;
  const bool is_double = g.dtype == DType::Float64;
  FG_CUBLAS_CHECK(cublasGemmStridedBatchedEx_64(
      libs.blas, op_first, op_second, cm.m, cm.n, cm.k,
      is_double ? static_cast<const void*>(&alpha_d) : static_cast<const void*>(&alpha_f),
      cm.first.ptr, type, cm.first.ld, cm.first.batch_stride, cm.second.ptr, type, cm.second.ld,
      cm.second.batch_stride,
      is_double ? static_cast<const void*>(&beta_d) : static_cast<const void*>(&beta_f), cm.d, type,
      cm.ldd, cm.stride_d, cm.batch, compute_type(g.dtype, tf32), CUBLAS_GEMM_DEFAULT));
  FG_CUDA_LAUNCH_CHECK("matmul (cuBLAS)");
  if (g.relu) gemm_relu_rows(g.dtype, g.c, g.ldc, g.stride_c, g.batch, g.m, g.n);
}

}  // namespace

void gemm(const GemmArgs& g) {
  FG_CHECK(g.m >= 0 && g.n >= 0 && g.k >= 0 && g.batch >= 0, "matmul: negative size");
  FG_CHECK(!(g.bias && g.beta != 0.0), "matmul: a bias with beta != 0 is not supported");
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  data_type(g.dtype);  // rejects unsupported dtypes with a clear message
  if (g.k == 0) {
    // Nothing to multiply: C = beta C (+ bias), then ReLU.
    gemm_start_rows(g.dtype, g.c, g.ldc, g.stride_c, g.batch, g.m, g.n, g.bias, g.beta);
    if (g.relu) gemm_relu_rows(g.dtype, g.c, g.ldc, g.stride_c, g.batch, g.m, g.n);
    return;
  }
  FG_CHECK(g.batch <= INT32_MAX, "matmul: batch of ", g.batch, " is too large");
  const ColumnMajorGemm cm = to_column_major(g);
  const bool tf32 = g.dtype == DType::Float32 && allow_tf32();
  Libraries& libs = libraries();
  const size_t element = dtype_size(g.dtype);
  const uint32_t align_bias = g.bias ? alignment_of(g.bias, 0, 0, 1, element) : 0;
  // A bias under 16-byte alignment (a view into a larger bias, e.g. one third of a
  // packed projection's) goes the classic way too: cuBLASLt's heuristic may still
  // choose a kernel that loads it 16 bytes at a time.
  if (!libs.use_lt || (g.bias && align_bias < 16)) {
    classic_gemm(g, cm, tf32);
    return;
  }
  PlanKey key;
  std::memset(&key, 0, sizeof(key));  // padding too: the key is compared and hashed bytewise
  key.dtype = g.dtype;
  key.tf32 = tf32;
  key.trans_first = cm.first.transposed;
  key.trans_second = cm.second.transposed;
  key.epilogue = g.bias ? (g.relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                        : (g.relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT);
  key.m = cm.m;
  key.n = cm.n;
  key.k = cm.k;
  key.ld_first = cm.first.ld;
  key.ld_second = cm.second.ld;
  key.ldd = cm.ldd;
  key.batch = cm.batch;
  if (cm.batch > 1) {
    key.stride_first = cm.first.batch_stride;
    key.stride_second = cm.second.batch_stride;
    key.stride_d = cm.stride_d;
  }
  key.align_first =
      alignment_of(cm.first.ptr, cm.first.ld, cm.first.batch_stride, cm.batch, element);
  key.align_second =
      alignment_of(cm.second.ptr, cm.second.ld, cm.second.batch_stride, cm.batch, element);
  key.align_d = alignment_of(cm.d, cm.ldd, cm.stride_d, cm.batch, element);
  key.align_bias = align_bias;

  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = plans().find(key);
  if (it == plans().end()) it = plans().emplace(key, make_plan(key, cm, g.bias)).first;
  Plan& plan = it->second;
  if (!plan.usable) {
    classic_gemm(g, cm, tf32);
    return;
  }
  if (g.bias)
    FG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                   &g.bias, sizeof(g.bias)));
  const float alpha_f = static_cast<float>(g.alpha), beta_f = static_cast<float>(g.beta);
  const double alpha_d = g.alpha, beta_d = g.beta;
  const bool is_double = g.dtype == DType::Float64;
  const cublasStatus_t status = cublasLtMatmul(
      libs.lt, plan.desc,
      is_double ? static_cast<const void*>(&alpha_d) : static_cast<const void*>(&alpha_f),
      cm.first.ptr, plan.first, cm.second.ptr, plan.second,
      is_double ? static_cast<const void*>(&beta_d) : static_cast<const void*>(&beta_f), cm.d,
      plan.d, cm.d, plan.d, &plan.algo, libs.workspace, kWorkspaceBytes, stream());
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    // The heuristic's algorithm can still refuse this call (its check "does not
    // fully guarantee" it runs): this shape goes to the classic path from now on.
    // Nothing was launched, so C is as it was.
    destroy_plan(plan);
    classic_gemm(g, cm, tf32);
    return;
  }
  if (status != CUBLAS_STATUS_SUCCESS)
    throw_cublas_error(__FILE__, __LINE__, "cublasLtMatmul", status);
  FG_CUDA_LAUNCH_CHECK("matmul (cuBLASLt)");
}

}  // namespace fg::cuda
