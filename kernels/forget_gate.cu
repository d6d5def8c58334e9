// CUDA Forgetting Attention gate: the twin of src/backend/cpu/forget_gate.cpp (the contract is the
// kernel table's, backend/kernels.h; the formulas are the CPU file's).
//
// One block of kLanes threads a (b, h) row of T positions: each thread sums log sigmoid over its
// own run of ceil(T / kLanes) consecutive positions, thread 0 turns the kLanes run totals into
// their exclusive prefix sums (in order, in double), and each thread then rescans its run from its
// prefix. The backward runs the same scan from the end (suffix sums of dc). Every sum is double;
// the CPU sums one position at a time in one chain, so the two differ by the rounding of a double
// sum (far below an f32 ulp of the result), and each repeats its own bits on every run.
#include <cmath>
#include <cstdint>

#include "backend/kernels.h"
#include "common.cuh"
#include "core.cuh"

namespace tessera::cuda {
namespace {

using core::ld;
using core::st;

constexpr int kLanes = 32;

__device__ __forceinline__ double log_sigmoid(double x) {
  return fmin(x, 0.0) - log1p(exp(-fabs(x)));
}
__device__ __forceinline__ double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

// The block's (b, h) row, bh = b H + h, and the thread's run of positions [t0, t1) in it.
struct Run {
  int64_t bh, b, h, t0, t1;
};
__device__ Run run_of(int64_t T, int64_t H) {
  const int64_t bh = blockIdx.x, run = (T + kLanes - 1) / kLanes, t0 = int64_t(threadIdx.x) * run;
  return {bh, bh / H, bh % H, t0, t0 + run < T ? t0 + run : T};
}

// Each thread's run total in, the sum of `first` and the totals of the runs before its own out
// (after it when `reverse`), added up by thread 0 in order; total: the block's kLanes doubles.
__device__ double runs_before(double* total, double own, double first, bool reverse) {
  const int lane = int(threadIdx.x);
  total[lane] = own;
  __syncthreads();
  if (lane == 0) {
    double sum = first;
    for (int n = 0; n < kLanes; ++n) {
      const int i = reverse ? kLanes - 1 - n : n;
      const double run = total[i];
      total[i] = sum;
      sum += run;
    }
  }
  __syncthreads();
  return total[lane];
}

// Row bh = b H + h: c[bh, t] = start[bh] + sum_{s <= t} log sigmoid(g[b, s, h]).
template <typename G>
__global__ void forget_gate_forward_kernel(float* c, const G* g, const float* start, int64_t T,
                                           int64_t H) {
  __shared__ double total[kLanes];
  const Run r = run_of(T, H);
  double sum = 0;
  for (int64_t t = r.t0; t < r.t1; ++t) sum += log_sigmoid(ld(g, (r.b * T + t) * H + r.h));
  sum = runs_before(total, sum, start ? double(start[r.bh]) : 0.0, false);
  for (int64_t t = r.t0; t < r.t1; ++t) {
    sum += log_sigmoid(ld(g, (r.b * T + t) * H + r.h));
    c[r.bh * T + t] = float(sum);
  }
}

// dg[b, t, h] = sigmoid(-g[b, t, h]) sum_{s >= t} dc[bh, s].
template <typename G>
__global__ void forget_gate_backward_kernel(G* dg, const float* dc, const G* g, int64_t T,
                                            int64_t H) {
  __shared__ double total[kLanes];
  const Run r = run_of(T, H);
  double sum = 0;
  for (int64_t t = r.t0; t < r.t1; ++t) sum += double(dc[r.bh * T + t]);
  sum = runs_before(total, sum, 0.0, true);
  for (int64_t t = r.t1 - 1; t >= r.t0; --t) {
    sum += double(dc[r.bh * T + t]);
    const int64_t i = (r.b * T + t) * H + r.h;
    st(dg, i, float(sigmoid(-double(ld(g, i))) * sum));
  }
}

void check_sums(const char* kernel, const char* name, const Tensor& t, const Shape& shape,
                const Tensor& g) {
  TESSERA_CHECK(t.defined() && t.shape() == shape && t.dtype() == DType::F32 && t.is_contiguous() &&
                    t.device() == g.device(),
                "cuda kernel ", kernel, ": ", name, " must be a contiguous f32 ", shape_str(shape),
                " on ", g.device().str(), ", got ",
                t.defined() ? t.str() : std::string("undefined"));
}

void forget_gate_forward(const Tensor& c, const Tensor& g, const Tensor& start) {
  const char* name = "forget_gate_forward";
  TESSERA_CHECK(g.dim() == 3, "cuda kernel ", name, ": g must be (B, T, H), got ", g.str());
  core::check_args(name, g.dtype(), {{"g", g}});
  const int64_t B = g.size(0), T = g.size(1), H = g.size(2);
  check_sums(name, "c", c, {B, H, T}, g);
  if (start.defined()) check_sums(name, "start", start, {B, H}, g);
  if (B * H * T == 0) return;
  DeviceGuard guard(g.device().index);
  core::dispatch(name, g.dtype(), [&](auto z) {
    using G = decltype(z);
    forget_gate_forward_kernel<G><<<unsigned(B * H), kLanes>>>(
        static_cast<float*>(c.data_ptr()), static_cast<const G*>(g.data_ptr()),
        start.defined() ? static_cast<const float*>(start.data_ptr()) : nullptr, T, H);
    CUDA_CHECK_LAUNCH();
  });
}

void forget_gate_backward(const Tensor& dg, const Tensor& dc, const Tensor& g) {
  const char* name = "forget_gate_backward";
  TESSERA_CHECK(g.dim() == 3, "cuda kernel ", name, ": g must be (B, T, H), got ", g.str());
  core::check_args(name, g.dtype(), {{"g", g}, {"dg", dg}});
  TESSERA_CHECK(dg.shape() == g.shape(), "cuda kernel ", name, ": dg ", dg.str(), " for g ",
                g.str());
  const int64_t B = g.size(0), T = g.size(1), H = g.size(2);
  check_sums(name, "dc", dc, {B, H, T}, g);
  if (B * H * T == 0) return;
  DeviceGuard guard(g.device().index);
  core::dispatch(name, g.dtype(), [&](auto z) {
    using G = decltype(z);
    forget_gate_backward_kernel<G><<<unsigned(B * H), kLanes>>>(
        static_cast<G*>(dg.data_ptr()), static_cast<const float*>(dc.data_ptr()),
        static_cast<const G*>(g.data_ptr()), T, H);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void add_forget_gate_kernels(Kernels& k) {
  k.forget_gate_forward = forget_gate_forward;
  k.forget_gate_backward = forget_gate_backward;
}

}  // namespace tessera::cuda
