// Fused attention kernels for the kernel table: flash-style softmax attention
// (flash_attention.cu) and stick-breaking attention (stick_breaking.cu); attention.cuh holds
// what they share.
#include "attention.cuh"

namespace tessera::cuda {

void add_attention_kernels(Kernels& k) {
  k.flash_attention_forward = flash_attention_forward;
  k.flash_attention_backward = flash_attention_backward;
  k.flash_attention_forward_documents = flash_attention_forward_documents;
  k.flash_attention_backward_documents = flash_attention_backward_documents;
  k.stick_breaking_forward = stick_breaking_forward;
  k.stick_breaking_backward = stick_breaking_backward;
  k.stick_breaking_forward_documents = stick_breaking_forward_documents;
  k.stick_breaking_backward_documents = stick_breaking_backward_documents;
}

}  // namespace tessera::cuda
