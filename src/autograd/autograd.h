// Reverse-mode autograd: a tape of nodes, each holding the backward closure of one op.
//
//   Tensor w = randn({4, 3}).requires_grad_();             // leaf parameter
//   register_grad_hook(w, [](Tensor& p) { /* p.grad() is final for this backward */ });
//   Tensor loss = ops::mean(ops::matmul(x, w));
//   loss.backward();                                       // w.grad() += dloss/dw
//   { NoGradGuard ng; Tensor y = ops::gelu(x); }           // nothing recorded
//
// An op computes its output, then calls record(): if grad mode is on and an input requires a
// gradient, a Node is appended to the tape (linked from the output) with a closure that maps the
// output's gradient to its inputs' gradients. Nodes carry a sequence number; backward() runs them in
// reverse sequence order restricted to what the root depends on, which is a reverse topological
// order. Invariants:
//  - leaf (parameter) gradients accumulate: grad += g, across contributions and across backward calls;
//  - an intermediate gradient lives in the engine only until its node has consumed it;
//  - a leaf's grad hooks fire exactly once per backward, when its last contribution has arrived;
//  - backward closures run with grad mode off, and are released after they run (retain_graph=false).
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace tessera {

struct Node;

// The slice [start, start + length) of dimension dim of a gradient (GradSink::add_into).
struct GradRegion {
  int64_t dim = -1;  // -1: the whole tensor
  int64_t start = 0, length = 0;
};

// How a GradSink::add_into contribution meets the gradient it adds into.
struct IntoOptions {
  // The part of acc the contribution writes (dim -1: anywhere). Where the engine knows that part
  // still holds zeros (acc was zero-filled and earlier contributions wrote only disjoint regions of
  // the same dim, as the narrows of one tensor do), zero is true as well.
  GradRegion region{};
  // A second dtype the contribution can add into, taken when the leaf's gradient already has it
  // (bf16 rows scatter-added, or a bf16 weight's gradient gemm written, into the f32 gradient
  // buffer of a bf16 parameter: no bf16 temporary, no conversion); acc.dtype() says which it got.
  std::optional<DType> also{};
  // With zero true the contribution writes every element of acc (a kernel's beta = 0), so the
  // engine may hand it uninitialised memory instead of a zero-filled buffer.
  bool overwrites = false;
};

// One gradient a contribution adds into (GradSink::add_into with several targets).
struct IntoTarget {
  size_t input;
  DType dtype;
  IntoOptions options = {};
};

// The accumulator GradSink::add_into hands a target: acc (undefined when that input takes no
// gradient) and zero (acc holds zeros for this contribution).
struct Into {
  Tensor acc;
  bool zero = false;
};

// Passed to a backward closure: where the gradients for the op's inputs go, by input index.
class GradSink {
 public:
  explicit GradSink(Node& node, bool last_run = false) : node_(node), last_run_(last_run) {}
  bool needs(size_t input) const;               // does input `input` want a gradient?
  // Whether the closure runs for the last time: the graph is not retained, so the closure and
  // what it saved are released when it returns. A saved tensor whose memory nothing else holds
  // may then take the gradient in place (cross_entropy writes dlogits over its logits).
  bool last_run() const { return last_run_; }
  void add(size_t input, const Tensor& grad);   // checks the shape against the input's
  // For a gradient cheaper to add than to build (embedding's scatter-add, narrow's slice):
  // `accumulate(acc, zero)` adds this op's contribution into acc, a dense gradient of the input's
  // shape and of dtype `dtype`: the leaf's own accumulated gradient when it has that dtype, an
  // intermediate's pending gradient when nothing else holds it, else fresh zeros. zero: acc was
  // zero-filled for this contribution (so assigning is adding). Saves a full-size temporary per
  // contribution.
  // accumulate runs after the backward closure returns, before the gradients given to add() are
  // delivered; it may itself add() the op's other gradients (a kernel that computes them with this
  // one: the norms' weight gradients), but not add_into(). IntoOptions: the region written, a
  // second dtype, whether it overwrites.
  void add_into(size_t input, DType dtype, std::function<void(Tensor& acc, bool zero)> accumulate,
                IntoOptions options = {});
  // Several inputs' gradients from one kernel (a norm's backward writes dx, dw and db in one call):
  // `accumulate(into)` gets every target's accumulator at once, in the targets' order, each as the
  // one-target form would hand it (into[i].acc undefined where the input takes no gradient; two
  // targets of one tensor get separate accumulators, the second added after).
  void add_into(std::vector<IntoTarget> targets,
                std::function<void(std::vector<Into>& into)> accumulate);

 private:
  friend class Engine;
  struct Accumulation {
    std::vector<IntoTarget> targets;
    std::function<void(std::vector<Into>&)> fn;
  };
  Node& node_;
  bool last_run_;
  std::vector<std::pair<size_t, Tensor>> grads_;
  std::vector<Accumulation> accumulations_;
};

using BackwardFn = std::function<void(const Tensor& grad_out, GradSink& sink)>;

struct AutogradMeta {
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for a leaf
  Tensor grad;                    // leaves: the accumulated gradient
  bool grad_zero = false;         // leaves: grad holds zeros (attach_grad), nothing added yet
  // leaves, with grad_zero: grad is zero but its memory not yet written (attach_grad's
  // filled = false); filled when first read or added to, never when a contribution overwrites it.
  bool grad_unfilled = false;
  std::vector<std::function<void(Tensor&)>> hooks;  // leaves: gradient-ready hooks
  std::weak_ptr<TensorImpl> owner;                  // the tensor this meta belongs to
  Shape shape;
  DType dtype = DType::F32;
  Device device;
  std::string name;
};

struct Node {
  std::string op;                                     // the op's name, for errors
  uint64_t seq = 0;                                   // tape position (creation order)
  std::vector<std::shared_ptr<AutogradMeta>> inputs;  // null for inputs without gradient
  BackwardFn backward;                                // released after it runs
};

// Records out = op(inputs). Returns out, now carrying the node when any input requires a gradient
// and grad mode is on; otherwise returns out untouched and drops `backward` (and what it captured).
Tensor record(const char* op, const Tensor& out, const std::vector<Tensor>& inputs,
              BackwardFn backward);

bool grad_enabled();

// Turns recording off for its scope (evaluation, optimizer updates, weight init).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// Turns recording on for its scope (recompute runs its forward again inside backward).
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

struct BackwardOptions {
  bool retain_graph = false;  // keep closures (and their saved tensors) for a second backward
};

// Backpropagates from root. grad defaults to ones for a one-element root.
void backward(const Tensor& root, const Tensor& grad = {}, BackwardOptions opt = {});

// Gradient-ready hook of a leaf: called once per backward with the parameter, after its gradient
// has received every contribution of that backward. The hook may read, modify or drop p.grad()
// (data-parallel all-reduce and LOMO's fused update hang here).
using GradHook = std::function<void(Tensor& param)>;
void register_grad_hook(const Tensor& param, GradHook hook);

// Makes grad (the leaf's shape, a floating dtype, the leaf's device; typically a view into a flat
// buffer) the leaf's gradient storage: later contributions accumulate into it in place, in its
// dtype (a bf16 parameter may accumulate into f32). Tensor::zero_grad() detaches it again.
// zero: grad holds zeros now, so the first contribution is copied in (converting its dtype in the
// same pass) instead of added to it. Nothing may write to grad before that contribution.
// filled = false (with zero): grad is zero by definition but its memory is left as it is, and
// written with zeros only if something must read it first: Tensor::grad(), fill_pending_grad, or
// a contribution that adds into it (a scatter-add); one that overwrites it whole (a gemm with
// beta 0, the first contribution of most parameters) writes it without the zero pass. Whoever
// reads the buffer behind grad directly calls fill_pending_grad first (FlatParams::grads).
void attach_grad(const Tensor& param, const Tensor& grad, bool zero = false, bool filled = true);
// Whether param has a gradient attached with zero = true to which nothing has been added since.
bool grad_holds_zeros(const Tensor& param);
// Writes the zeros of a gradient attached with filled = false that nothing has written yet.
void fill_pending_grad(const Tensor& param);

// Activation checkpointing: y = fn(inputs) is computed without keeping fn's intermediate
// activations; backward runs fn again (with the RNG replayed, so dropout masks match) and
// backpropagates through the recomputed graph. Parameters that fn uses without receiving them in
// `inputs` are found during the forward and get their gradients as usual.
using RecomputeFn = std::function<Tensor(const std::vector<Tensor>&)>;
Tensor recompute(const RecomputeFn& fn, const std::vector<Tensor>& inputs);

// For recompute: while a collector is installed, record() reports every leaf that requires a
// gradient it sees, even with grad mode off.
class LeafCollector {
 public:
  LeafCollector();
  ~LeafCollector();
  LeafCollector(const LeafCollector&) = delete;
  LeafCollector& operator=(const LeafCollector&) = delete;
  const std::vector<Tensor>& leaves() const { return leaves_; }
  void see(const Tensor& t);

 private:
  LeafCollector* prev_;
  std::vector<Tensor> leaves_;
};

// Engine internals used by recompute: backward whose leaf gradients are returned in `captured`
// (keyed by meta) instead of accumulated into .grad, and without firing hooks.
void backward_captured(const Tensor& root, const Tensor& grad,
                       std::unordered_map<AutogradMeta*, Tensor>& captured);

}  // namespace tessera
