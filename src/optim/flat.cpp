// FlatParams: the layout (reverse order of use, buckets, padding) and the re-pointing of each
// parameter into the value buffer. See flat.h.
#include "optim/flat.h"

#include <algorithm>
#include <unordered_set>

#include "autograd/autograd.h"
#include "core/env.h"

namespace tessera {
namespace {

DType grad_dtype(DType param) { return param == DType::F64 ? DType::F64 : DType::F32; }

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// TESSERA_ZERO_GRAD=fill: zero_grad writes the whole buffer's zeros, as it did before gradients
// were attached unfilled (a check, on a GPU, that those lazy zeros are not what goes wrong);
// "lazy" or unset: the default. Read at each zero_grad.
bool fill_on_zero_grad() { return env_switch("TESSERA_ZERO_GRAD", "lazy", "fill"); }

}  // namespace

FlatParams::FlatParams(std::vector<NamedParam> params, FlatOptions options)
    : params_(std::move(params)) {
  TESSERA_CHECK(!params_.empty(), "FlatParams: no parameters");
  TESSERA_CHECK(options.pad >= 1, "FlatParams: pad must be >= 1, got ", options.pad);
  TESSERA_CHECK(options.bucket_bytes > 0 && options.first_bucket_bytes > 0,
                "FlatParams: bucket sizes must be positive (dist.bucket_mb)");
  const Tensor& first = params_.front().param;
  const DType dtype = first.dtype();
  const Device device = first.device();
  TESSERA_CHECK(dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F64,
                "FlatParams: parameter '", params_.front().name, "' is ", dtype_name(dtype),
                " (expected f32, bf16 or f64)");
  const int64_t gsize = int64_t(dtype_size(grad_dtype(dtype)));

  // Buffer order: the model's order reversed. Buckets close at parameter boundaries once they
  // reach their size.
  std::unordered_set<const TensorImpl*> seen;
  int64_t offset = 0, bucket_start = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& [name, p] = params_[k];
    TESSERA_CHECK(p.defined() && p.requires_grad() && p.is_leaf(), "FlatParams: '", name,
                  "' is not a leaf that requires a gradient");
    TESSERA_CHECK(p.dtype() == dtype && p.device() == device, "FlatParams: parameter '", name,
                  "' is ", p.str(), " but '", params_.front().name, "' is ", first.str(),
                  "; every parameter must share one dtype and device");
    TESSERA_CHECK(seen.insert(&p.impl()).second, "FlatParams: parameter '", name,
                  "' is listed twice");
    if (buckets_.empty()) buckets_.push_back({});
    const int64_t limit = buckets_.size() == 1 ? options.first_bucket_bytes : options.bucket_bytes;
    if (!buckets_.back().slots.empty() && (offset - bucket_start) * gsize >= limit) {
      buckets_.back().range = {bucket_start, round_up(offset, options.pad)};
      offset = bucket_start = buckets_.back().range.end;
      buckets_.push_back({});
    }
    Slot s{name, p, offset, p.numel(), p.dim() >= 2, buckets_.size() - 1};
    buckets_.back().slots.push_back(slots_.size());
    slots_.push_back(std::move(s));
    offset += p.numel();
  }
  buckets_.back().range = {bucket_start, round_up(offset, options.pad)};
  const int64_t total = buckets_.back().range.end;

  NoGradGuard no_grad;
  values_ = zeros({total}, {dtype, device});
  // Zeros once: the padding between buckets is never written after this (see zero_grad).
  grads_ = zeros({total}, {grad_dtype(dtype), device});
  for (const Slot& s : slots_) {
    Tensor dst = make_view(values_, {s.numel}, {1}, values_.offset() + s.offset);
    dst.copy_(s.param.detach().reshape({s.numel}));
    TensorImpl& impl = s.param.impl();
    impl.storage = values_.storage();
    impl.offset = values_.offset() + s.offset;
    impl.strides = contiguous_strides(impl.shape);
  }
  zero_grad();
}

void FlatParams::zero_grad() {
  const bool fill = fill_on_zero_grad();
  bool zeros = true;
  for (const Slot& s : slots_) zeros = zeros && attached(s) && grad_holds_zeros(s.param);
  if (zeros) {
    if (fill) grads();  // zeros attached unfilled before the switch: written now
    return;
  }
  if (fill) grads_.fill_(0.0);
  for (const Slot& s : slots_) {
    const Shape& shape = s.param.shape();
    attach_grad(s.param,
                make_view(grads_, shape, contiguous_strides(shape), grads_.offset() + s.offset),
                /*zero=*/true, /*filled=*/fill);
  }
}

const Tensor& FlatParams::grads() const {
  for (const Slot& s : slots_) fill_pending_grad(s.param);
  return grads_;
}

Tensor FlatParams::grads(FlatRange r) const {
  TESSERA_CHECK(r.begin >= 0 && r.begin <= r.end && r.end <= numel(), "FlatParams: range [",
                r.begin, ", ", r.end, ") outside the ", numel(), " elements of the buffer");
  for (const Slot& s : slots_)
    if (s.offset < r.end && r.begin < s.offset + s.numel) fill_pending_grad(s.param);
  return make_view(grads_, {r.size()}, {1}, grads_.offset() + r.begin);
}

bool FlatParams::attached(const Slot& s) const {
  // The meta's tensor, not Tensor::grad(), which would write a pending gradient's zeros.
  const auto& meta = s.param.impl().autograd;
  if (!meta) return false;
  const Tensor& g = meta->grad;
  return g.defined() && g.storage() == grads_.storage() && g.offset() == grads_.offset() + s.offset;
}

void FlatParams::check_attached() const {
  for (const Slot& s : slots_) {
    TESSERA_CHECK(attached(s),
                  "FlatParams: the gradient of '", s.name, "' is not in the flat buffer any more "
                  "(Tensor::zero_grad() on it? use the optimizer's zero_grad())");
  }
}

Tensor FlatParams::decay_ranges(FlatRange r) const {
  TESSERA_CHECK(r.size() < (int64_t(1) << 31), "FlatParams: a flat range of ", r.size(),
                " elements is too long for the adamw_step_flat kernel's i32 offsets (FlatAdamW "
                "splits its ranges below that)");
  std::vector<int32_t> out;
  for (const Slot& s : slots_) {
    if (!s.decay) continue;
    const int64_t b = std::max(r.begin, s.offset), e = std::min(r.end, s.offset + s.numel);
    if (b >= e) continue;
    const auto lo = int32_t(b - r.begin), hi = int32_t(e - r.begin);
    if (!out.empty() && out.back() == lo)
      out.back() = hi;  // adjacent decayed parameters: one range
    else
      out.insert(out.end(), {lo, hi});
  }
  return from_vector(out, {int64_t(out.size())}, {DType::I32, device()});
}

}  // namespace tessera
