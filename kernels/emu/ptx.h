// Inline PTX under the CUDA emulator (cuda_emu.h). kernels/emu/translate.py rewrites each
//   asm volatile("TEXT" : "=r"(x), "+f"(y) : "r"(z), "l"(p) : "memory");
// in kernels/*.cu into
//   ::tessera::emu::ptx_asm("TEXT", {ptx_out("=r", x), ptx_inout("+f", y), ptx_in("r", z), ptx_in("l", p)});
// with the operands in the asm statement's order (outputs, then inputs), so %0, %1, ... name the
// same C++ expressions they name for nvcc. ptx.cpp then parses TEXT and carries out each
// instruction as the PTX ISA defines it (NVIDIA, "Parallel Thread Execution ISA"), as a warp
// collective where the instruction is one: so the operand order, the constraint of each operand and
// the registers a kernel packs are checked, not replaced.
//
// The instructions it knows (any other is an error naming it):
//   ldmatrix.sync.aligned.m8n8.x4[.trans].shared[::cta].b16   {d0..d3}, [shared address]
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32      {d0..d3}, {a0..a3}, {b0, b1}, {c0..c3}
//   cp.async.{ca,cg}.shared[::cta].global [shared], [global], cp-size[, src-size]
//   cp.async.commit_group; cp.async.wait_group N; cp.async.wait_all
// A shared address (the .shared operands) is what __cvta_generic_to_shared returns here: the offset
// into the launch's dynamic shared memory, the only shared memory such an address may point into.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

namespace tessera::emu {

struct PtxOperand {
  enum class Use { In, Out, InOut };
  enum class Type { B32, F32, B64 };  // the C++ expression's: 32-bit integer, float, 64-bit
  Use use;
  Type type;
  char constraint;  // "r", "f", "l", ... without its "=" or "+"
  void* ref;        // Out and InOut: where the result goes
  uint64_t bits;    // In and InOut: the value on entry
};

namespace detail {
template <class T>
constexpr PtxOperand::Type ptx_type() {
  static_assert(std::is_arithmetic_v<T> || std::is_pointer_v<T>, "a PTX operand is a number or a pointer");
  if constexpr (std::is_same_v<T, float>) {
    return PtxOperand::Type::F32;
  } else if constexpr (std::is_pointer_v<T> || sizeof(T) == 8) {
    return PtxOperand::Type::B64;
  } else {
    static_assert(sizeof(T) <= 4 && std::is_integral_v<T>, "a PTX operand of an unsupported type");
    return PtxOperand::Type::B32;
  }
}
template <class T>
uint64_t ptx_bits(const T& v) {
  if constexpr (std::is_pointer_v<T>) {
    return reinterpret_cast<uintptr_t>(v);
  } else if constexpr (std::is_same_v<T, float>) {
    return std::bit_cast<uint32_t>(v);
  } else if constexpr (sizeof(T) == 8) {
    return uint64_t(v);
  } else {
    return uint32_t(v);
  }
}
constexpr char letter(const char* c) { return c[0] == '=' || c[0] == '+' ? c[1] : c[0]; }
}  // namespace detail

template <class T>
PtxOperand ptx_in(const char* constraint, const T& v) {
  return {PtxOperand::Use::In, detail::ptx_type<T>(), detail::letter(constraint), nullptr,
          detail::ptx_bits(v)};
}
template <class T>
PtxOperand ptx_out(const char* constraint, T& r) {
  static_assert(!std::is_const_v<T>, "a PTX output must be assignable");
  return {PtxOperand::Use::Out, detail::ptx_type<T>(), detail::letter(constraint), &r, 0};
}
template <class T>
PtxOperand ptx_inout(const char* constraint, T& r) {
  static_assert(!std::is_const_v<T>, "a PTX output must be assignable");
  return {PtxOperand::Use::InOut, detail::ptx_type<T>(), detail::letter(constraint), &r,
          detail::ptx_bits(r)};
}

// Carries out `text` (one or more ';'-terminated instructions, optionally inside one { } scope that
// declares predicates) in the running emulated thread.
void ptx_asm(const char* text, const PtxOperand* operands, size_t n);
inline void ptx_asm(const char* text, std::initializer_list<PtxOperand> operands) {
  ptx_asm(text, operands.begin(), operands.size());
}

// The shared-window address of p (an offset into the launch's dynamic shared memory); a pointer
// outside that memory is an error in the running thread.
size_t shared_address(const void* p);

}  // namespace tessera::emu

inline size_t __cvta_generic_to_shared(const void* p) { return ::tessera::emu::shared_address(p); }
