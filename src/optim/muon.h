// Muon: momentum whose update is orthogonalised before it is applied, for the 2-D weights inside
// the blocks (attention and MLP projections); the embeddings, the head and every vector keep AdamW
// (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"; the algorithm
// of torch.optim.Muon). optim/flat_adamw.h runs both over one flat buffer:
//
//   B = momentum B + g;  U = nesterov ? g + momentum B : B;
//   O = newton_schulz(U, |U|_F)              // ~ the orthogonal factor U V^T of U = U S V^T
//   W = (1 - lr weight_decay) W - lr ratio(rows, cols) O
//
// ratio: Moonshot's 0.2 sqrt(max(rows, cols)) (Liu et al. 2025, "Muon is Scalable for LLM
// Training", arXiv:2502.16982), which gives the update about AdamW's RMS, so optim.lr and
// optim.weight_decay tuned for AdamW carry over; or Jordan's sqrt(max(1, rows / cols)), for an
// lr of its own (~0.02).
//
// Newton-Schulz: k quintic iterations X <- a X + (b A + c A^2) X with A = X X^T, from
// X = U / max(|U|_F, eps) (singular values at most 1); the coefficients (3.4445, -4.7750, 2.0315)
// push every singular value into about [0.7, 1.2] in 5 iterations. A tall matrix iterates
// X <- a X + X (b A + c A^2) with A = X^T X, the same polynomial (X p(X^T X) = p(X X^T) X) on the
// smaller Gram matrix. The arithmetic is the update's dtype (f32; f64 in tests) on every device,
// through the kernel table's gemm and axpby.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tessera {

struct MuonOptions {
  double momentum = 0.95;
  bool nesterov = true;
  int64_t ns_steps = 5;
  double a = 3.4445, b = -4.7750, c = 2.0315;  // Jordan et al.'s quintic coefficients
  double eps = 1e-7;
  std::string adjust = "match_rms_adamw";  // match_rms_adamw | original
};

// Throws, naming the option, unless momentum is in [0, 1), ns_steps >= 0 and adjust is known.
void check(const MuonOptions& o);

// The factor the learning rate is multiplied by for a (rows, cols) matrix (see above).
double muon_lr_ratio(const MuonOptions& o, int64_t rows, int64_t cols);

// Newton-Schulz's flops for a (rows, cols) matrix, an iteration: 4 k^2 m + 2 k^3 with k the shorter
// side and m the longer (X X^T, A A, B X).
double newton_schulz_flops(int64_t rows, int64_t cols);

// Which of `world` ranks orthogonalises each matrix under data parallelism (optim/flat_adamw.h),
// given each one's Newton-Schulz flops: the largest first, each to the rank with the least work so
// far (the lowest rank on a tie; Graham's longest-processing-time rule, within 4/3 of the best
// split). Depends on its arguments alone, so every rank computes the same owners.
std::vector<int> muon_owners(const std::vector<double>& flops, int world);

// The orthogonalised x (rows, cols), contiguous, f32 or f64, as a new tensor of its shape, dtype
// and device; norm is x's Frobenius norm, which the caller computes (several matrices' at once: one
// transfer from a GPU).
Tensor newton_schulz(const Tensor& x, double norm, const MuonOptions& o);

}  // namespace tessera
