// The CPU kernel table and the device -> table dispatch.
#include "backend/cpu/cpu.h"
#include "backend/cuda.h"

namespace tessera {

namespace cpu {
const Kernels& kernels() {
  static const Kernels table{
      .copy = copy,
      .fill = fill,
      .arange = arange,
      .uniform = uniform,
      .normal = normal,
      .gemm = gemm,
      .linear_forward = linear_forward,
      .linear_gelu_forward = linear_gelu_forward,
      .linear_dgelu_backward = linear_dgelu_backward,
      .linear_param_backward = linear_param_backward,
      .binary = binary,
      .axpby = axpby,
      .sum_dim = sum_dim,
      .expand_dim = expand_dim,
      .embedding_forward = embedding_forward,
      .embedding_backward = embedding_backward,
      .layernorm_forward = layernorm_forward,
      .layernorm_backward = layernorm_backward,
      .rmsnorm_forward = rmsnorm_forward,
      .rmsnorm_backward = rmsnorm_backward,
      .gelu_forward = gelu_forward,
      .gelu_backward = gelu_backward,
      .silu_forward = silu_forward,
      .silu_backward = silu_backward,
      .swiglu_forward = swiglu_forward,
      .swiglu_backward = swiglu_backward,
      .dropout = dropout,
      .softmax_forward = softmax_forward,
      .softmax_backward = softmax_backward,
      .log_softmax_forward = log_softmax_forward,
      .log_softmax_backward = log_softmax_backward,
      .cross_entropy_forward = cross_entropy_forward,
      .cross_entropy_backward = cross_entropy_backward,
      .cross_entropy_fused = cross_entropy_fused,
      .cross_entropy_rescale = cross_entropy_rescale,
      .rope = rope,
      .forget_gate_forward = forget_gate_forward,
      .forget_gate_backward = forget_gate_backward,
      .attention_forward = attention_forward,
      .attention_backward = attention_backward,
      .adamw_step = adamw_step,
      .adamw_step_flat = adamw_step_flat,
      .sum_squares = sum_squares,
      .lomo_grad_sum_squares = lomo_grad_sum_squares,
      .lomo_step = lomo_step,
      .adalomo_step = adalomo_step,
      .nf4_dequantize = nf4_dequantize,
      .nf4_matmul = nf4_matmul,
      .nf4_absmax_dequantize = nf4_absmax_dequantize,
      .flash_attention_forward = flash_attention_forward,
      .flash_attention_backward = flash_attention_backward,
      // No documents entries (nor stick-breaking's below): ops::packed_causal_attention runs the
      // kernels on each document's view, and a CPU kernel call costs no launch.
      .flash_attention_forward_documents = nullptr,
      .flash_attention_backward_documents = nullptr,
      .stick_breaking_forward = stick_breaking_forward,
      .stick_breaking_backward = stick_breaking_backward,
      .stick_breaking_forward_documents = nullptr,
      .stick_breaking_backward_documents = nullptr,
  };
  return table;
}
}  // namespace cpu

const Kernels& kernels_for(Device d) { return d.is_cpu() ? cpu::kernels() : cuda::kernels(); }

void check_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
    } else {
      TESSERA_CHECK(t->device() == first->device(), op, ": tensors on different devices: ",
                    first->device().str(), " ", shape_str(first->shape()), " vs ",
                    t->device().str(), " ", shape_str(t->shape()));
    }
  }
}

void missing_kernel(const char* name, Device d) {
  TESSERA_FAIL("kernel ", name, " is not implemented on ", d.str());
}

}  // namespace tessera
