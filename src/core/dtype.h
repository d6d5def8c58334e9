// Element types and devices.
//
// f32 is the compute type of the CPU reference backend; f64 exists so gradient checks can run the
// same kernels in double precision; bf16 is the storage type of parameters and activations on the
// GPU; i32 holds token ids and targets; u8 holds masks and packed 4-bit codes.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

namespace tessera {

enum class DType : uint8_t { F32, F64, BF16, I32, U8 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::U8: return "u8";
  }
  return "?";
}

inline bool is_floating(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16; }

// bfloat16: the top 16 bits of an IEEE float. Conversion from f32 rounds to nearest even; NaN stays
// NaN (a quiet NaN is forced so that rounding cannot turn it into infinity).
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  explicit bf16(float f) : bits(from_float(f)) {}
  explicit operator float() const {
    uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static uint16_t from_float(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return uint16_t((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
  }
};
static_assert(sizeof(bf16) == 2);

// x as S, for any pair of float, double and bf16 (bf16 converts through float only).
template <typename S, typename T>
inline S convert(T x) {
  if constexpr (std::is_same_v<T, bf16>) {
    return S(float(x));
  } else if constexpr (std::is_same_v<S, bf16>) {
    return bf16(float(x));
  } else {
    return S(x);
  }
}

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device&) const = default;
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

}  // namespace tessera
