// Element types. Float32/Float64 compute on the CPU; BFloat16 and Float16 are
// storage types there (convert with Tensor::to), and BFloat16 computes on CUDA.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace fg {

enum class DType : uint8_t { Float32, Float64, BFloat16, Float16, Int32, Int64, UInt8, Bool };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // "float32", ... as PyTorch spells them
bool is_floating(DType dtype);
// The type two operands of an arithmetic op are computed in (PyTorch-like
// promotion restricted to the types fgmoe uses).
DType promote_types(DType a, DType b);
// The type statistics, losses and norms are computed in: float64 for float64,
// float32 for everything else (16-bit floats included).
DType float_math_dtype(DType dtype);

// bfloat16: the upper half of an IEEE float, rounded to nearest even.
struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  explicit BFloat16(float value) : bits(from_float(value)) {}
  explicit operator float() const { return to_float(bits); }

  static uint16_t from_float(float value) {
    uint32_t u;
    std::memcpy(&u, &value, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
    const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>((u + rounding) >> 16);
  }
  static float to_float(uint16_t bits) {
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &u, 4);
    return value;
  }
};

// IEEE half precision, conversion only (checkpoints may hold it).
struct Float16 {
  uint16_t bits = 0;
  Float16() = default;
  explicit Float16(float value) : bits(from_float(value)) {}
  explicit operator float() const { return to_float(bits); }
  static uint16_t from_float(float value);
  static float to_float(uint16_t bits);
};

// Maps a C++ type to its DType.
template <class T>
struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::Float32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::Float64; };
template <> struct DTypeOf<BFloat16> { static constexpr DType value = DType::BFloat16; };
template <> struct DTypeOf<Float16> { static constexpr DType value = DType::Float16; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::Int32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::Int64; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::UInt8; };
template <> struct DTypeOf<bool> { static constexpr DType value = DType::Bool; };

}  // namespace fg
