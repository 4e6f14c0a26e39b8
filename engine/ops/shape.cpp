// Concatenation, splitting, patchify, resizing and one-hot.
#include "engine/ops/op_helpers.h"

namespace fg {

using namespace detail;

Tensor concat(const std::vector<Tensor>& tensors, int64_t dim) {
  FG_CHECK(!tensors.empty(), "concat: no tensors");
  const Tensor& first = tensors[0];
  dim = wrap_dim(dim, first.dim(), "concat");
  Shape shape = first.shape();
  shape[dim] = 0;
  DType dtype = first.dtype();
  for (const Tensor& t : tensors) {
    FG_CHECK(t.dim() == first.dim(), "concat: tensors of shapes ", shape_str(first.shape()),
             " and ", shape_str(t.shape()));
    check_same_device(first, t, "concat");
    for (int64_t d = 0; d < t.dim(); ++d)
      FG_CHECK(d == dim || t.size(d) == first.size(d), "concat: tensors of shapes ",
               shape_str(first.shape()), " and ", shape_str(t.shape()), " differ outside dimension ",
               dim);
    shape[dim] += t.size(dim);
    dtype = promote_types(dtype, t.dtype());
  }
  Tensor out = Tensor::empty(shape, dtype, first.device());
  std::vector<int64_t> sizes;
  {
    NoGradGuard no_grad;
    int64_t at = 0;
    for (const Tensor& t : tensors) {
      if (t.numel()) backend_of(out).copy(t, out.slice(dim, at, at + t.size(dim)));
      sizes.push_back(t.size(dim));
      at += t.size(dim);
    }
  }
  return record("concat", out, tensors, [sizes, dim](const Tensor& g, InputGrads& grads) {
    int64_t at = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (grads.needs(i)) grads.set(i, g.slice(dim, at, at + sizes[i]));
      at += sizes[i];
    }
  });
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  FG_CHECK(!tensors.empty(), "stack: no tensors");
  dim = wrap_dim(dim, tensors[0].dim() + 1, "stack");
  std::vector<Tensor> expanded;
  for (const Tensor& t : tensors) {
    FG_CHECK(t.shape() == tensors[0].shape(), "stack: tensors of shapes ",
             shape_str(tensors[0].shape()), " and ", shape_str(t.shape()));
    expanded.push_back(t.unsqueeze(dim));
  }
  return concat(expanded, dim);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  dim = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    FG_CHECK(s >= 0, "split: negative size");
    total += s;
  }
  FG_CHECK(total == x.size(dim), "split: sizes add up to ", total, " but dimension ", dim,
           " has size ", x.size(dim));
  std::vector<Tensor> parts;
  int64_t at = 0;
  for (int64_t s : sizes) {
    parts.push_back(x.slice(dim, at, at + s));
    at += s;
  }
  return parts;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  FG_CHECK(chunks > 0, "chunk: chunks must be positive");
  dim = wrap_dim(dim, x.dim(), "chunk");
  const int64_t n = x.size(dim), step = (n + chunks - 1) / chunks;
  std::vector<int64_t> sizes;
  for (int64_t at = 0; at < n; at += step) sizes.push_back(std::min(step, n - at));
  return split(x, sizes, dim);
}

Tensor patchify(const Tensor& images, int64_t patch) {
  FG_CHECK(images.dim() == 4, "patchify: images must be (B, C, H, W), got ",
           shape_str(images.shape()));
  const int64_t b = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  FG_CHECK(patch > 0 && h % patch == 0 && w % patch == 0, "patchify: image size ", h, "x", w,
           " is not divisible by the patch size ", patch);
  const int64_t gh = h / patch, gw = w / patch;
  return images.reshape({b, c, gh, patch, gw, patch})
      .permute({0, 2, 4, 3, 5, 1})
      .reshape({b, gh * gw, patch * patch * c});
}

Tensor unpatchify(const Tensor& tokens, int64_t patch, int64_t channels, int64_t height,
                  int64_t width) {
  const int64_t gh = height / patch, gw = width / patch;
  FG_CHECK(tokens.dim() == 3 && tokens.size(1) == gh * gw &&
               tokens.size(2) == patch * patch * channels,
           "unpatchify: tokens of shape ", shape_str(tokens.shape()), " do not fit ", channels,
           "x", height, "x", width, " images with patch ", patch);
  const int64_t b = tokens.size(0);
  return tokens.reshape({b, gh, gw, patch, patch, channels})
      .permute({0, 5, 1, 3, 2, 4})
      .reshape({b, channels, height, width});
}

Tensor bicubic_resize(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners) {
  FG_CHECK(x.dim() == 4, "bicubic_resize: input must be (N, C, H, W), got ", shape_str(x.shape()));
  FG_CHECK(out_h > 0 && out_w > 0, "bicubic_resize: output size must be positive");
  FG_CHECK(is_floating(x.dtype()), "bicubic_resize: needs a floating tensor, got ",
           dtype_name(x.dtype()));
  FG_CHECK(x.size(2) > 0 && x.size(3) > 0, "bicubic_resize: empty input of shape ",
           shape_str(x.shape()));
  NoGradGuard no_grad;
  Tensor out = Tensor::empty({x.size(0), x.size(1), out_h, out_w}, x.dtype(), x.device());
  if (out.numel()) backend_of(x).bicubic_resize(x.contiguous(), out, align_corners);
  return out;
}

Tensor one_hot(const Tensor& labels, int64_t classes, DType dtype) {
  FG_CHECK(!is_floating(labels.dtype()), "one_hot: labels must be integers");
  NoGradGuard no_grad;
  const Tensor range = Tensor::arange(classes, labels.dtype(), labels.device());
  return eq(labels.unsqueeze(-1), range).to(dtype);
}

}  // namespace fg
