// Where a tensor's storage lives.
#pragma once

#include <string>

namespace fg {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  constexpr Device() = default;
  constexpr Device(DeviceType t, int i = 0) : type(t), index(i) {}
  // "cpu", "cuda", "cuda:1"
  static Device parse(const std::string& text);

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;
};

inline constexpr Device kCPU{};
inline constexpr Device kCUDA{DeviceType::CUDA, 0};

// True when fgmoe was built with CUDA and a usable GPU is present.
bool cuda_available();
int cuda_device_count();
// True when the CUDA backend was compiled in (whether or not a GPU is present).
bool cuda_compiled();

}  // namespace fg
