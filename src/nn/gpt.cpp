// GPT forward pass, composed from differentiable ops: every gradient comes from the ops' own
// backward closures, so there is no model-level backward to keep in sync.
#include "nn/gpt.h"

#include <algorithm>
#include <cmath>

#include "autograd/autograd.h"
#include "ops/ops.h"

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
  TESSERA_CHECK(n_embd % n_head == 0, "model: n_embd ", n_embd, " is not a multiple of n_head ",
                n_head);
  TESSERA_CHECK(kv_heads() > 0 && n_head % kv_heads() == 0, "model: n_head ", n_head,
                " is not a multiple of n_kv_head ", kv_heads());
  TESSERA_CHECK(position != PositionKind::RoPE || head_dim() % 2 == 0,
                "model: rope needs an even head dimension, got n_embd / n_head = ", head_dim());
  TESSERA_CHECK(dropout >= 0 && dropout < 1, "model: dropout ", dropout, " is outside [0, 1)");
}

GPT::GPT(const GPTConfig& cfg, Generator& gen, DType dtype) : cfg_(cfg), dtype_(dtype) {
  cfg_.validate();
  NoGradGuard no_grad;
  const int64_t C = cfg_.n_embd, L = cfg_.n_layer, hd = cfg_.head_dim();
  const int64_t Hq = cfg_.n_head * hd, Hkv = cfg_.kv_heads() * hd, F = cfg_.hidden();
  const double std = 0.02, resid_std = 0.02 / std::sqrt(2.0 * double(L));
  auto normal = [&](Shape s, double sd) { return ops::scale(randn(s, gen, dtype_), sd); };
  auto zero = [&](Shape s) { return zeros(s, dtype_); };
  auto one = [&](Shape s) { return ones(s, dtype_); };
  const bool g2 = cfg_.gpt2_names(), ln = cfg_.norm == NormKind::LayerNorm;
  const std::string root = g2 ? "transformer." : "model.";

  add_param(root + (g2 ? "wte.weight" : "embed_tokens.weight"), normal({cfg_.vocab_size, C}, std));
  if (cfg_.position == PositionKind::Learned)
    add_param(root + (g2 ? "wpe.weight" : "embed_positions.weight"),
              normal({cfg_.block_size, C}, std));
  auto norm_params = [&](const std::string& name) {
    add_param(name + ".weight", one({C}));
    if (ln && cfg_.bias) add_param(name + ".bias", zero({C}));
  };
  auto linear = [&](const std::string& name, int64_t out, int64_t in, double sd) {
    add_param(name + ".weight", normal({out, in}, sd));
    if (cfg_.bias) add_param(name + ".bias", zero({out}));
  };
  for (int64_t i = 0; i < L; ++i) {
    const std::string p = root + (g2 ? "h." : "layers.") + std::to_string(i) + ".";
    if (g2) {
      norm_params(p + "ln_1");
      linear(p + "attn.c_attn", Hq + 2 * Hkv, C, std);
      linear(p + "attn.c_proj", C, Hq, resid_std);
      norm_params(p + "ln_2");
      linear(p + "mlp.c_fc", F, C, std);
      linear(p + "mlp.c_proj", C, F, resid_std);
    } else {
      norm_params(p + "input_layernorm");
      linear(p + "self_attn.q_proj", Hq, C, std);
      linear(p + "self_attn.k_proj", Hkv, C, std);
      linear(p + "self_attn.v_proj", Hkv, C, std);
      linear(p + "self_attn.o_proj", C, Hq, resid_std);
      norm_params(p + "post_attention_layernorm");
      if (cfg_.mlp == MlpKind::SwiGLU) linear(p + "mlp.gate_proj", F, C, std);
      linear(p + "mlp.up_proj", F, C, std);
      linear(p + "mlp.down_proj", C, F, resid_std);
    }
  }
  norm_params(root + (g2 ? "ln_f" : "norm"));
  if (!cfg_.tie_embeddings) add_param("lm_head.weight", normal({cfg_.vocab_size, C}, std));
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
  const bool g2 = cfg_.gpt2_names();
  std::vector<std::string> out;
  for (const Block& b : blocks_) {
    const std::vector<const char*> mods =
        g2 ? std::vector<const char*>{"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}
           : std::vector<const char*>{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                      "mlp.down_proj"};
    for (const char* m : mods)
      if (g2 || cfg_.mlp == MlpKind::SwiGLU || std::string(m) != "mlp.gate_proj")
        out.push_back(b.prefix + m + ".weight");
  }
  return out;
}

std::string GPT::module_name(Proj p, int64_t layer) const {
  if (p == Proj::Head) return "lm_head";
  TESSERA_CHECK(layer >= 0 && layer < cfg_.n_layer, "module_name: layer ", layer, " of ",
                cfg_.n_layer);
  const std::string& pre = blocks_[size_t(layer)].prefix;
  if (cfg_.gpt2_names()) {
    switch (p) {
      case Proj::Q: return pre + "attn.c_attn.q";
      case Proj::K: return pre + "attn.c_attn.k";
      case Proj::V: return pre + "attn.c_attn.v";
      case Proj::O: return pre + "attn.c_proj";
      case Proj::Up: return pre + "mlp.c_fc";
      case Proj::Down: return pre + "mlp.c_proj";
      default: TESSERA_FAIL("a GELU MLP has no gate projection");
    }
  }
  switch (p) {
    case Proj::Q: return pre + "self_attn.q_proj";
    case Proj::K: return pre + "self_attn.k_proj";
    case Proj::V: return pre + "self_attn.v_proj";
    case Proj::O: return pre + "self_attn.o_proj";
    case Proj::Gate:
      TESSERA_CHECK(cfg_.mlp == MlpKind::SwiGLU, "a GELU MLP has no gate projection");
      return pre + "mlp.gate_proj";
    case Proj::Up: return pre + "mlp.up_proj";
    default: return pre + "mlp.down_proj";
  }
}

void GPT::bind() {
  auto opt = [&](const std::string& name) {
    for (const auto& [n, t] : params_)
      if (n == name) return t;
    return Tensor();
  };
  const bool g2 = cfg_.gpt2_names();
  const std::string root = g2 ? "transformer." : "model.";
  wte_ = opt(root + (g2 ? "wte.weight" : "embed_tokens.weight"));
  wpe_ = opt(root + (g2 ? "wpe.weight" : "embed_positions.weight"));
  lnf_w_ = opt(root + (g2 ? "ln_f.weight" : "norm.weight"));
  lnf_b_ = opt(root + (g2 ? "ln_f.bias" : "norm.bias"));
  head_ = cfg_.tie_embeddings ? wte_ : opt("lm_head.weight");
  blocks_.assign(size_t(cfg_.n_layer), Block{});
  for (int64_t i = 0; i < cfg_.n_layer; ++i) {
    Block& b = blocks_[size_t(i)];
    const std::string p = root + (g2 ? "h." : "layers.") + std::to_string(i) + ".";
    b.index = i, b.prefix = p;
    if (g2) {
      b.ln1_w = opt(p + "ln_1.weight"), b.ln1_b = opt(p + "ln_1.bias");
      b.qkv_w = opt(p + "attn.c_attn.weight"), b.qkv_b = opt(p + "attn.c_attn.bias");
      b.o_w = opt(p + "attn.c_proj.weight"), b.o_b = opt(p + "attn.c_proj.bias");
      b.ln2_w = opt(p + "ln_2.weight"), b.ln2_b = opt(p + "ln_2.bias");
      b.fc_w = opt(p + "mlp.c_fc.weight"), b.fc_b = opt(p + "mlp.c_fc.bias");
      b.down_w = opt(p + "mlp.c_proj.weight"), b.down_b = opt(p + "mlp.c_proj.bias");
    } else {
      b.ln1_w = opt(p + "input_layernorm.weight"), b.ln1_b = opt(p + "input_layernorm.bias");
      b.q_w = opt(p + "self_attn.q_proj.weight"), b.q_b = opt(p + "self_attn.q_proj.bias");
      b.k_w = opt(p + "self_attn.k_proj.weight"), b.k_b = opt(p + "self_attn.k_proj.bias");
      b.v_w = opt(p + "self_attn.v_proj.weight"), b.v_b = opt(p + "self_attn.v_proj.bias");
      b.o_w = opt(p + "self_attn.o_proj.weight"), b.o_b = opt(p + "self_attn.o_proj.bias");
      b.ln2_w = opt(p + "post_attention_layernorm.weight");
      b.ln2_b = opt(p + "post_attention_layernorm.bias");
      b.gate_w = opt(p + "mlp.gate_proj.weight"), b.gate_b = opt(p + "mlp.gate_proj.bias");
      b.fc_w = opt(p + "mlp.up_proj.weight"), b.fc_b = opt(p + "mlp.up_proj.bias");
      b.down_w = opt(p + "mlp.down_proj.weight"), b.down_b = opt(p + "mlp.down_proj.bias");
    }
  }
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

void GPT::project_qkv(const Block& blk, const Tensor& x, int64_t pos0, bool training, Tensor& q,
                      Tensor& k, Tensor& v) const {
  const int64_t B = x.size(0), T = x.size(1), H = cfg_.n_head, Hkv = cfg_.kv_heads();
  const int64_t hd = cfg_.head_dim(), l = blk.index;
  const std::string& p = blk.prefix;
  if (cfg_.gpt2_names()) {
    Tensor qkv = linear(p + "attn.c_attn", x, blk.qkv_w, blk.qkv_b);  // (B, T, (H + 2 Hkv) hd)
    q = qkv.narrow(2, 0, H * hd);
    k = qkv.narrow(2, H * hd, Hkv * hd);
    v = qkv.narrow(2, (H + Hkv) * hd, Hkv * hd);
  } else {
    q = linear(p + "self_attn.q_proj", x, blk.q_w, blk.q_b);
    k = linear(p + "self_attn.k_proj", x, blk.k_w, blk.k_b);
    v = linear(p + "self_attn.v_proj", x, blk.v_w, blk.v_b);
  }
  q = adapt(Proj::Q, l, x, q, training);
  k = adapt(Proj::K, l, x, k, training);
  v = adapt(Proj::V, l, x, v, training);
  auto heads = [&](const Tensor& t, int64_t n) {  // (B, T, n hd) -> (B, n, T, hd)
    return t.reshape({B, T, n, hd}).permute({0, 2, 1, 3}).contiguous();
  };
  q = heads(q, H);
  k = heads(k, Hkv);
  v = heads(v, Hkv);
  if (cfg_.position == PositionKind::RoPE) {
    const ops::RopeFreqs freqs = rope_freqs_for(cfg_, pos0 + T);  // model.rope_scaling applied
    q = ops::rope(q, freqs, pos0);
    k = ops::rope(k, freqs, pos0);
  }
}

Tensor GPT::merge_heads(const Block& blk, const Tensor& y, bool training) const {
  const int64_t B = y.size(0), T = y.size(2);
  Tensor m = y.permute({0, 2, 1, 3}).reshape({B, T, y.size(1) * y.size(3)});  // (B, T, C)
  Tensor o = linear(blk.prefix + (cfg_.gpt2_names() ? "attn.c_proj" : "self_attn.o_proj"), m,
                    blk.o_w, blk.o_b);
  return ops::dropout(adapt(Proj::O, blk.index, m, o, training), cfg_.dropout, training);
}

// q (B, H, T, hd), k and v (B, Hkv, T, hd) -> (B, H, T, hd) with the configured attention.
Tensor GPT::attend(const Tensor& q, const Tensor& k, const Tensor& v, bool training) const {
  ops::AttentionFn inner = [this](const Tensor& q, const Tensor& k, const Tensor& v) {
    if (cfg_.attention == AttentionKind::Softmax) {
      // On the GPU the fused flash kernel (its tensor-core path takes head dims 64 and 128; other
      // sizes use the materialised CUDA kernel); on the CPU the materialised reference, which is
      // faster there than the flash reference's double loops.
      const bool flash = !q.device().is_cpu() && (q.size(3) == 64 || q.size(3) == 128);
      return flash ? ops::flash_attention(q, k, v) : ops::attention(q, k, v);
    }
    ops::StickBreakingOptions o;
    o.attend_current = cfg_.attend_current;
    o.remainder = cfg_.sb_remainder ? ops::StickBreakingRemainder::Current
                                    : ops::StickBreakingRemainder::None;
    return ops::stick_breaking_attention(q, k, v, o);
  };
  // S^2-Attn is a training-time approximation (LongLoRA); evaluation and generation attend fully.
  if (cfg_.s2_attn && training) return ops::shifted_sparse_attention(q, k, v, q.size(2) / 4, inner);
  return inner(q, k, v);
}

// x (B, T, C) -> (B, T, C)
Tensor GPT::attention(const Block& blk, const Tensor& x, bool training) const {
  Tensor q, k, v;
  project_qkv(blk, x, 0, training, q, k, v);
  return merge_heads(blk, attend(q, k, v, training), training);
}

Tensor GPT::mlp(const Block& blk, const Tensor& x, bool training) const {
  const bool g2 = cfg_.gpt2_names();
  const std::string& p = blk.prefix;
  const int64_t l = blk.index;
  Tensor up = adapt(Proj::Up, l, x,
                    linear(p + (g2 ? "mlp.c_fc" : "mlp.up_proj"), x, blk.fc_w, blk.fc_b), training);
  Tensor h;
  if (cfg_.mlp == MlpKind::SwiGLU) {
    Tensor gate = linear(p + "mlp.gate_proj", x, blk.gate_w, blk.gate_b);
    h = ops::swiglu(adapt(Proj::Gate, l, x, gate, training), up);
  } else {
    h = ops::gelu(up);
  }
  Tensor down = linear(p + (g2 ? "mlp.c_proj" : "mlp.down_proj"), h, blk.down_w, blk.down_b);
  return ops::dropout(adapt(Proj::Down, l, h, down, training), cfg_.dropout, training);
}

// (B, T, C) -> logits (B, T, V); a tied head is the token embedding's Linear.
Tensor GPT::head(const Tensor& x, bool training) const {
  const bool g2 = cfg_.gpt2_names();
  const std::string module = !cfg_.tie_embeddings ? "lm_head"
                             : g2                 ? "transformer.wte"
                                                  : "model.embed_tokens";
  return adapt(Proj::Head, -1, x, linear(module, x, head_, Tensor()), training);
}

// Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(.)).
Tensor GPT::block(const Block& blk, const Tensor& x, bool training) const {
  Tensor h = ops::add(x, attention(blk, norm(x, blk.ln1_w, blk.ln1_b), training));
  return ops::add(h, mlp(blk, norm(h, blk.ln2_w, blk.ln2_b), training));
}

// inputs (B, T) i32 at positions pos0 + t -> (B, T, C)
Tensor GPT::embed(const Tensor& inputs, int64_t pos0, bool training) const {
  TESSERA_CHECK(inputs.dim() == 2 && inputs.dtype() == DType::I32,
                "GPT: inputs must be (B, T) i32, got ", inputs.str());
  const int64_t B = inputs.size(0), T = inputs.size(1);
  TESSERA_CHECK(cfg_.position != PositionKind::Learned || pos0 + T <= cfg_.block_size,
                "GPT: sequence length ", pos0 + T, " exceeds block_size ", cfg_.block_size,
                " of the learned position embedding");
  Tensor x = ops::embedding(wte_, inputs);
  if (wpe_.defined()) {
    std::vector<int32_t> pos(size_t(B * T));
    for (int64_t i = 0; i < B * T; ++i) pos[size_t(i)] = int32_t(pos0 + i % T);
    Tensor pos_ids = from_vector<int32_t>(pos, {B, T}, {DType::I32, inputs.device()});
    x = ops::add(x, ops::embedding(wpe_, pos_ids));
  }
  return ops::dropout(x, cfg_.dropout, training);
}

Tensor GPT::forward(const Tensor& inputs, bool training) const {
  Tensor x = embed(inputs, 0, training);  // (B, T, C)
  for (const Block& blk : blocks_) {
    if (cfg_.recompute && training && grad_enabled()) {
      x = recompute([this, blk, training](const std::vector<Tensor>& in) {
        return block(blk, in[0], training);
      }, {x});
    } else {
      x = block(blk, x, training);
    }
  }
  return head(norm(x, lnf_w_, lnf_b_), training);  // (B, T, V)
}

KVCache GPT::make_cache(int64_t batch, int64_t capacity) const {
  KVCache c;
  c.capacity = capacity;
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    c.k.push_back(zeros({batch, cfg_.kv_heads(), capacity, cfg_.head_dim()}, wte_.options()));
    c.v.push_back(zeros({batch, cfg_.kv_heads(), capacity, cfg_.head_dim()}, wte_.options()));
  }
  return c;
}

namespace {

double softplus(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }

// Causal attention of new queries q (B, H, Tn, hd) at positions [L - Tn, L) over cached keys and
// values k, v (B, Hkv, capacity, hd) of which [0, L) are filled, softmax or stick-breaking as cfg
// says (the same math as ops::attention / ops::stick_breaking_attention). Inference only, on the
// host, in double.
Tensor cached_attention(const GPTConfig& cfg, const Tensor& q, const Tensor& k, const Tensor& v,
                        int64_t L) {
  const int64_t B = q.size(0), H = q.size(1), Tn = q.size(2), hd = q.size(3);
  const int64_t Hkv = k.size(1), cap = k.size(2), group = H / Hkv;
  std::vector<double> Q = q.to(DType::F64).to_vector<double>();
  std::vector<double> K = k.to(DType::F64).to_vector<double>();
  std::vector<double> V = v.to(DType::F64).to_vector<double>();
  std::vector<double> out(static_cast<size_t>(B * H * Tn * hd), 0.0), s(static_cast<size_t>(L));
  const double scale = 1.0 / std::sqrt(double(hd));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tn; ++i) {
        const int64_t pos = L - Tn + i;  // attends to keys 0..pos
        const double* qi = &Q[size_t(((b * H + h) * Tn + i) * hd)];
        const int64_t kvh = (b * Hkv + h / group) * cap;
        double* oi = &out[size_t(((b * H + h) * Tn + i) * hd)];
        auto dot_k = [&](int64_t j) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) dot += qi[d] * K[size_t((kvh + j) * hd + d)];
          return dot * scale;
        };
        if (cfg.attention == AttentionKind::StickBreaking) {
          // Keys from the nearest back: A_j = beta_j * prod of (1 - beta) of the keys after j,
          // accumulated as a log (Tan et al. 2024).
          double log_rest = 0;  // sum of log(1 - beta) over the keys already visited
          for (int64_t j = cfg.attend_current ? pos : pos - 1; j >= 0; --j) {
            const double z = dot_k(j);
            const double a = std::exp(log_rest + z - softplus(z));
            for (int64_t d = 0; d < hd; ++d) oi[d] += a * V[size_t((kvh + j) * hd + d)];
            log_rest -= softplus(z);
          }
          if (cfg.sb_remainder)
            for (int64_t d = 0; d < hd; ++d) oi[d] += std::exp(log_rest) * V[size_t((kvh + pos) * hd + d)];
          continue;
        }
        double m = -1e300, z = 0;
        for (int64_t j = 0; j <= pos; ++j) {
          s[size_t(j)] = dot_k(j);
          m = std::max(m, s[size_t(j)]);
        }
        for (int64_t j = 0; j <= pos; ++j) z += (s[size_t(j)] = std::exp(s[size_t(j)] - m));
        for (int64_t j = 0; j <= pos; ++j)
          for (int64_t d = 0; d < hd; ++d) oi[d] += s[size_t(j)] / z * V[size_t((kvh + j) * hd + d)];
      }
  return from_vector<double>(out, {B, H, Tn, hd}).to(q.dtype());
}

}  // namespace

Tensor GPT::forward_cached(const Tensor& inputs, KVCache& cache) const {
  NoGradGuard no_grad;
  const int64_t Tn = inputs.size(1), L0 = cache.length;
  TESSERA_CHECK(L0 + Tn <= cache.capacity, "GPT::forward_cached: ", L0 + Tn,
                " positions exceed the cache capacity ", cache.capacity);
  Tensor x = embed(inputs, L0, false);
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const Block& blk = blocks_[l];
    Tensor q, k, v;
    project_qkv(blk, norm(x, blk.ln1_w, blk.ln1_b), L0, false, q, k, v);
    cache.k[l].narrow(2, L0, Tn).copy_(k);
    cache.v[l].narrow(2, L0, Tn).copy_(v);
    Tensor y = cached_attention(cfg_, q, cache.k[l], cache.v[l], L0 + Tn);
    Tensor h = ops::add(x, merge_heads(blk, y, false));
    x = ops::add(h, mlp(blk, norm(h, blk.ln2_w, blk.ln2_b), false));
  }
  cache.length = L0 + Tn;
  return head(norm(x, lnf_w_, lnf_b_), false);
}

Tensor GPT::loss(const Tensor& inputs, const Tensor& targets, bool training) const {
  return ops::cross_entropy(forward(inputs, training), targets);
}

}  // namespace tessera::nn
