// The CUDA emulator's gemms: the CPU backend's, which read the emulated device memory (host memory)
// directly. The CPU computes in f32 or f64, so a bf16 gemm runs in f32 on f32 copies and rounds its
// result to bf16 once, as cuBLAS's bf16 gemms (f32 compute) do. cuBLAS(Lt) itself is not emulated:
// kernels/blas.cu (its plans, epilogues and fallbacks) runs only on a GPU, and under the emulator
// the GPU gemm tests compare the CPU with itself.
#include "backend/kernels.h"
#include "core/tensor.h"

namespace tessera::cuda {
namespace {

// The f32 copy of a bf16 argument (undefined stays undefined); other dtypes as they are.
Tensor f32(const Tensor& t) {
  return t.defined() && t.dtype() == DType::BF16 ? t.to(DType::F32) : t;
}

// Runs f on f32 copies of bf16 outputs, then rounds them back into the outputs.
template <class F>
void in_f32(std::initializer_list<Tensor> outs, F&& f) {
  std::vector<Tensor> work;
  for (const Tensor& t : outs) work.push_back(f32(t));
  f(work);
  size_t i = 0;
  for (const Tensor& t : outs) {
    if (t.dtype() == DType::BF16) Tensor(t).copy_(work[i]);  // a handle to the same storage
    ++i;
  }
}

void gemm(const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b,
          double alpha, double beta) {
  in_f32({c}, [&](const std::vector<Tensor>& o) {
    cpu::kernels().gemm(o[0], f32(a), f32(b), trans_a, trans_b, alpha, beta);
  });
}

void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& bias) {
  in_f32({y}, [&](const std::vector<Tensor>& o) {
    cpu::kernels().linear_forward(o[0], f32(x), f32(w), f32(bias));
  });
}

void linear_gelu_forward(const Tensor& y, const Tensor& pre, const Tensor& x, const Tensor& w,
                         const Tensor& bias) {
  in_f32({y, pre}, [&](const std::vector<Tensor>& o) {
    cpu::kernels().linear_gelu_forward(o[0], o[1], f32(x), f32(w), f32(bias));
  });
}

}  // namespace

void add_blas_kernels(Kernels& k) {
  k.gemm = gemm;
  k.linear_forward = linear_forward;
  k.linear_gelu_forward = linear_gelu_forward;
}

}  // namespace tessera::cuda
