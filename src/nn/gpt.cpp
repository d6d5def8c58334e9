// GPT forward pass, composed from differentiable ops: every gradient comes from the ops' own
// backward closures, so there is no model-level backward to keep in sync.
#include "nn/gpt.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>

#include "autograd/autograd.h"
#include "nn/hf_names.h"
#include "nn/moe.h"
#include "ops/causal_attention.h"
#include "ops/ops.h"
#include "ops/packed_attention.h"

namespace tessera::nn {

const char* proj_name(Proj p) {
  switch (p) {
    case Proj::Q: return "q";
    case Proj::K: return "k";
    case Proj::V: return "v";
    case Proj::O: return "o";
    case Proj::Gate: return "gate";
    case Proj::Up: return "up";
    case Proj::Down: return "down";
    case Proj::Head: return "head";
  }
  return "?";
}

int64_t GPTConfig::hidden() const {
  if (mlp_hidden > 0) return mlp_hidden;
  if (mlp == MlpKind::GELU) return 4 * n_embd;
  const int64_t h = 8 * n_embd / 3;  // Llama: 2/3 of 4 C, rounded up to a multiple of 64
  return (h + 63) / 64 * 64;
}

void GPTConfig::validate() const {
  TESSERA_CHECK(n_layer > 0 && n_head > 0 && n_embd > 0 && block_size > 0 && vocab_size > 0,
                "model: n_layer, n_head, n_embd, block_size and vocab_size must be positive");
  TESSERA_CHECK(explicit_head_dim >= 0, "model: head_dim must be >= 0 (0 = n_embd / n_head), got ",
                explicit_head_dim);
  TESSERA_CHECK(explicit_head_dim > 0 || n_embd % n_head == 0, "model: n_embd ", n_embd,
                " is not a multiple of n_head ", n_head, " (or give head_dim)");
  TESSERA_CHECK(kv_heads() > 0 && n_head % kv_heads() == 0, "model: n_head ", n_head,
                " is not a multiple of n_kv_head ", kv_heads());
  TESSERA_CHECK(position != PositionKind::RoPE || head_dim() % 2 == 0,
                "model: rope needs an even head dimension, got ", head_dim());
  TESSERA_CHECK(attention.alibi == (position == PositionKind::ALiBi),
                "model: position alibi and attention.alibi go together (position ",
                position == PositionKind::ALiBi ? "alibi" : "not alibi", ", attention.alibi ",
                attention.alibi, ")");
  TESSERA_CHECK(dropout >= 0 && dropout < 1, "model: dropout ", dropout, " is outside [0, 1)");
  TESSERA_CHECK(n_expert >= 0 && (n_expert == 0 || (expert_top_k >= 1 && expert_top_k <= n_expert)),
                "model: n_expert ", n_expert, " must be >= 0 and expert_top_k ", expert_top_k,
                " within [1, n_expert]");
  TESSERA_CHECK(router_aux_loss >= 0 && router_z_loss >= 0, "model: router_aux_loss ",
                router_aux_loss, " and router_z_loss ", router_z_loss, " must be >= 0");
  TESSERA_CHECK(document_separator < vocab_size, "model: document separator id ",
                document_separator, " is not below vocab_size ", vocab_size);
  // Device limits are checked where the device is known (config validation, causal_attention);
  // here only what no device runs.
  const std::string why = ops::attention_support(attention, Device::cpu(), DType::F32, head_dim());
  TESSERA_CHECK(why.empty(), "model: attention ", ops::attention_kind_name(attention.kind), ": ",
                why);
}

void GPT::set_document_separator(int64_t id) {
  TESSERA_CHECK(id < cfg_.vocab_size, "GPT: document separator id ", id,
                " is not below vocab_size ", cfg_.vocab_size);
  cfg_.document_separator = id < 0 ? -1 : id;
}

GPT::GPT(const GPTConfig& cfg, Generator& gen, DType dtype) : cfg_(cfg), dtype_(dtype) {
  cfg_.validate();
  NoGradGuard no_grad;
  const double std = 0.02, resid_std = 0.02 / std::sqrt(2.0 * double(cfg_.n_layer));
  auto normal = [&](Shape s, double sd) { return ops::scale(randn(s, gen, dtype_), sd); };
  for (const ParamSpec& s : param_specs(cfg_)) {
    switch (s.init) {
      case Init::Normal: add_param(s.name, normal(s.shape, std)); break;
      case Init::Residual: add_param(s.name, normal(s.shape, resid_std)); break;
      case Init::Zeros: add_param(s.name, zeros(s.shape, dtype_)); break;
      case Init::Ones: add_param(s.name, ones(s.shape, dtype_)); break;
    }
  }
  for (auto& [name, t] : params_) t.requires_grad_();
  bind();
}

Tensor& GPT::add_param(const std::string& name, Tensor t) {
  t.set_name(name);
  params_.emplace_back(name, std::move(t));
  return params_.back().second;
}

Tensor GPT::parameter(const std::string& name) const {
  for (const auto& [n, t] : params_)
    if (n == name) return t;
  TESSERA_FAIL("model has no parameter '", name, "'");
}

int64_t GPT::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel();
  return n;
}

void GPT::replace_parameters(const std::vector<Tensor>& tensors) {
  TESSERA_CHECK(tensors.size() == params_.size(), "replace_parameters: ", tensors.size(),
                " tensors for ", params_.size(), " parameters");
  for (size_t i = 0; i < tensors.size(); ++i) {
    TESSERA_CHECK(tensors[i].shape() == params_[i].second.shape(), "replace_parameters: ",
                  params_[i].first, " has shape ", shape_str(params_[i].second.shape()),
                  ", got ", shape_str(tensors[i].shape()));
    params_[i].second = tensors[i];
  }
  bind();
}

void GPT::zero_grad() {
  for (auto& [name, t] : params_) t.zero_grad();
}

std::vector<NamedTensor> GPT::release_parameters(const std::vector<std::string>& names) {
  for (const std::string& n : names)
    TESSERA_CHECK(std::any_of(params_.begin(), params_.end(),
                              [&](const NamedTensor& p) { return p.first == n; }),
                  "release_parameters: the model has no parameter '", n, "'");
  std::vector<NamedTensor> out, kept;
  for (auto& p : params_)
    (std::find(names.begin(), names.end(), p.first) != names.end() ? out : kept).push_back(p);
  params_ = std::move(kept);
  bind();
  return out;
}

std::vector<std::string> GPT::block_linear_weights() const {
  std::vector<std::string> out;
  for (const ParamSpec& s : param_specs(cfg_))
    if (is_block_linear(s.part) && !s.bias) out.push_back(s.name);
  return out;
}

namespace {

Part part_of(Proj p) {
  switch (p) {
    case Proj::Q: return Part::Q;
    case Proj::K: return Part::K;
    case Proj::V: return Part::V;
    case Proj::O: return Part::O;
    case Proj::Gate: return Part::Gate;
    case Proj::Up: return Part::Up;
    case Proj::Down: return Part::Down;
    case Proj::Head: return Part::Head;
  }
  return Part::Head;
}

}  // namespace

std::string GPT::module_name(Proj p, int64_t layer) const {
  if (p == Proj::Head) return hf_module(cfg_, Part::Head);
  TESSERA_CHECK(layer >= 0 && layer < cfg_.n_layer, "module_name: layer ", layer, " of ",
                cfg_.n_layer);
  TESSERA_CHECK(p != Proj::Gate || cfg_.mlp == MlpKind::SwiGLU,
                "a GELU MLP has no gate projection");
  // GPT-2's q, k and v are slices of the fused c_attn, each adapted on its own: "c_attn.q".
  const bool fused = cfg_.gpt2_names() && (p == Proj::Q || p == Proj::K || p == Proj::V);
  if (fused) return hf_module(cfg_, Part::QKV, layer) + "." + proj_name(p);
  return hf_module(cfg_, part_of(p), layer);
}

void GPT::bind() {
  wte_ = wpe_ = lnf_w_ = lnf_b_ = head_ = Tensor();
  blocks_.assign(size_t(cfg_.n_layer), Block{});
  for (int64_t i = 0; i < cfg_.n_layer; ++i) blocks_[size_t(i)].index = i;
  std::map<std::string, Tensor> held(params_.begin(), params_.end());
  for (const ParamSpec& s : param_specs(cfg_)) {
    auto it = held.find(s.name);
    if (it == held.end()) continue;  // released to a hook
    Block* b = s.layer >= 0 ? &blocks_[size_t(s.layer)] : nullptr;
    if (b && s.expert >= 0 && b->experts.size() <= size_t(s.expert))
      b->experts.resize(size_t(s.expert) + 1);
    Block::Mlp* m = !b                          ? nullptr
                    : s.expert >= 0             ? &b->experts[size_t(s.expert)]
                    : s.expert == kSharedExpert ? &b->shared
                                                : &b->mlp;
    auto pick = [&](Tensor& w, Tensor& bias) { return s.bias ? &bias : &w; };
    Tensor* field = nullptr;
    // clang-format off
    switch (s.part) {
      case Part::Embed: field = &wte_; break;
      case Part::Pos: field = &wpe_; break;
      case Part::NormF: field = pick(lnf_w_, lnf_b_); break;
      case Part::Head: field = &head_; break;
      case Part::Norm1: field = pick(b->ln1_w, b->ln1_b); break;
      case Part::QKV: field = pick(b->qkv_w, b->qkv_b); break;
      case Part::Q: field = pick(b->q_w, b->q_b); break;
      case Part::K: field = pick(b->k_w, b->k_b); break;
      case Part::V: field = pick(b->v_w, b->v_b); break;
      case Part::O: field = pick(b->o_w, b->o_b); break;
      case Part::Norm2: field = pick(b->ln2_w, b->ln2_b); break;
      case Part::Gate: field = pick(m->gate_w, m->gate_b); break;
      case Part::Up: field = pick(m->up_w, m->up_b); break;
      case Part::Down: field = pick(m->down_w, m->down_b); break;
      case Part::Router: field = &b->router_w; break;
      case Part::SharedGate: field = &b->shared_gate_w; break;
      case Part::Forget: field = pick(b->fgate_w, b->fgate_b); break;
      case Part::QNorm: field = &b->q_norm_w; break;
      case Part::KNorm: field = &b->k_norm_w; break;
    }
    // clang-format on
    *field = it->second;
  }
  if (cfg_.tie_embeddings) head_ = wte_;
}

Tensor GPT::norm(const Tensor& x, const Tensor& w, const Tensor& b) const {
  if (cfg_.norm == NormKind::RMSNorm) return ops::rmsnorm(x, w, cfg_.norm_eps);
  // A LayerNorm without a learned bias (bias: false) subtracts the mean all the same.
  return ops::layernorm(x, w, b.defined() ? b : zeros({cfg_.n_embd}, w.options()), cfg_.norm_eps);
}

Tensor GPT::linear(const std::string& module, const Tensor& x, const Tensor& w,
                   const Tensor& b) const {
  if (hook_) return hook_->base(module + ".weight", x, w, b);
  TESSERA_CHECK(w.defined(), "GPT: ", module, ".weight was released and no hook computes it");
  return ops::linear(x, w, b);
}

Tensor GPT::adapt(Proj p, int64_t layer, const Tensor& x, const Tensor& y, bool training) const {
  return hook_ ? hook_->adapt(p, layer, x, y, training) : y;
}

void GPT::project(const Block& blk, const Tensor& x, bool training, Tensor& q, Tensor& k,
                  Tensor& v) const {
  const int64_t H = cfg_.n_head, Hkv = cfg_.kv_heads(), hd = cfg_.head_dim(), l = blk.index;
  if (cfg_.gpt2_names()) {
    Tensor qkv = linear(hf_module(cfg_, Part::QKV, l), x, blk.qkv_w, blk.qkv_b);  // (B, T, (H + 2 Hkv) hd)
    q = qkv.narrow(2, 0, H * hd);
    k = qkv.narrow(2, H * hd, Hkv * hd);
    v = qkv.narrow(2, (H + Hkv) * hd, Hkv * hd);
  } else {
    q = linear(hf_module(cfg_, Part::Q, l), x, blk.q_w, blk.q_b);
    k = linear(hf_module(cfg_, Part::K, l), x, blk.k_w, blk.k_b);
    v = linear(hf_module(cfg_, Part::V, l), x, blk.v_w, blk.v_b);
  }
  q = adapt(Proj::Q, l, x, q, training);
  k = adapt(Proj::K, l, x, k, training);
  v = adapt(Proj::V, l, x, v, training);
}

void GPT::project_qkv(const Block& blk, const Tensor& x, int64_t pos0, bool training, Tensor& q,
                      Tensor& k, Tensor& v) const {
  project_heads(blk, x, training, q, k, v);
  rotate(q, k, pos0);
}

void GPT::rotate(Tensor& q, Tensor& k, int64_t pos0) const {
  if (cfg_.position != PositionKind::RoPE) return;
  const ops::RopeFreqs freqs = rope_freqs_for(cfg_, pos0 + q.size(2));  // model.rope_scaling
  q = ops::rope(q, freqs, pos0);
  k = ops::rope(k, freqs, pos0);
}

void GPT::project_heads(const Block& blk, const Tensor& x, bool training, Tensor& q, Tensor& k,
                        Tensor& v) const {
  const int64_t B = x.size(0), T = x.size(1), H = cfg_.n_head, Hkv = cfg_.kv_heads();
  const int64_t hd = cfg_.head_dim();
  project(blk, x, training, q, k, v);
  // (B, T, n hd) -> (B, n, T, hd), each head RMS-normalised first when norm_w is given.
  auto heads = [&](const Tensor& t, int64_t n, const Tensor* norm_w) {
    Tensor h = t.reshape({B, T, n, hd});
    if (norm_w) h = ops::rmsnorm(h, *norm_w, cfg_.norm_eps);
    return h.permute({0, 2, 1, 3}).contiguous();
  };
  q = heads(q, H, cfg_.qk_norm ? &blk.q_norm_w : nullptr);
  k = heads(k, Hkv, cfg_.qk_norm ? &blk.k_norm_w : nullptr);
  v = heads(v, Hkv, nullptr);
}

Tensor GPT::merge_heads(const Block& blk, const Tensor& y, const Tensor& residual,
                        bool training) const {
  const int64_t B = y.size(0), T = y.size(2);
  // (B, T, C)
  return project_out(blk, y.permute({0, 2, 1, 3}).reshape({B, T, y.size(1) * y.size(3)}),
                     residual, training);
}

Tensor GPT::project_out(const Block& blk, const Tensor& m, const Tensor& residual,
                        bool training) const {
  return residual_linear(Proj::O, hf_module(cfg_, Part::O, blk.index), blk.index, m, blk.o_w,
                         blk.o_b, residual, training);
}

bool GPT::residual_in_kernel(bool training) const {
  return !hook_ && (!training || cfg_.dropout == 0.0);
}

Tensor GPT::residual_linear(Proj p, const std::string& module, int64_t layer, const Tensor& x,
                            const Tensor& w, const Tensor& b, const Tensor& residual,
                            bool training) const {
  // Nothing between the Linear and the add: one kernel (on CUDA the residual is the gemm's C).
  if (residual_in_kernel(training)) {
    TESSERA_CHECK(w.defined(), "GPT: ", module, ".weight was released and no hook computes it");
    return ops::linear_add(x, w, b, residual);
  }
  Tensor y = adapt(p, layer, x, linear(module, x, w, b), training);
  return ops::add(residual, ops::dropout(y, cfg_.dropout, training));
}

GPT::AttentionPath GPT::attention_path(const Block& blk, const Tensor& x, bool training) const {
  // qk_norm normalises the heads on their way out of the projections.
  if (cfg_.qk_norm ||
      !ops::packed_attention_runs(cfg_.attention, x.device(), x.dtype(), cfg_.head_dim(), training))
    return AttentionPath::Split;
  // Separate projections: three (B, T, .) tensors whatever a hook adds to them. GPT-2's fused one
  // with RoPE stays split: q and k views of c_attn's output would keep all of it alive beside their
  // rotated copies.
  if (!cfg_.gpt2_names()) return AttentionPath::Projected;
  if (cfg_.position == PositionKind::RoPE) return AttentionPath::Split;
  if (hook_)
    for (Proj p : {Proj::Q, Proj::K, Proj::V})
      if (hook_->adapts(p, blk.index)) return AttentionPath::Split;
  return AttentionPath::Packed;
}

// The configured attention; ops::causal_attention picks the kernel.
Tensor GPT::attend(const Tensor& q, const Tensor& k, const Tensor& v, bool training,
                   const Tensor& forget) const {
  return ops::causal_attention(q, k, v, cfg_.attention, training, nullptr, forget);
}

Tensor GPT::forget_sums(const Block& blk, const Tensor& x, const Tensor& start) const {
  if (cfg_.attention.kind != ops::AttentionKind::Forgetting) return Tensor();
  return ops::forget_gate(
      linear(hf_module(cfg_, Part::Forget, blk.index), x, blk.fgate_w, blk.fgate_b), start);
}

// x (B, T, C) -> residual + attention(x) (B, T, C)
Tensor GPT::attention(const Block& blk, const Tensor& x, const Tensor& residual, bool training,
                      const ops::Documents* docs) const {
  const int64_t H = cfg_.n_head, Hkv = cfg_.kv_heads();
  Tensor q, k, v;
  switch (attention_path(blk, x, training)) {
    case AttentionPath::Packed: {
      // Heads read and written where the projection keeps them: no split or merge copies.
      Tensor qkv = linear(hf_module(cfg_, Part::QKV, blk.index), x, blk.qkv_w, blk.qkv_b);
      return project_out(blk,
                         ops::packed_causal_attention(qkv, H, Hkv, cfg_.attention, training, docs),
                         residual, training);
    }
    case AttentionPath::Projected: {
      project(blk, x, training, q, k, v);
      std::optional<ops::RopeFreqs> freqs;
      if (cfg_.position == PositionKind::RoPE) freqs = rope_freqs_for(cfg_, x.size(1));
      return project_out(blk,
                         ops::projected_causal_attention(q, k, v, H, Hkv, cfg_.attention, training,
                                                         freqs ? &*freqs : nullptr, docs),
                         residual, training);
    }
    case AttentionPath::Split:
      break;
  }
  project_qkv(blk, x, 0, training, q, k, v);
  return merge_heads(
      blk, ops::causal_attention(q, k, v, cfg_.attention, training, docs, forget_sums(blk, x)),
      residual, training);
}

// x (B, T, C) -> residual + mlp(x) (B, T, C)
Tensor GPT::mlp(const Block& blk, const Tensor& x, const Tensor& residual, bool training,
                std::vector<RouterLosses>* aux) const {
  if (cfg_.n_expert > 0)
    return ops::add(residual, ops::dropout(experts(blk, x, training, aux), cfg_.dropout, training));
  const int64_t l = blk.index;
  const Block::Mlp& m = blk.mlp;
  if (cfg_.mlp == MlpKind::GELU && !hook_ && m.up_w.defined() && m.up_b.defined() &&
      m.down_w.defined() && m.down_b.defined()) {
    // GPT-2's MLP as one op: GELU in the first gemm's epilogue and its gradient in the second's
    // backward gemm, the residual added in the second gemm (on CUDA). A hook may adapt either
    // Linear or compute it from NF4 codes: then the ops below.
    if (residual_in_kernel(training))
      return ops::mlp_gelu(x, m.up_w, m.up_b, m.down_w, m.down_b, residual);
    return ops::add(residual, ops::dropout(ops::mlp_gelu(x, m.up_w, m.up_b, m.down_w, m.down_b),
                                           cfg_.dropout, training));
  }
  return residual_linear(Proj::Down, hf_module(cfg_, Part::Down, l), l,
                         mlp_hidden(m, l, -1, x, training), m.down_w, m.down_b, residual, training);
}

Tensor GPT::mlp_hidden(const Block::Mlp& m, int64_t l, int64_t e, const Tensor& x,
                       bool training) const {
  // c_fc and its GELU in one kernel (on CUDA, GELU in the gemm's epilogue).
  if (cfg_.mlp == MlpKind::GELU && !hook_ && m.up_w.defined() && m.up_b.defined())
    return ops::linear_gelu(x, m.up_w, m.up_b);
  // Adapters on the dense MLP alone (an expert, e >= 0 or kSharedExpert, has none).
  auto adapted = [&](Proj p, const Tensor& y) { return e == -1 ? adapt(p, l, x, y, training) : y; };
  Tensor up = adapted(Proj::Up, linear(hf_module(cfg_, Part::Up, l, e), x, m.up_w, m.up_b));
  if (cfg_.mlp == MlpKind::GELU) return ops::gelu(up);
  return ops::swiglu(
      adapted(Proj::Gate, linear(hf_module(cfg_, Part::Gate, l, e), x, m.gate_w, m.gate_b)), up);
}

Tensor GPT::experts(const Block& blk, const Tensor& x, bool training,
                    std::vector<RouterLosses>* aux) const {
  const int64_t l = blk.index, C = cfg_.n_embd;
  const Tensor rows = x.reshape({x.numel() / C, C});
  const Tensor logits = linear(hf_module(cfg_, Part::Router, l), rows, blk.router_w, Tensor());
  RouterLosses losses;
  // Expert e's MLP (kSharedExpert: the shared one) on its rows.
  auto expert = [&](int64_t e, const Tensor& xe) {
    const Block::Mlp& m = e == kSharedExpert ? blk.shared : blk.experts[size_t(e)];
    if (cfg_.mlp == MlpKind::GELU && !hook_ && m.up_b.defined() && m.down_b.defined())
      return ops::mlp_gelu(xe, m.up_w, m.up_b, m.down_w, m.down_b);
    return linear(hf_module(cfg_, Part::Down, l, e), mlp_hidden(m, l, e, xe, training), m.down_w,
                  m.down_b);
  };
  Tensor y = mixture(rows, logits, {cfg_.n_expert, cfg_.expert_top_k, cfg_.router_renormalize},
                     expert, aux ? &losses : nullptr);
  if (aux) aux->push_back(losses);
  if (cfg_.shared_expert_hidden > 0) {  // every token's, weighted by its gate (Qwen2-MoE) or not
    Tensor s = expert(kSharedExpert, rows);
    if (cfg_.shared_expert_gate) {
      const Tensor gate = ops::sigmoid(
          linear(hf_module(cfg_, Part::SharedGate, l), rows, blk.shared_gate_w, Tensor()));
      s = ops::mul(s, ops::expand(gate.to(s.dtype()), 1, C));
    }
    y = ops::add(y, s);
  }
  return y.view(x.shape());
}

namespace {
constexpr int64_t kLogitPad = 64;  // logit columns: a multiple of 64 (128 bytes in bf16)
}  // namespace

int64_t GPT::logit_columns() const {
  if (!head_.defined() || (hook_ && hook_->adapts(Proj::Head, -1))) return cfg_.vocab_size;
  return (cfg_.vocab_size + kLogitPad - 1) / kLogitPad * kLogitPad;
}

Tensor GPT::vocab_logits(const Tensor& logits) const {
  return logits.size(-1) == cfg_.vocab_size ? logits : logits.narrow(-1, 0, cfg_.vocab_size);
}

Tensor GPT::head(const Tensor& x, bool training, bool padded) const {
  // A tied head is the token embedding's Linear, named after it.
  const std::string module = hf_module(cfg_, cfg_.tie_embeddings ? Part::Embed : Part::Head);
  const int64_t V = cfg_.vocab_size, Vp = padded ? logit_columns() : V;
  if (Vp == V) return adapt(Proj::Head, -1, x, linear(module, x, head_, Tensor()), training);
  // The logits' rows padded to Vp columns, the padding 0 (the cross-entropy leaves it out): the
  // gemms read and write the first V columns in place, and the weight is not copied.
  return ops::linear_padded(x, head_, Vp);
}

// Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(.)).
Tensor GPT::block(const Block& blk, const Tensor& x, bool training, const ops::Documents* docs,
                  std::vector<RouterLosses>* aux) const {
  Tensor h = attention(blk, norm(x, blk.ln1_w, blk.ln1_b), x, training, docs);
  return mlp(blk, norm(h, blk.ln2_w, blk.ln2_b), h, training, aux);
}

namespace {
// What every forward takes: token ids (B, T) i32.
void check_inputs(const Tensor& inputs) {
  TESSERA_CHECK(inputs.dim() == 2 && inputs.dtype() == DType::I32,
                "GPT: inputs must be (B, T) i32, got ", inputs.str());
}
}  // namespace

// inputs (B, T) i32 (checked by the forwards) at positions pos0 + t, or at `positions` -> (B, T, C)
Tensor GPT::embed(const Tensor& inputs, int64_t pos0, bool training, const Tensor& host_inputs,
                  const Tensor& positions) const {
  const int64_t T = inputs.size(1);
  TESSERA_CHECK(cfg_.position != PositionKind::Learned || pos0 + T <= cfg_.block_size,
                "GPT: sequence length ", pos0 + T, " exceeds block_size ", cfg_.block_size,
                " of the learned position embedding");
  Tensor x = ops::embedding(wte_, inputs, host_inputs);
  if (wpe_.defined() && positions.defined()) {
    // Each position's row of the table, given on the host and looked up like the tokens.
    const std::vector<int32_t> at = positions.to_vector<int32_t>();
    const int32_t last = at.empty() ? 0 : *std::max_element(at.begin(), at.end());
    TESSERA_CHECK(last < cfg_.block_size, "GPT: position ", last, " is past block_size ",
                  cfg_.block_size, " of the learned position embedding");
    x = ops::add(x, ops::embedding(wpe_, positions.to(x.device()), positions));
  } else if (wpe_.defined()) {
    // Rows pos0 .. pos0 + T - 1 of the position table, added to every sequence; their gradient
    // is a sum over B into those rows. No position ids are built on the host and sent over (on
    // CUDA that was a transfer and a wait per forward).
    x = ops::add_rows(x, wpe_, pos0);
  }
  return ops::dropout(x, cfg_.dropout, training);
}

Tensor GPT::forward(const Tensor& inputs, bool training) const {
  return vocab_logits(forward_from(inputs, Tensor(), training));
}

std::shared_ptr<const ops::Documents> GPT::documents(const Tensor& inputs,
                                                     const Tensor& host_inputs) const {
  if (cfg_.document_separator < 0) return nullptr;
  const Tensor ids = (host_inputs.defined() ? host_inputs : inputs.to(Device::cpu())).contiguous();
  auto docs = std::make_shared<const ops::Documents>(
      ops::Documents::at_token(static_cast<const int32_t*>(ids.data_ptr()), ids.size(0),
                               ids.size(1), int32_t(cfg_.document_separator)));
  return docs->whole_rows() ? nullptr : docs;
}

Tensor GPT::forward_from(const Tensor& inputs, const Tensor& host_inputs, bool training,
                         std::vector<RouterLosses>* aux) const {
  check_inputs(inputs);
  // Held by the recompute closures below, which run the blocks again in the backward.
  const std::shared_ptr<const ops::Documents> docs = documents(inputs, host_inputs);
  // Within documents each position's row of the table is its offset in its document, found on the
  // host with the documents.
  const Tensor positions = docs && wpe_.defined()
                               ? from_vector(docs->positions(), {docs->batch(), docs->length()})
                               : Tensor();
  Tensor x = embed(inputs, 0, training, host_inputs, positions);  // (B, T, C)
  for (const Block& blk : blocks_) {
    if (cfg_.recompute && training && grad_enabled()) {
      // A recomputed block returns its output alone: the balancing loss stays inside (refused by
      // config validation where it would be wanted).
      TESSERA_CHECK(!aux, "GPT: a mixture's router losses with recompute are not supported");
      x = recompute(
          [this, blk, training, docs](const std::vector<Tensor>& in) {
            return block(blk, in[0], training, docs.get());
          },
          {x});
    } else {
      x = block(blk, x, training, docs.get(), aux);
    }
  }
  return head(norm(x, lnf_w_, lnf_b_), training, true);  // (B, T, logit_columns())
}

KVCache GPT::make_cache(int64_t batch, int64_t capacity) const {
  KVCache c;
  c.capacity = capacity;
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    c.k.push_back(zeros({batch, cfg_.kv_heads(), capacity, cfg_.head_dim()}, wte_.options()));
    c.v.push_back(zeros({batch, cfg_.kv_heads(), capacity, cfg_.head_dim()}, wte_.options()));
    if (cfg_.attention.kind == ops::AttentionKind::Forgetting)  // the statistics' dtype
      c.forget.push_back(zeros({batch, cfg_.n_head, capacity},
                               {dtype_ == DType::F64 ? DType::F64 : DType::F32, wte_.device()}));
  }
  return c;
}

KVCache KVCache::rows(int64_t first, int64_t n) const {
  const int64_t B = k.empty() ? 0 : k.front().size(0);
  TESSERA_CHECK(first >= 0 && n >= 1 && first + n <= B, "KVCache::rows: rows [", first, ", ",
                first + n, ") of a cache of ", B, " rows");
  KVCache r;
  r.capacity = capacity;
  r.length = lengths.empty() ? length : lengths[size_t(first)];
  auto views = [&](const std::vector<Tensor>& all, std::vector<Tensor>& out) {
    for (const Tensor& t : all) out.push_back(t.narrow(0, first, n));
  };
  views(k, r.k), views(v, r.v), views(forget, r.forget);
  return r;
}

namespace {
// The cache holds one document: past a document's first position the id would open another that
// attends this one, which training never showed the model (generate stops at the id). ids (B, Tn)
// at positions start(b) + t.
void check_one_document(const Tensor& inputs, int64_t separator,
                        const std::function<int64_t(int64_t)>& start) {
  if (separator < 0) return;
  const Tensor ids = inputs.to(Device::cpu()).contiguous();
  const int32_t* p = static_cast<const int32_t*>(ids.data_ptr());
  const int64_t Tn = ids.size(1);
  for (int64_t i = 0; i < ids.numel(); ++i)
    TESSERA_CHECK(p[i] != separator || start(i / Tn) + i % Tn == 0,
                  "GPT::forward_cached: the document separator id ", separator, " at position ",
                  start(i / Tn) + i % Tn, " of row ", i / Tn,
                  ": a model trained on documents decodes one document at a time");
}
}  // namespace

Tensor GPT::forward_cached(const Tensor& inputs, KVCache& cache, bool last_only) const {
  NoGradGuard no_grad;
  check_inputs(inputs);
  const int64_t B = inputs.size(0), Tn = inputs.size(1);
  if (cache.lengths.empty()) {  // every row at one position
    const int64_t L0 = cache.length;
    TESSERA_CHECK(L0 + Tn <= cache.capacity, "GPT::forward_cached: ", L0 + Tn,
                  " positions exceed the cache capacity ", cache.capacity);
    check_one_document(inputs, cfg_.document_separator, [L0](int64_t) { return L0; });
    Tensor logits = decode(inputs, cache, {{0, B, L0}}, last_only);
    cache.length = L0 + Tn;
    return logits;
  }
  TESSERA_CHECK(Tn == 1 && int64_t(cache.lengths.size()) == B && !cache.k.empty() &&
                    cache.k.front().size(0) == B,
                "GPT::forward_cached: a cache of rows of different lengths takes one token a row "
                "of its ",
                cache.lengths.size(), " rows, got ", inputs.str());
  const std::vector<int64_t>& L = cache.lengths;  // each row's position of this token
  for (int64_t b = 0; b < B; ++b)
    TESSERA_CHECK(L[size_t(b)] >= 0 && L[size_t(b)] < cache.capacity, "GPT::forward_cached: row ",
                  b, "'s position ", L[size_t(b)], " is past the cache capacity ", cache.capacity);
  check_one_document(inputs, cfg_.document_separator, [&L](int64_t b) { return L[size_t(b)]; });
  std::vector<DecodeRun> runs;  // neighbouring rows at one position
  for (int64_t b = 0, n = 1; b < B; b += n) {
    for (n = 1; b + n < B && L[size_t(b + n)] == L[size_t(b)];) ++n;
    runs.push_back({b, n, L[size_t(b)]});
  }
  Tensor logits = decode(inputs, cache, runs, false);
  for (int64_t& n : cache.lengths) ++n;
  return logits;
}

Tensor GPT::decode(const Tensor& inputs, KVCache& cache, const std::vector<DecodeRun>& runs,
                   bool last_only) const {
  const int64_t B = inputs.size(0), Tn = inputs.size(1);
  Tensor x;
  if (runs.size() == 1) {
    x = embed(inputs, runs[0].pos, false);
  } else {  // each row's own positions in the learned table, looked up like the tokens
    std::vector<int32_t> at;
    for (const DecodeRun& r : runs)
      for (int64_t i = 0; i < r.rows * Tn; ++i) at.push_back(int32_t(r.pos + i % Tn));
    x = embed(inputs, 0, false, Tensor(), from_vector<int32_t>(at, {B, Tn}));
  }
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const Block& blk = blocks_[l];
    Tensor q, k, v;
    const Tensor xn = norm(x, blk.ln1_w, blk.ln1_b);
    project_heads(blk, xn, false, q, k, v);  // (B, H, Tn, hd), (B, Hkv, Tn, hd)
    Tensor sums;  // forgetting attention: the new positions' sums (B, H, Tn), continuing each row's
    if (!cache.forget.empty()) {
      std::vector<Tensor> starts;  // each run's last cached sums (B, H, 1); none at position 0
      bool any = false;
      for (const DecodeRun& r : runs) {
        any |= r.pos > 0;
        starts.push_back(r.pos > 0
                             ? cache.forget[l].narrow(0, r.first, r.rows).narrow(2, r.pos - 1, 1)
                             : zeros({r.rows, cfg_.n_head, 1}, cache.forget[l].options()));
      }
      const Tensor start = starts.size() == 1 ? starts[0].contiguous() : ops::concat(starts, 0);
      sums = forget_sums(blk, xn, any ? start.reshape({B, cfg_.n_head}) : Tensor());
    }
    std::vector<Tensor> ys;
    for (const DecodeRun& r : runs) {
      // The run's new queries sit at positions [pos, pos + Tn) of its filled keys
      // [0, pos + Tn): the same kernels as forward(), with a query offset, on the cache's device,
      // reading the filled prefix in place (backend/attention_shapes.h).
      const int64_t end = r.pos + Tn;
      Tensor qr = q.narrow(0, r.first, r.rows), kr = k.narrow(0, r.first, r.rows);
      rotate(qr, kr, r.pos);
      const Tensor keys = cache.k[l].narrow(0, r.first, r.rows),
                   values = cache.v[l].narrow(0, r.first, r.rows);
      keys.narrow(2, r.pos, Tn).copy_(kr);
      values.narrow(2, r.pos, Tn).copy_(v.narrow(0, r.first, r.rows));
      Tensor forget;
      if (sums.defined()) {
        const Tensor rows = cache.forget[l].narrow(0, r.first, r.rows);
        rows.narrow(2, r.pos, Tn).copy_(sums.narrow(0, r.first, r.rows));
        forget = rows.narrow(2, 0, end).contiguous();
      }
      ys.push_back(attend(qr, keys.narrow(2, 0, end), values.narrow(2, 0, end), false, forget));
    }
    Tensor h = merge_heads(blk, ys.size() == 1 ? ys[0] : ops::concat(ys, 0), x, false);
    x = mlp(blk, norm(h, blk.ln2_w, blk.ln2_b), h, false);
  }
  if (last_only && Tn > 1) x = x.narrow(1, Tn - 1, 1).contiguous();
  return head(norm(x, lnf_w_, lnf_b_), false, false);
}

Tensor GPT::scored(const Tensor& inputs, const Tensor& targets, bool training, RouterLosses* router,
                   Tensor* penalty, const Scorer& score) const {
  const Device dev = wte_.defined() ? wte_.device() : inputs.device();
  // A mixture's router losses, while training with a coefficient or asked for the balance.
  const bool penalised = (cfg_.router_aux_loss > 0 || cfg_.router_z_loss > 0) && grad_enabled();
  std::vector<RouterLosses> aux;
  std::vector<RouterLosses>* blocks_aux =
      cfg_.n_expert > 0 && training && (router || penalised) ? &aux : nullptr;
  if (router) *router = {};
  if (penalty) *penalty = Tensor();
  Tensor out;
  if (!inputs.device().is_cpu() || dev.is_cpu()) {
    out = score(forward_from(inputs, Tensor(), training, blocks_aux), targets, Tensor());
  } else {
    // A host batch for a model on a device: uploaded once, its ids checked from the host copies.
    TESSERA_CHECK(targets.device().is_cpu(), "GPT: inputs on the host but targets on ",
                  targets.device().str(), " (", targets.str(), ")");
    out =
        score(forward_from(inputs.to(dev), inputs, training, blocks_aux), targets.to(dev), targets);
  }
  if (aux.empty()) return out;
  Tensor balances = aux[0].balance, zs = aux[0].z;
  for (size_t i = 1; i < aux.size(); ++i)
    balances = ops::add(balances, aux[i].balance), zs = ops::add(zs, aux[i].z);
  if (router) *router = {balances.detach(), zs.detach()};
  if (penalised && penalty)
    *penalty =
        ops::add(ops::scale(balances, cfg_.router_aux_loss), ops::scale(zs, cfg_.router_z_loss));
  return out;
}

Tensor GPT::loss(const Tensor& inputs, const Tensor& targets, bool training, double fused_dy,
                 RouterLosses* router) const {
  // The padded logits go to the cross-entropy whole; only the vocabulary's columns are classes.
  Tensor p;
  const Tensor loss =
      scored(inputs, targets, training, router, &p,
             [&](const Tensor& logits, const Tensor& t, const Tensor& host) {
               return ops::cross_entropy(logits, t, -100, host, cfg_.vocab_size, fused_dy);
             });
  if (!p.defined()) return loss;
  // The router losses join the gradient but not the value: p - detach(p) is exactly 0, so the
  // loss returned (logged, compared for spikes) is the cross-entropy's, bit for bit, and its
  // gradient carries router_aux_loss x d(balance) + router_z_loss x d(z).
  return ops::add(loss, ops::sub(p, p.detach()).to(loss.dtype()));
}

Tensor GPT::token_losses(const Tensor& inputs, const Tensor& targets, bool training,
                         RouterLosses* router, Tensor* penalty) const {
  return scored(inputs, targets, training, router, penalty,
                [&](const Tensor& logits, const Tensor& t, const Tensor& host) {
                  return ops::token_losses(logits, t, -100, host, cfg_.vocab_size);
                });
}

}  // namespace tessera::nn
