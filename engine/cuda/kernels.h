// Host entry points of the CUDA kernels, one per Backend operation (see
// engine/backend.h for the contracts). Each validates what it supports, queues
// its kernels on the process's stream and returns without waiting.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/backend.h"

namespace fg::cuda {

// copy_fill.cu, unary_binary.cu
void copy(const Tensor& src, const Tensor& dst);
void fill(const Tensor& dst, double value);
void unary(UnaryOp op, const Tensor& x, const Tensor& out);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);

// reduce.cu
void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner,
            const Tensor& out);

// gemm.cpp
void gemm(const GemmArgs& args);

// softmax.cu
void softmax(const Tensor& x, const Tensor& out, int64_t outer, int64_t n, int64_t inner, bool log);
void softmax_backward(const Tensor& y, const Tensor& grad, const Tensor& grad_input, int64_t outer,
                      int64_t n, int64_t inner, bool log);

// layer_norm.cu
void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, int64_t rows,
                int64_t cols, const Tensor& out, const Tensor& mean, const Tensor& rstd);
void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean,
                         const Tensor& rstd, const Tensor& weight, int64_t rows, int64_t cols,
                         const Tensor& grad_input, const Tensor& grad_weight,
                         const Tensor& grad_bias);

void add_layer_norm(const AddLayerNormArgs& args);
void add_layer_norm_backward(const AddLayerNormBackwardArgs& args);

// grad_clip.cu
void sum_squares_many(const std::vector<Tensor>& xs, const Tensor& out);
void scale_many(const std::vector<Tensor>& xs, const Tensor& factor);

// random.cu
void uniform(const Tensor& out, uint64_t seed, uint64_t offset, double low, double high);
void normal(const Tensor& out, uint64_t seed, uint64_t offset, double mean, double std);
void dropout_mask(const Tensor& mask, double p, uint64_t seed, uint64_t offset);

// dropout.cu
void dropout(const Tensor& x, const Tensor& out, const DropoutArgs& args);
void dropout_backward(const Tensor& grad, const Tensor& out, const Tensor& grad_input,
                      const DropoutArgs& args);

// bicubic.cu
void bicubic_resize(const Tensor& x, const Tensor& out, bool align_corners);

// adamw.cu
void adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
           const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
           const AdamWParams& hyper);

// attention.cu
bool attention_supported(const AttentionShape& shape);
void attention(const AttentionForwardArgs& args);
void attention_backward(const AttentionBackwardArgs& args);

}  // namespace fg::cuda
