// The autograd engine: grad mode, record(), and backward() over the tape.
#include <atomic>
#include <queue>
#include <unordered_set>

#include "autograd/autograd.h"
#include "backend/kernels.h"

namespace tessera {
namespace {

thread_local bool g_grad_enabled = true;
thread_local LeafCollector* g_collector = nullptr;
std::atomic<uint64_t> g_seq{0};

// Gradients handed between nodes are contiguous, so every backward closure can pass its grad_out
// straight to a kernel.
Tensor dense(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor c = Tensor::empty(t.shape(), t.options());
  c.copy_(t);
  return c;
}

// A fresh tensor a + b (never in place: a may be shared with another consumer).
Tensor add_fresh(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), a.options());
  Tensor bb = b.dtype() == a.dtype() ? dense(b) : b.detach().to(a.dtype());
  TESSERA_KERNEL(out, axpby)(out, 1.0, dense(a), 1.0, bb);
  return out;
}

AutogradMeta& ensure_meta(const Tensor& t) {
  TensorImpl& impl = t.impl();
  if (!impl.autograd) {
    impl.autograd = std::make_shared<AutogradMeta>();
    impl.autograd->owner = t.impl_ptr();
    impl.autograd->shape = impl.shape;
    impl.autograd->dtype = impl.dtype;
    impl.autograd->device = t.device();
  }
  return *impl.autograd;
}

}  // namespace

// ---- grad mode ----

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }
EnableGradGuard::EnableGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { g_grad_enabled = prev_; }

LeafCollector::LeafCollector() : prev_(g_collector) { g_collector = this; }
LeafCollector::~LeafCollector() { g_collector = prev_; }
void LeafCollector::see(const Tensor& t) {
  for (const Tensor& l : leaves_)
    if (l.impl_ptr() == t.impl_ptr()) return;
  leaves_.push_back(t);
}

// ---- Tensor's autograd methods ----

bool Tensor::requires_grad() const {
  const auto& m = impl().autograd;
  return m && m->requires_grad;
}

Tensor& Tensor::requires_grad_(bool on) {
  TESSERA_CHECK(is_leaf(), "requires_grad_() on a non-leaf tensor ", str(),
                " (it was produced by op ", impl().autograd->grad_fn->op, "); use detach()");
  TESSERA_CHECK(!on || is_floating(dtype()), "requires_grad_() on a ", dtype_name(dtype()),
                " tensor: only floating tensors have gradients");
  ensure_meta(*this).requires_grad = on;
  return *this;
}

bool Tensor::is_leaf() const {
  const auto& m = impl().autograd;
  return !m || !m->grad_fn;
}

namespace {
// A gradient attached with filled = false gets its zeros (attach_grad).
void fill_pending(AutogradMeta& m) {
  if (!m.grad_unfilled) return;
  m.grad.fill_(0.0);
  m.grad_unfilled = false;
}
}  // namespace

const Tensor& Tensor::grad() const {
  static const Tensor none;
  const auto& m = impl().autograd;
  if (!m) return none;
  fill_pending(*m);
  return m->grad;
}

void Tensor::zero_grad() {
  if (impl().autograd) {
    impl().autograd->grad = Tensor();
    impl().autograd->grad_zero = false;
    impl().autograd->grad_unfilled = false;
  }
}

void Tensor::set_name(const std::string& name) { ensure_meta(*this).name = name; }
std::string Tensor::name() const {
  const auto& m = impl().autograd;
  return m ? m->name : std::string();
}

void Tensor::backward() const { tessera::backward(*this); }

void register_grad_hook(const Tensor& param, GradHook hook) {
  TESSERA_CHECK(param.requires_grad() && param.is_leaf(),
                "register_grad_hook: ", param.str(), " is not a leaf that requires a gradient");
  ensure_meta(param).hooks.push_back(std::move(hook));
}

void attach_grad(const Tensor& param, const Tensor& grad, bool zero, bool filled) {
  TESSERA_CHECK(param.requires_grad() && param.is_leaf(),
                "attach_grad: ", param.str(), " is not a leaf that requires a gradient");
  TESSERA_CHECK(grad.shape() == param.shape() && grad.device() == param.device() &&
                    is_floating(grad.dtype()),
                "attach_grad: gradient ", grad.str(), " does not fit parameter ", param.str());
  TESSERA_CHECK(zero || filled, "attach_grad: ", param.str(),
                ": a gradient left unfilled must be zero by definition (zero = true)");
  AutogradMeta& m = ensure_meta(param);
  m.grad = grad;
  m.grad_zero = zero;
  m.grad_unfilled = zero && !filled;
}

void fill_pending_grad(const Tensor& param) {
  if (const auto& m = param.impl().autograd) fill_pending(*m);
}

bool grad_holds_zeros(const Tensor& param) {
  const auto& m = param.impl().autograd;
  return m && m->grad.defined() && m->grad_zero;
}

// ---- record ----

Tensor record(const char* op, const Tensor& out, const std::vector<Tensor>& inputs,
              BackwardFn backward) {
  if (g_collector) {
    for (const Tensor& in : inputs)
      if (in.defined() && in.requires_grad() && in.is_leaf()) g_collector->see(in);
  }
  if (!g_grad_enabled) return out;
  bool any = false;
  for (const Tensor& in : inputs) any = any || (in.defined() && in.requires_grad());
  if (!any) return out;

  auto node = std::make_shared<Node>();
  node->op = op;
  node->seq = g_seq.fetch_add(1);
  node->inputs.reserve(inputs.size());
  for (const Tensor& in : inputs)
    node->inputs.push_back(in.defined() && in.requires_grad() ? in.impl().autograd : nullptr);
  node->backward = std::move(backward);

  // A tensor that already has a history (an op that returned its input) gets a fresh alias.
  Tensor res = out.impl().autograd ? out.detach() : out;
  AutogradMeta& m = ensure_meta(res);
  m.requires_grad = true;
  m.grad_fn = std::move(node);
  return res;
}

// ---- GradSink ----

bool GradSink::needs(size_t input) const {
  return input < node_.inputs.size() && node_.inputs[input] != nullptr;
}

void GradSink::add(size_t input, const Tensor& grad) {
  TESSERA_CHECK(input < node_.inputs.size(), "backward of ", node_.op, ": gradient for input ",
                input, " but the op has ", node_.inputs.size(), " inputs");
  const auto& m = node_.inputs[input];
  if (!m || !grad.defined()) return;
  TESSERA_CHECK(grad.shape() == m->shape, "backward of ", node_.op, ": gradient for input ", input,
                " has shape ", shape_str(grad.shape()), " but the input has shape ",
                shape_str(m->shape));
  grads_.emplace_back(input, grad);
}

void GradSink::add_into(size_t input, DType dtype,
                        std::function<void(Tensor& acc, bool zero)> accumulate,
                        IntoOptions options) {
  // An input that takes no gradient gets no call; the general form refuses an index out of range.
  if (input < node_.inputs.size() && !node_.inputs[input]) return;
  add_into({{input, dtype, std::move(options)}},
           [fn = std::move(accumulate)](std::vector<Into>& into) { fn(into[0].acc, into[0].zero); });
}

void GradSink::add_into(std::vector<IntoTarget> targets,
                        std::function<void(std::vector<Into>& into)> accumulate) {
  for (const IntoTarget& t : targets) {
    TESSERA_CHECK(t.input < node_.inputs.size(), "backward of ", node_.op,
                  ": gradient for input ", t.input, " but the op has ", node_.inputs.size(),
                  " inputs");
    TESSERA_CHECK(!t.options.overwrites || t.options.region.dim < 0, "backward of ", node_.op,
                  ": a contribution that overwrites its accumulator cannot be confined to a "
                  "region");
  }
  accumulations_.push_back({std::move(targets), std::move(accumulate)});
}

// ---- backward ----

class Engine {
 public:
  Engine(bool retain_graph, std::unordered_map<AutogradMeta*, Tensor>* captured)
      : retain_(retain_graph), captured_(captured) {}

  void run(const Tensor& root, Tensor grad) {
    TESSERA_CHECK(root.requires_grad(), "backward() on ", root.str(),
                  ", which does not require a gradient (no input of its graph requires one)");
    if (!grad.defined()) {
      TESSERA_CHECK(root.numel() == 1, "backward() without a gradient needs a one-element root; ",
                    "got shape ", shape_str(root.shape()));
      grad = ones(root.shape(), root.options());
    }
    TESSERA_CHECK(grad.shape() == root.shape(), "backward(): gradient shape ",
                  shape_str(grad.shape()), " vs root shape ", shape_str(root.shape()));
    NoGradGuard no_grad;  // backward closures are not themselves recorded
    AutogradMeta* root_meta = root.impl().autograd.get();
    if (!root_meta->grad_fn) {  // the root is itself a leaf
      deliver(root_meta, grad);
      finish_leaf(root_meta);
      return;
    }
    discover(root_meta);
    pending_[root_meta] = grad;

    auto later = [](AutogradMeta* a, AutogradMeta* b) { return a->grad_fn->seq < b->grad_fn->seq; };
    std::priority_queue<AutogradMeta*, std::vector<AutogradMeta*>, decltype(later)> ready(later);
    ready.push(root_meta);
    while (!ready.empty()) {
      AutogradMeta* m = ready.top();
      ready.pop();
      std::shared_ptr<Node> node = m->grad_fn;  // keep alive while it runs
      auto it = pending_.find(m);
      if (it != pending_.end()) {
        Tensor g = dense(it->second);
        pending_.erase(it);  // the intermediate gradient is consumed here and freed below
        written_.erase(m);
        TESSERA_CHECK(node->backward, "backward through ", node->op,
                      " a second time: its saved tensors were released after the first backward "
                      "(pass retain_graph = true to keep them)");
        GradSink sink(*node, !retain_);
        node->backward(g, sink);
        g = Tensor();
        if (!retain_) node->backward = nullptr;
        // Accumulations first: one may add() the op's other gradients (GradSink::add_into).
        for (size_t i = 0; i < sink.accumulations_.size(); ++i)
          accumulate(*node, sink.accumulations_[i]);
        for (auto& [idx, gi] : sink.grads_) deliver(node->inputs[idx].get(), gi);
      }
      for (const auto& in : node->inputs) {
        if (!in) continue;
        if (--deps_[in.get()] > 0) continue;
        if (in->grad_fn) {
          ready.push(in.get());
        } else {
          finish_leaf(in.get());
        }
      }
    }
  }

 private:
  // Counts, for every tensor the root depends on, how many edges lead into it.
  void discover(AutogradMeta* root) {
    std::vector<AutogradMeta*> stack{root};
    std::unordered_set<AutogradMeta*> seen{root};
    while (!stack.empty()) {
      AutogradMeta* m = stack.back();
      stack.pop_back();
      if (!m->grad_fn) continue;
      for (const auto& in : m->grad_fn->inputs) {
        if (!in) continue;
        deps_[in.get()]++;
        if (seen.insert(in.get()).second) stack.push_back(in.get());
      }
    }
  }

  void deliver(AutogradMeta* m, const Tensor& g) {
    if (m->grad_fn) {  // intermediate: held until its node runs
      auto it = pending_.find(m);
      if (it == pending_.end()) {
        pending_.emplace(m, g);
      } else if (owned_alone(it->second) && it->second.dtype() == g.dtype()) {
        TESSERA_KERNEL(it->second, axpby)(it->second, 1.0, it->second, 1.0, dense(g));
      } else {
        it->second = add_fresh(it->second, g);
      }
      written_.erase(m);  // no part of it is known to be zero any more
      return;
    }
    touched_.insert(m);
    if (captured_) {
      auto it = captured_->find(m);
      if (it == captured_->end()) {
        captured_->emplace(m, g);
      } else {
        it->second = add_fresh(it->second, g);
      }
      return;
    }
    // A leaf's gradient is its own storage, in the leaf's dtype, and accumulates in place. A first
    // contribution that nothing else references is adopted rather than copied (one gradient-sized
    // buffer instead of two at that moment: LOMO's peak is made of such moments).
    if (!m->grad.defined()) {
      if (owned_alone(g) && g.dtype() == m->dtype && g.device() == m->device) {
        m->grad = g;
      } else {
        m->grad = Tensor::empty(m->shape, {m->dtype, m->device});
        m->grad.copy_(g);
      }
    } else if (m->grad_zero) {  // an attached buffer still at zero: assign, converting in one pass
      m->grad.copy_(g);
    } else {
      Tensor gg = g.dtype() == m->grad.dtype() ? dense(g) : g.detach().to(m->grad.dtype());
      TESSERA_KERNEL(m->grad, axpby)(m->grad, 1.0, m->grad, 1.0, gg);
    }
    m->grad_zero = false;
    m->grad_unfilled = false;  // copied over whole
  }

  // A contribution that adds itself into its gradients (GradSink::add_into): each target's
  // accumulator opened (open_into), the contribution run on all of them, each closed (close_into).
  void accumulate(const Node& node, const GradSink::Accumulation& a) {
    const size_t n = a.targets.size();
    std::vector<Into> into(n);
    std::vector<Opened> opened(n);
    for (size_t i = 0; i < n; ++i) {
      AutogradMeta* m = node.inputs[a.targets[i].input].get();
      if (!m) continue;
      bool again = false;  // a second target of one tensor: its own buffer, delivered after
      for (size_t j = 0; j < i; ++j) again = again || opened[j].m == m;
      opened[i] = open_into(m, a.targets[i], into[i], again);
    }
    a.fn(into);
    for (size_t i = 0; i < n; ++i)
      if (opened[i].m) close_into(opened[i], into[i]);
  }

  // Where a target's accumulator came from, so close_into can settle it.
  struct Opened {
    AutogradMeta* m = nullptr;
    enum Kind { Leaf, NewPending, Pending, Deliver } kind = Deliver;
    GradRegion region;
  };

  // The accumulator of one target: in place into a leaf's gradient of its dtype, or into an
  // intermediate's pending gradient when nothing else shares it (several narrows of one tensor then
  // fill one buffer), else a zero-filled temporary delivered afterwards (`temporary` forces that).
  Opened open_into(AutogradMeta* m, const IntoTarget& t, Into& into, bool temporary) {
    const IntoOptions& o = t.options;
    const GradRegion& r = o.region;
    // A fresh accumulator: zeros, or any memory for a contribution that overwrites it whole.
    auto fresh_buffer = [&](DType dtype) {
      return o.overwrites ? Tensor::empty(m->shape, {dtype, m->device})
                          : zeros(m->shape, {dtype, m->device});
    };
    const DType held = m->grad.defined() ? m->grad.dtype() : m->dtype;
    if (!temporary && !m->grad_fn && !captured_ && (t.dtype == held || o.also == held)) {
      touched_.insert(m);
      if (!o.overwrites) fill_pending(*m);  // it adds into the accumulator: the zeros first
      into.zero = !m->grad.defined() || m->grad_zero;
      if (!m->grad.defined()) m->grad = fresh_buffer(m->dtype);
      into.acc = m->grad;
      return {m, Opened::Leaf, r};
    }
    if (!temporary && m->grad_fn) {
      auto it = pending_.find(m);
      if (it == pending_.end()) {
        into.acc = fresh_buffer(t.dtype);
        into.zero = true;
        return {m, Opened::NewPending, r};
      }
      if (owned_alone(it->second) && it->second.dtype() == t.dtype) {
        auto w = written_.find(m);
        bool zero = r.dim >= 0 && w != written_.end();
        if (zero)
          for (const GradRegion& o : w->second)
            zero = zero && o.dim == r.dim &&
                   (o.start + o.length <= r.start || r.start + r.length <= o.start);
        into.acc = it->second;
        into.zero = zero;
        return {m, Opened::Pending, r};
      }
    }
    into.acc = fresh_buffer(t.dtype);
    into.zero = true;
    return {m, Opened::Deliver, r};
  }

  void close_into(const Opened& op, Into& into) {
    AutogradMeta* m = op.m;
    const GradRegion& r = op.region;
    switch (op.kind) {
      case Opened::Leaf:
        m->grad_zero = false;
        m->grad_unfilled = false;  // an overwriting contribution wrote it whole
        break;
      case Opened::NewPending:
        pending_.emplace(m, std::move(into.acc));
        if (r.dim >= 0) written_[m] = {r};
        break;
      case Opened::Pending:
        if (auto w = written_.find(m); w != written_.end()) {
          if (r.dim >= 0)
            w->second.push_back(r);
          else
            written_.erase(w);
        }
        break;
      case Opened::Deliver:
        deliver(m, into.acc);
        break;
    }
    into.acc = Tensor();
  }

  // A dense, contiguous tensor whose storage no other tensor, view or handle shares, and that takes
  // no part in autograd: safe to keep as a leaf's gradient.
  static bool owned_alone(const Tensor& g) {
    return g.impl_ptr().use_count() == 1 && g.storage().use_count() == 1 && g.is_contiguous() &&
           g.offset() == 0 && g.storage()->nbytes() == g.nbytes() && !g.impl().autograd;
  }

  void finish_leaf(AutogradMeta* m) {
    if (captured_ || !touched_.count(m) || m->hooks.empty()) return;
    Tensor p(m->owner.lock());
    if (!p.defined()) return;
    for (auto& hook : m->hooks) hook(p);
  }

  bool retain_;
  std::unordered_map<AutogradMeta*, Tensor>* captured_;
  std::unordered_map<AutogradMeta*, int64_t> deps_;
  std::unordered_map<AutogradMeta*, Tensor> pending_;
  // For a pending gradient that add_into zero-filled: the regions written into it since (its other
  // parts still hold zeros). Dropped once anything else is added to it.
  std::unordered_map<AutogradMeta*, std::vector<GradRegion>> written_;
  std::unordered_set<AutogradMeta*> touched_;
};

void backward(const Tensor& root, const Tensor& grad, BackwardOptions opt) {
  Engine(opt.retain_graph, nullptr).run(root, grad);
}

void backward_captured(const Tensor& root, const Tensor& grad,
                       std::unordered_map<AutogradMeta*, Tensor>& captured) {
  Engine(false, &captured).run(root, grad);
}

}  // namespace tessera
