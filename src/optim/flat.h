// Flat parameter and gradient buffers: every trainable parameter and its gradient are views into
// two 1-D allocations, laid out in reverse order of use and cut into buckets, so that a
// data-parallel all-reduce, a ZeRO shard and a multi-tensor optimizer step are each a slice of
// one buffer.
//
//   FlatParams flat(named_params(model.parameters()), {.bucket_bytes = 25 << 20, .pad = world});
//   loss.backward();                       // gradients accumulate into flat.grads() in place
//   comm.all_reduce(flat.grads(), ReduceOp::Average);
//   flat.zero_grad();                      // zero again; the views stay attached
//
// Layout. Parameters arrive in the model's order (order of use in the forward); the buffer holds
// them reversed, so the gradients that backward finishes first sit at the front and the buckets
// become ready front to back. A bucket is a run of whole parameters of about bucket_bytes of
// gradient (the first one is first_bucket_bytes: it is ready soonest, so communication starts
// early, as PyTorch DDP does); each bucket is padded with zeros to a multiple of `pad` elements
// (the world size), so it splits into equal ZeRO shards (dist::shard_range) and NCCL can run its
// collectives in place. Padding elements belong to no parameter: their gradient and value stay 0.
//
// Dtypes. The parameter buffer has the parameters' dtype; the gradient buffer is f32 for f32 and
// bf16 parameters (a bf16 model accumulates its micro-batches in f32: 32 additions in bf16 would
// each round to 8 bits) and f64 for f64 parameters (tests). All parameters must share one dtype
// and device: a model is placed as a whole (train/device.h).
//
// Construction moves each parameter's values into the buffer and re-points the parameter (its
// TensorImpl, shared by every handle) at its slice: handles held elsewhere stay valid, aliases
// made with detach() before construction do not (build optimizers after FlatParams).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "optim/param.h"

namespace tessera {

struct FlatOptions {
  int64_t bucket_bytes = int64_t(25) << 20;      // dist.bucket_mb
  int64_t first_bucket_bytes = int64_t(1) << 20;  // the first bucket, ready soonest
  int64_t pad = 1;                               // each bucket's length is a multiple of it
};

struct FlatRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

class FlatParams {
 public:
  struct Slot {
    std::string name;
    Tensor param;
    int64_t offset = 0;  // into the flat buffers
    int64_t numel = 0;
    bool decay = false;  // AdamW decays matrices and embeddings (dim >= 2) only
    size_t bucket = 0;
  };
  struct Bucket {
    FlatRange range;            // padded to a multiple of FlatOptions::pad
    std::vector<size_t> slots;  // indices into slots()
  };

  FlatParams(std::vector<NamedParam> params, FlatOptions options = {});
  FlatParams(const FlatParams&) = delete;
  FlatParams& operator=(const FlatParams&) = delete;

  const std::vector<Slot>& slots() const { return slots_; }   // in buffer order
  const std::vector<Bucket>& buckets() const { return buckets_; }
  const std::vector<NamedParam>& params() const { return params_; }  // in the model's order
  const Tensor& values() const { return values_; }  // (numel) the parameters' dtype
  // (numel) f32, or f64 for f64 parameters. Every parameter's gradient as its tensor reads, the
  // zeros of those nothing has written since zero_grad filled in first (see zero_grad).
  const Tensor& grads() const;
  // The range r of grads(), filling in only the zeros of the parameters it overlaps (a bucket
  // reduced while backward still writes the others).
  Tensor grads(FlatRange r) const;
  int64_t numel() const { return values_.numel(); }
  Device device() const { return values_.device(); }

  // Makes every gradient zero again and (re)attaches every parameter's gradient view; nothing to
  // do when every view is attached and nothing was added since the last zero_grad (a step's own
  // zero_grad followed by the caller's, as PyTorch loops write it). The buffer is not written: each
  // view is attached unfilled (attach_grad's filled = false), so the first contribution of most
  // parameters (a gemm with beta 0, a norm's kernel) writes it without a zero pass first, and only
  // a gradient that something adds into or reads before any write (a scatter-add, a parameter
  // backward never reached) gets its zeros. On GPT-2 124M that spares the step a 500 MB write.
  // TESSERA_ZERO_GRAD=fill in the environment writes the whole buffer's zeros instead (a check).
  void zero_grad();
  // Throws, naming the parameter, when a gradient no longer lives in the buffer (a
  // Tensor::zero_grad() on the parameter dropped its view: its next gradient went elsewhere).
  void check_attached() const;
  // The decayed sub-ranges of r as an i32 (2K) tensor of sorted [begin, end) offsets relative to
  // r.begin, on the buffers' device: the decay_ranges argument of the adamw_step_flat kernel.
  Tensor decay_ranges(FlatRange r) const;

 private:
  std::vector<NamedParam> params_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  Tensor values_, grads_;

  bool attached(const Slot& s) const;  // s's gradient is its view of grads_
};

}  // namespace tessera
