// CPU reference kernels: the entries of the kernel table (src/backend/kernels.h) for the CPU.
// Floating kernels run in f32 or f64 (f64 so gradient checks can run them in double precision).
// bf16 is a storage type here: a bf16 tensor reaching a CPU compute kernel is an error that says so
// (convert with .to(DType::F32)); bf16 compute is the CUDA backend's. Loops over rows use OpenMP;
// gemm is OpenBLAS sgemm/dgemm. One file per op family, named like the op file in src/ops/.
#pragma once

#include <cstdint>

#include "backend/kernels.h"

namespace tessera::cpu {

// Calls f(T{}) with T = float or double for t; any other dtype is an error naming the kernel.
template <typename F>
void dispatch_float(const char* kernel, DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); break;
    case DType::F64: f(double{}); break;
    default:
      TESSERA_FAIL("cpu kernel ", kernel, ": dtype ", dtype_name(t),
                   " is not supported (the CPU backend computes in f32 or f64)");
  }
}

inline int64_t rows_of(const Tensor& x) { return x.dim() ? x.numel() / x.size(-1) : 1; }
inline int64_t cols_of(const Tensor& x) { return x.dim() ? x.size(-1) : 1; }

// memory.cpp
void copy(const Tensor& dst, const Tensor& src);
void fill(const Tensor& dst, double value);
void arange(const Tensor& dst, double start, double step);
void uniform(const Tensor& dst, uint64_t seed, uint64_t offset);
void normal(const Tensor& dst, uint64_t seed, uint64_t offset);
// matmul.cpp
void gemm(const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b,
          double alpha, double beta);
void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& bias,
                    const Tensor& residual);
void linear_dgelu_backward(const Tensor& dpre, const Tensor& dy, const Tensor& w,
                           const Tensor& pre);
void linear_gelu_forward(const Tensor& y, const Tensor& pre, const Tensor& x, const Tensor& w,
                         const Tensor& bias);
void linear_param_backward(const Tensor& dw, const Tensor& db, const Tensor& dy, const Tensor& x,
                           bool accumulate_w, bool accumulate_b);
// elementwise.cpp
void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b);
void axpby(const Tensor& out, double alpha, const Tensor& x, double beta, const Tensor& y);
void sum_dim(const Tensor& out, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
             bool accumulate);
void expand_dim(const Tensor& out, const Tensor& x, int64_t outer, int64_t n, int64_t inner);
// embedding.cpp
void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& ids);
void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids);
// norm.cpp
void layernorm_forward(const Tensor& y, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                       const Tensor& w, const Tensor& b, double eps);
void layernorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                        const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                        NormAccumulate acc);
void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w,
                     double eps);
void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                      const Tensor& w, const Tensor& rstd, NormAccumulate acc);
// activation.cpp
void gelu_forward(const Tensor& y, const Tensor& x);
void gelu_backward(const Tensor& dx, const Tensor& dy, const Tensor& x);
void silu_forward(const Tensor& y, const Tensor& x);
void silu_backward(const Tensor& dx, const Tensor& dy, const Tensor& x);
void swiglu_forward(const Tensor& y, const Tensor& gate, const Tensor& up);
void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dy, const Tensor& gate,
                     const Tensor& up);
void dropout(const Tensor& y, const Tensor& x, double p, uint64_t seed, uint64_t offset);
// softmax.cpp
void softmax_forward(const Tensor& y, const Tensor& x);
void softmax_backward(const Tensor& dx, const Tensor& dy, const Tensor& y);
void log_softmax_forward(const Tensor& y, const Tensor& x);
void log_softmax_backward(const Tensor& dx, const Tensor& dy, const Tensor& y);
void cross_entropy_forward(const Tensor& losses, const Tensor& lse, const Tensor& logits,
                           const Tensor& targets, int64_t ignore_index, int64_t classes);
void cross_entropy_backward(const Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                            const Tensor& lse, const Tensor& targets, int64_t ignore_index,
                            int64_t classes);
void cross_entropy_fused(const Tensor& losses, const Tensor& lse, const Tensor& dlogits,
                         const Tensor& dlosses, const Tensor& logits, const Tensor& targets,
                         int64_t ignore_index, int64_t classes);
void cross_entropy_rescale(const Tensor& dlogits, const Tensor& dy, double expected);
// forget_gate.cpp
void forget_gate_forward(const Tensor& c, const Tensor& g, const Tensor& start);
void forget_gate_backward(const Tensor& dg, const Tensor& dc, const Tensor& g);

// rope.cpp
void rope(const Tensor& y, const Tensor& x, const std::vector<double>& inv_freq, double scale,
          int64_t pos_offset, bool inverse);
// attention.cpp
void attention_forward(const Tensor& out, const Tensor& probs, const Tensor& q, const Tensor& k,
                       const Tensor& v, double scale);
void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                        const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
                        double scale);
// optim.cpp
void adamw_step(const Tensor& param, const Tensor& master, const Tensor& m, const Tensor& v,
                const Tensor& grad, double lr, double beta1, double beta2, double eps,
                double weight_decay, double bias_correction1, double bias_correction2);
void adamw_step_flat(const Tensor& param, const Tensor& master, const Tensor& m, const Tensor& v,
                     const Tensor& grad, const Tensor& decay_ranges, double lr, double beta1,
                     double beta2, double eps, double weight_decay, double bias_correction1,
                     double bias_correction2, double grad_scale);
void sum_squares(const Tensor& out, const Tensor& x);
void lomo_grad_sum_squares(const Tensor& out, const Tensor& grad, double loss_scale);
void lomo_step(const Tensor& param, const Tensor& master, const Tensor& grad, const LomoGrad& g,
               double lr, double decay);
void adalomo_step(const Tensor& param, const Tensor& master, const Tensor& grad, const Tensor& row,
                  const Tensor& col, const Tensor& v, const LomoGrad& g, double beta2, double lr,
                  double weight_decay);
// nf4.cpp
void nf4_dequantize(const Tensor& out, const Tensor& codes, const Tensor& absmax);
void nf4_matmul(const Tensor& c, const Tensor& a, const Tensor& codes, const Tensor& absmax,
                int64_t rows, int64_t cols, bool trans_w);
void nf4_absmax_dequantize(const Tensor& absmax, const Tensor& qabsmax, const Tensor& scales,
                           double mean);
// attention.cpp (flash-style entries, same math as the materialised ones above)
void flash_attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                             const Tensor& v, double scale, const AttentionMask& mask);
void flash_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                              const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& out, const Tensor& lse, double scale,
                              const AttentionMask& mask);
// stick_breaking.cpp
void stick_breaking_forward(const Tensor& out, const Tensor& log_rem, const Tensor& rem,
                            const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                            bool attend_current, bool add_remainder);
void stick_breaking_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                             const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& out, const Tensor& log_rem, double scale,
                             bool attend_current, bool add_remainder);

}  // namespace tessera::cpu
