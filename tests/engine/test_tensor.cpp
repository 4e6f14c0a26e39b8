// Tensors: dtypes, conversion, views, creation, printing, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "engine/ops.h"

using namespace fg;

TEST_CASE("tensor: bfloat16 conversion rounds to nearest even") {
  CHECK(BFloat16(1.0f).bits == 0x3F80);
  CHECK(BFloat16(-2.0f).bits == 0xC000);
  // 1 + 2^-8 is halfway between two bf16 values: ties to even (1.0).
  CHECK(BFloat16(1.00390625f).bits == 0x3F80);
  // 1 + 3*2^-8 is halfway: rounds to the even 1 + 2^-6 (0x3F82).
  CHECK(BFloat16(1.01171875f).bits == 0x3F82);
  CHECK(static_cast<float>(BFloat16(3.140625f)) == 3.140625f);
  CHECK(std::isnan(static_cast<float>(BFloat16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isinf(static_cast<float>(BFloat16(std::numeric_limits<float>::infinity()))));
}

TEST_CASE("tensor: float16 conversion") {
  CHECK(Float16(1.0f).bits == 0x3C00);
  CHECK(Float16(65504.0f).bits == 0x7BFF);
  CHECK(Float16(1e6f).bits == 0x7C00);  // overflow to inf
  CHECK(Float16(5.9604645e-08f).bits == 0x0001);  // smallest subnormal
  CHECK(Float16::to_float(0x0001) == 5.9604645e-08f);
  CHECK(Float16::to_float(0xC000) == -2.0f);
  CHECK(Float16::to_float(0x3555) == doctest::Approx(0.33325195f));
  for (float v : {0.1f, -7.25f, 1234.5f, 6.1e-5f})
    CHECK(static_cast<float>(Float16(v)) == doctest::Approx(v).epsilon(1e-3));
}

TEST_CASE("tensor: dtype conversions through tensors") {
  const Tensor x = Tensor::from_vector<float>({-1.5f, 0.0f, 2.25f, 3.0f}, {4});
  CHECK(x.to(DType::BFloat16).to(DType::Float32).to_vector<float>() == x.to_vector<float>());
  CHECK(x.to(DType::Float16).to(DType::Float64).to_vector<double>() == std::vector<double>{-1.5, 0, 2.25, 3});
  CHECK(x.to(DType::Int64).to_vector<int64_t>() == std::vector<int64_t>{-1, 0, 2, 3});
  CHECK(x.to(DType::Bool).to_vector<uint8_t>() == std::vector<uint8_t>{1, 0, 1, 1});
  CHECK(x.to(DType::Bool).to(DType::Float32).to_vector<float>() == std::vector<float>{1, 0, 1, 1});
  CHECK(dtype_size(DType::BFloat16) == 2);
  CHECK(std::string(dtype_name(DType::Int32)) == "int32");
}

TEST_CASE("tensor: reshape of contiguous data is a view; transpose then contiguous copies") {
  const Tensor x = Tensor::arange(12, DType::Float32).reshape({3, 4});
  const Tensor v = x.reshape({2, 6});
  CHECK(v.storage() == x.storage());
  const Tensor t = x.transpose(0, 1);
  CHECK(t.storage() == x.storage());
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.strides() == Shape{1, 4});
  const Tensor c = t.contiguous();
  CHECK(c.storage() != x.storage());
  CHECK(c.is_contiguous());
  CHECK(c.to_vector<float>() == std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  // reshape of a transposed tensor must copy; view must refuse.
  CHECK(t.reshape({12}).to_vector<float>() == c.to_vector<float>());
  CHECK_THROWS_AS(t.view({12}), Error);
  // Flattening a contiguous slice of leading dims stays a view.
  const Tensor s = Tensor::arange(24, DType::Float32).reshape({2, 3, 4}).slice(0, 1, 2);
  CHECK(s.view({12}).to_vector<float>()[0] == 12);
}

TEST_CASE("tensor: slices, select, expand, squeeze") {
  const Tensor x = Tensor::arange(24, DType::Float32).reshape({2, 3, 4});
  const Tensor s = x.slice(2, 1, 4, 2);
  CHECK(s.shape() == Shape{2, 3, 2});
  CHECK(s.strides() == Shape{12, 4, 2});
  CHECK(s.to_vector<float>() == std::vector<float>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23});
  CHECK(x.slice(1, -1, 100).to_vector<float>() == std::vector<float>{8, 9, 10, 11, 20, 21, 22, 23});
  CHECK(x.select(0, 1).select(0, 2).to_vector<float>() == std::vector<float>{20, 21, 22, 23});
  const Tensor e = Tensor::from_vector<float>({1, 2}, {2, 1}).expand({2, 3});
  CHECK(e.strides()[1] == 0);
  CHECK(e.to_vector<float>() == std::vector<float>{1, 1, 1, 2, 2, 2});
  CHECK(x.unsqueeze(0).shape() == Shape{1, 2, 3, 4});
  CHECK(x.unsqueeze(-1).shape() == Shape{2, 3, 4, 1});
  CHECK(x.unsqueeze(0).squeeze(0).shape() == x.shape());
  CHECK(x.flatten(1).shape() == Shape{2, 12});
  CHECK(x.permute({2, 0, 1}).shape() == Shape{4, 2, 3});
  CHECK_THROWS_AS(x.expand({3, 3, 4}), Error);
  CHECK_THROWS_AS(x.permute({0, 0, 1}), Error);
  CHECK_THROWS_WITH_AS(x.size(3), doctest::Contains("out of range"), Error);
}

TEST_CASE("tensor: concat, split, chunk, stack") {
  const Tensor a = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2});
  const Tensor b = Tensor::from_vector<float>({5, 6}, {2, 1});
  const Tensor c = concat({a, b}, 1);
  CHECK(c.to_vector<float>() == std::vector<float>{1, 2, 5, 3, 4, 6});
  const auto parts = split(c, {2, 1}, 1);
  CHECK(parts[1].to_vector<float>() == std::vector<float>{5, 6});
  CHECK(chunk(Tensor::arange(7, DType::Float32), 3, 0).size() == 3);
  CHECK(chunk(Tensor::arange(7, DType::Float32), 3, 0)[2].to_vector<float>() == std::vector<float>{6});
  CHECK(stack({a, a}, 0).shape() == Shape{2, 2, 2});
  CHECK_THROWS_AS(concat({a, Tensor::ones({3, 3})}, 1), Error);
  CHECK_THROWS_WITH_AS(split(c, {2, 2}, 1), doctest::Contains("add up to 4"), Error);
}

TEST_CASE("tensor: creation, storage views and bounds") {
  CHECK(Tensor::zeros({2, 2}).to_vector<float>() == std::vector<float>(4, 0));
  CHECK(Tensor::full({3}, 2.5, DType::Float64).to_vector<double>() == std::vector<double>(3, 2.5));
  CHECK(Tensor::scalar(4).dim() == 0);
  CHECK(Tensor::scalar(4).item() == 4);
  CHECK(Tensor::arange(3).dtype() == DType::Int64);
  auto storage = std::make_shared<Storage>(6 * sizeof(float), kCPU);
  float* raw = static_cast<float*>(storage->data());
  for (int i = 0; i < 6; ++i) raw[i] = static_cast<float>(i);
  const Tensor strided = Tensor::from_storage(storage, {2, 2}, {1, 2}, 1, DType::Float32);
  CHECK(strided.to_vector<float>() == std::vector<float>{1, 3, 2, 4});
  CHECK_THROWS_WITH_AS(Tensor::from_storage(storage, {2, 3}, {3, 1}, 1, DType::Float32),
                       doctest::Contains("reaches past the end"), Error);
  CHECK_THROWS_AS(Tensor::from_vector<float>({1, 2, 3}, {2, 2}), Error);
  CHECK_THROWS_AS(Tensor::empty({-1, 2}), Error);
  CHECK_THROWS_WITH_AS(Tensor::ones({2, 3}) + Tensor::ones({4}), doctest::Contains("cannot be broadcast"), Error);
  CHECK_THROWS_WITH_AS(matmul(Tensor::ones({2, 3}), Tensor::ones({2, 3})),
                       doctest::Contains("cannot be multiplied"), Error);
}

TEST_CASE("tensor: printing") {
  const Tensor x = Tensor::from_vector<float>({1, 2.5f, -3, 4}, {2, 2});
  const std::string s = x.str();
  CHECK(s.find("tensor([[1.0000, 2.5000],") != std::string::npos);
  CHECK(s.find("-3.0000") != std::string::npos);
  CHECK(Tensor::arange(3).str() == "tensor([0, 1, 2])");
  CHECK(Tensor::ones({2}, DType::Float64).str().find("dtype=float64") != std::string::npos);
  CHECK(Tensor::zeros({2000}).str().find("...") != std::string::npos);
}

TEST_CASE("tensor: cuda device is reported unavailable without a GPU") {
  if (cuda_available()) return;
  CHECK_THROWS_WITH_AS(Tensor::zeros({2}, DType::Float32, kCUDA), doctest::Contains("not available"), Error);
  CHECK(Device::parse("cuda:1").index == 1);
  CHECK_THROWS_AS(Device::parse("tpu"), Error);
}
