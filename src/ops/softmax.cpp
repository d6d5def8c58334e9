// softmax, log_softmax and cross_entropy over the last dimension. Gradients:
//   softmax:       dx = y * (dy - sum(dy * y))
//   log_softmax:   dx = dy - exp(y) * sum(dy)
//   cross_entropy: dlogits[n] = dy / n_valid * (softmax(logits[n]) - onehot(t[n])),
//                  0 on ignored rows
//   token_losses:  dlogits[n] = dy[n] * (softmax(logits[n]) - onehot(t[n])), the same kernels
// The two softmaxes save their output, which is all their backward needs. cross_entropy saves the
// logits and one lse per row, never the (N, V) probabilities: with V = 50257 those would be the
// largest activation of a GPT. Its backward writes dlogits over the saved logits when it runs for
// the last time and nothing else holds their memory (a GPT's loss: the logits are a temporary of
// the forward), so the step's largest tensor is not allocated twice; each element is read before
// it is overwritten (llm.c's fused classifier reuses the logits buffer the same way). Given the
// dy its caller will send (fused_dy), it goes one step further, as llm.c's classifier does: the
// forward writes the gradient over the logits in the pass that computes the loss, and the
// backward has nothing left to read but dy.
#include "ops/softmax.h"

#include <memory>
#include <vector>

#include "ops/util.h"

namespace tessera::ops {

Tensor softmax(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), x.options());
  TESSERA_KERNEL(x, softmax_forward)(y, detail::dense(x));
  Tensor Y = y.detach();  // an alias without history: capturing y itself would make a cycle
  return record("softmax", y, {x}, [Y](const Tensor& dy, GradSink& g) {
    Tensor dx = Tensor::empty(Y.shape(), Y.options());
    TESSERA_KERNEL(dy, softmax_backward)(dx, dy, Y);
    g.add(0, dx);
  });
}

Tensor log_softmax(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), x.options());
  TESSERA_KERNEL(x, log_softmax_forward)(y, detail::dense(x));
  Tensor Y = y.detach();
  return record("log_softmax", y, {x}, [Y](const Tensor& dy, GradSink& g) {
    Tensor dx = Tensor::empty(Y.shape(), Y.options());
    TESSERA_KERNEL(dy, log_softmax_backward)(dx, dy, Y);
    g.add(0, dx);
  });
}

namespace {

// What cross_entropy and token_losses share: their arguments checked (named by op), the targets
// as the host sees them, and the row count, class count and valid rows.
struct Checked {
  std::vector<int32_t> host;
  int64_t N, V, C, n_valid;
};

Checked check_targets(const char* op, const Tensor& logits, const Tensor& targets,
                      int64_t ignore_index, const Tensor& host_targets, int64_t classes) {
  TESSERA_CHECK(logits.dim() >= 1 && is_floating(logits.dtype()), op,
                ": logits must be a floating tensor (..., V), got ", logits.str());
  TESSERA_CHECK(targets.dtype() == DType::I32, op, ": targets must be i32, got ", targets.str());
  const Shape lead(logits.shape().begin(), logits.shape().end() - 1);
  TESSERA_CHECK(targets.shape() == lead, op, ": targets ", shape_str(targets.shape()),
                " do not match logits ", shape_str(logits.shape()), " (expected targets ",
                shape_str(lead), ")");
  check_same_device(op, {&logits, &targets});
  Checked c{{}, targets.numel(), logits.size(-1), 0, 0};
  TESSERA_CHECK(c.V > 0, op, ": logits ", shape_str(logits.shape()), " have no classes");
  TESSERA_CHECK(classes >= 0 && classes <= c.V, op, ": classes ", classes, " must be in [0, ", c.V,
                "] for logits ", shape_str(logits.shape()));
  c.C = classes > 0 ? classes : c.V;
  // Validated on the host so a bad target is a clear error here rather than an out-of-bounds read
  // in a device kernel.
  c.host = detail::host_indices(op, "targets", targets, host_targets);
  for (int64_t n = 0; n < c.N; ++n) {
    const int32_t t = c.host[size_t(n)];
    if (t == ignore_index) continue;
    TESSERA_CHECK(t >= 0 && t < c.C, op, ": target ", t, " at position ", n, " (of targets ",
                  shape_str(targets.shape()), ", flattened) is outside [0, ", c.C,
                  ") and is not ignore_index ", ignore_index);
    ++c.n_valid;
  }
  return c;
}

// bf16 logits: per-row losses, lse and the mean loss are f32 (the mixed-precision policy: the
// loss is reported and differentiated in f32); otherwise the logits' dtype.
Options stat_options(const Tensor& logits) {
  return logits.dtype() == DType::BF16 ? Options(DType::F32, logits.device()) : logits.options();
}

}  // namespace

Tensor token_losses(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                    const Tensor& host_targets, int64_t classes) {
  const Checked c =
      check_targets("token_losses", logits, targets, ignore_index, host_targets, classes);
  const Tensor L = detail::dense(logits).view({c.N, c.V});
  const Tensor T = detail::dense(targets).view({c.N});
  const Options stat = stat_options(logits);
  Tensor losses = Tensor::empty({c.N}, stat);
  Tensor lse = Tensor::empty({c.N}, stat);
  TESSERA_KERNEL(L, cross_entropy_forward)(losses, lse, L, T, ignore_index, c.C);
  const Shape logits_shape = logits.shape();
  return record(
      "token_losses", losses.view(targets.shape()), {logits},
      [L, T, lse, stat, ignore_index, C = c.C, logits_shape](const Tensor& dy, GradSink& g) {
        const Tensor dl =
            (dy.dtype() == stat.dtype ? detail::dense(dy) : dy.to(stat.dtype)).view({L.size(0)});
        Tensor dlogits = Tensor::empty(L.shape(), L.options());
        TESSERA_KERNEL(L, cross_entropy_backward)(dlogits, dl, L, lse, T, ignore_index, C);
        g.add(0, dlogits.view(logits_shape));
      });
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     const Tensor& host_targets, int64_t classes, double fused_dy) {
  const Checked c =
      check_targets("cross_entropy", logits, targets, ignore_index, host_targets, classes);
  const int64_t N = c.N, V = c.V, C = c.C, n_valid = c.n_valid;
  const std::vector<int32_t>& host = c.host;

  Tensor L = detail::dense(logits).view({N, V});
  Tensor T = detail::dense(targets).view({N});
  const Options stat = stat_options(logits);
  Tensor losses = Tensor::empty({N}, stat);
  Tensor lse = Tensor::empty({N}, stat);
  Tensor loss = Tensor::empty({}, stat);
  // The mean over valid rows only; with none, every loss is 0 and so is the result.
  const double inv = n_valid ? 1.0 / double(n_valid) : 0.0;
  // Each row's share of the mean: 1 / n_valid, 0 on ignored rows; sent to the device now, while
  // the host already holds the targets, so the backward neither reads dy back nor waits.
  std::vector<double> share(size_t(N), 0.0);
  for (int64_t n = 0; n < N; ++n)
    if (host[size_t(n)] != ignore_index) share[size_t(n)] = inv;
  Tensor weights = from_vector<double>(share, {N, 1}, stat);
  // dlosses[n] = weights[n] * dy: dy (one element) the broadcast row.
  auto dlosses_for = [weights](const Tensor& dy) {
    Tensor dlosses = Tensor::empty(weights.shape(), weights.options());
    TESSERA_KERNEL(weights, binary)(BinaryOp::Mul, dlosses, weights, dy.view({1}));
    return dlosses;
  };
  auto as_stat = [stat](const Tensor& dy) {
    return dy.dtype() == stat.dtype ? detail::dense(dy) : dy.to(stat.dtype);
  };
  const Shape logits_shape = logits.shape();

  // The fused classifier: the logits are the caller's to give up (L and the caller's handle are
  // all that hold their memory) and their gradient is wanted.
  const bool fused = fused_dy > 0 && grad_enabled() && logits.requires_grad() &&
                     !logits.is_leaf() && L.storage().use_count() <= 2;
  if (fused) {
    const Tensor dl = dlosses_for(full({1}, fused_dy, stat)).view({N});
    const Tensor& dlogits = L;  // written over the logits
    TESSERA_KERNEL(L, cross_entropy_fused)(losses, lse, dlogits, dl, L, T, ignore_index, C);
  } else {
    TESSERA_KERNEL(L, cross_entropy_forward)(losses, lse, L, T, ignore_index, C);
  }
  TESSERA_KERNEL(L, sum_dim)(loss, losses, 1, N, 1, false);
  TESSERA_KERNEL(L, axpby)(loss, inv, loss, 0.0, Tensor());

  if (fused)
    return record("cross_entropy", loss, {logits},
                  [L, fused_dy, as_stat, logits_shape](const Tensor& dy, GradSink& g) {
                    // L holds the gradient for dy = fused_dy. Run again later (a retained
                    // graph), the closure must find it unchanged: then scaled in a copy.
                    const Tensor dlogits = g.last_run() ? L : L.clone();
                    TESSERA_KERNEL(L, cross_entropy_rescale)(dlogits, as_stat(dy), fused_dy);
                    g.add(0, dlogits.view(logits_shape));
                  });
  return record("cross_entropy", loss, {logits},
                [L, T, lse, dlosses_for, as_stat, ignore_index, C, logits_shape](const Tensor& dy,
                                                                                 GradSink& g) {
                  const Tensor dlosses = dlosses_for(as_stat(dy));
                  // In place when the saved logits' memory is ours alone and this closure is
                  // released after it runs; otherwise someone may read the logits later.
                  const bool in_place = g.last_run() && L.storage().use_count() == 1;
                  Tensor dlogits = in_place ? L : Tensor::empty(L.shape(), L.options());
                  TESSERA_KERNEL(L, cross_entropy_backward)(dlogits, dlosses.view({L.size(0)}), L,
                                                            lse, T, ignore_index, C);
                  g.add(0, dlogits.view(logits_shape));
                });
}

}  // namespace tessera::ops
