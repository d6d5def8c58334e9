// The attention kinds' names and what each kernel family can run (ops/attention_spec.h). The
// limits below are the kernels' own (kernels/attention.cuh, attention_materialised.cu; the numbers
// in backend/attention_shapes.h), stated here so a config is rejected before any tensor exists.
#include "ops/attention_spec.h"

#include <sstream>

#include "backend/attention_shapes.h"
#include "core/error.h"

namespace tessera::ops {

const char* attention_kind_name(AttentionKind kind) {
  for (const AttentionKindName& k : kAttentionKinds)
    if (k.kind == kind) return k.name;
  return "?";
}

std::optional<AttentionKind> find_attention_kind(const std::string& name) {
  for (const AttentionKindName& k : kAttentionKinds)
    if (name == k.name) return k.kind;
  return std::nullopt;
}

std::string attention_kind_names() {
  std::string out;
  for (const AttentionKindName& k : kAttentionKinds)
    out += (out.empty() ? "" : ", ") + std::string(k.name);
  return out;
}

AttentionKind parse_attention_kind(const std::string& name, const char* key) {
  const std::optional<AttentionKind> kind = find_attention_kind(name);
  TESSERA_CHECK(kind.has_value(), key, " must be one of ", attention_kind_names(), "; got '", name,
                "'");
  return *kind;
}

std::string attention_support(const AttentionSpec& spec, Device device, DType dtype,
                              int64_t head_dim, int64_t q_len, int64_t k_len) {
  std::ostringstream why;
  if (spec.kind != AttentionKind::Softmax && spec.window > 0) {
    why << "a sliding window (" << spec.window << ") applies to softmax attention only, not "
        << attention_kind_name(spec.kind);
    return why.str();
  }
  if (spec.alibi && spec.kind != AttentionKind::Softmax)
    return std::string("ALiBi applies to softmax attention only, not ") +
           attention_kind_name(spec.kind);
  if (spec.kind == AttentionKind::Forgetting && spec.s2_attn)
    return "forgetting attention with S^2-Attn: its shifted half would run the forget gates' sums "
           "out of order";
  if (spec.alibi && spec.s2_attn)
    return "ALiBi with S^2-Attn: its shifted half runs the heads apart, and ALiBi's slopes are "
           "numbered over all of them";
  if (spec.window < 0) {
    why << "the sliding window must be >= 0 (0: none), got " << spec.window;
    return why.str();
  }
  if (spec.kind != AttentionKind::StickBreaking && (spec.attend_current || spec.sb_remainder))
    return "attend_current and sb_remainder apply to stick_breaking attention only";
  if (head_dim <= 0) return "the head dimension must be positive";
  if (q_len > 0 && k_len > 0 && q_len > k_len) {
    why << "more queries (" << q_len << ") than keys (" << k_len << ")";
    return why.str();
  }
  if (device.is_cpu()) return "";  // the CPU reference kernels take any head dimension and length
  if (dtype != DType::BF16 && dtype != DType::F32) {
    why << "CUDA attention kernels take bf16 or f32, not " << dtype_name(dtype);
    return why.str();
  }
  // The fused kernels: bf16 runs on tensor-core tiles sized for head dims 64 and 128; f32 runs one
  // warp per row with up to 4 values per lane (head dim <= 128).
  const int64_t plain_max = kCudaPlainMaxHeadDim;
  const bool tiles = head_dim == 64 || head_dim == 128;
  const bool fused_ok = dtype == DType::BF16 ? tiles : head_dim <= plain_max;
  const char* limit = dtype == DType::BF16 ? "head dim 64 or 128 in bf16" : "head dim <= 128 in f32";
  if (spec.kind == AttentionKind::StickBreaking && !fused_ok) {
    why << "CUDA stick-breaking attention needs " << limit << ", got head dim " << head_dim;
    return why.str();
  }
  if (spec.kind == AttentionKind::Softmax && (spec.window > 0 || spec.alibi) && !fused_ok) {
    why << "CUDA " << (spec.window > 0 ? "sliding-window" : "ALiBi")
        << " attention (flash kernel) needs " << limit << ", got head dim " << head_dim;
    return why.str();
  }
  // Forgetting attention runs in the flash kernels alone (the mma.sync families in bf16, the
  // warp-per-row ones in f32 and for decoding), so at their head dims alone.
  if (spec.kind == AttentionKind::Forgetting && !fused_ok) {
    why << "CUDA forgetting attention (flash kernel) needs " << limit << ", got head dim "
        << head_dim;
    return why.str();
  }
  // Fewer queries than keys (KV-cached decoding) runs the warp-per-row forwards in either dtype.
  const bool offset = q_len > 0 && k_len > q_len;
  if (offset && head_dim > plain_max) {
    why << "CUDA KV-cached decoding (" << q_len << " queries over " << k_len
        << " keys) runs the warp-per-row kernels, which need head dim <= " << plain_max
        << ", got head dim " << head_dim;
    return why.str();
  }
  // Softmax without a window or an offset falls back to the materialised CUDA kernel for head dims
  // other than 64 and 128; it holds q_i and a row of scores in shared memory.
  if (spec.kind == AttentionKind::Softmax && spec.window == 0 && !offset && !tiles &&
      k_len + head_dim > kCudaMaterialisedMaxFloats) {
    why << "CUDA softmax attention with head dim " << head_dim
        << " runs the materialised kernel, which holds a row of T scores in shared memory: T + "
           "head dim must be <= "
        << kCudaMaterialisedMaxFloats << ", got T = " << k_len;
    return why.str();
  }
  return "";
}

}  // namespace tessera::ops
