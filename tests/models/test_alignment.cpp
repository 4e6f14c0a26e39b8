// The alignment metric against values worked out by hand.
#include <doctest/doctest.h>

#include "engine/ops.h"
#include "models/alignment.h"

using namespace fg;
using namespace fg::models;

TEST_CASE("alignment: soft and binary IoU on a 2x2 grid by hand") {
  // Sample 0: token weights (mean over 2 experts) a = [0.1, 0.2, 0.3, 0.4]; mean 0.25
  // -> above-mean tokens {2, 3}. Foreground tokens {1, 3} (mask is the identity at 2x2).
  // inner = {3}: w 0.4, 1 token; outer = {1, 2, 3}: w 0.9, 3 tokens -> q = 0.4/0.9, IoU = 1/3.
  // Sample 1: no foreground: left out.
  std::vector<double> d = {0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4,  // sample 0: (m=4, n=2, p=1)
                           0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25};
  const Tensor dispatch = Tensor::from_vector(d, {2, 4, 2, 1});
  const Tensor masks = Tensor::from_vector<float>({0, 1, 0, 1, 0, 0, 0, 0}, {2, 1, 2, 2});
  const AlignmentSums s = dispatch_alignment(dispatch, masks);
  CHECK(s.count == 1);
  CHECK(s.mean_soft_iou() == doctest::Approx(0.4 / 0.9));
  CHECK(s.mean_iou() == doctest::Approx(1.0 / 3.0));
  // Perfect alignment: above-mean tokens are exactly the foreground.
  const Tensor perfect = Tensor::from_vector<float>({0, 0, 1, 1, 0, 0, 0, 0}, {2, 1, 2, 2});
  const AlignmentSums p = dispatch_alignment(dispatch, perfect);
  CHECK(p.mean_iou() == doctest::Approx(1.0));
  CHECK(p.mean_soft_iou() == doctest::Approx(1.0));
  // A sample marked unusable is left out; merging adds counts.
  const Tensor usable = Tensor::from_vector<uint8_t>({0, 1}, {2}).to(DType::Bool);
  CHECK(dispatch_alignment(dispatch, masks, usable).count == 0);
  AlignmentSums m = s;
  m.merge(p);
  CHECK(m.count == 2);
  CHECK(m.mean_iou() == doctest::Approx((1.0 / 3.0 + 1.0) / 2));
}
