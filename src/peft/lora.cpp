// LoRA adapters and the NF4 base, as a LinearHook of nn::GPT. See lora.h.
#include "peft/lora.h"

#include <algorithm>
#include <cmath>

#include "autograd/autograd.h"
#include "core/text.h"
#include "ops/ops.h"

namespace tessera::peft {

namespace {

constexpr nn::Proj kAll[] = {nn::Proj::Q,    nn::Proj::K,  nn::Proj::V,    nn::Proj::O,
                             nn::Proj::Gate, nn::Proj::Up, nn::Proj::Down, nn::Proj::Head};

}  // namespace

double LoraOptions::scaling() const {
  return rslora ? alpha / std::sqrt(double(rank)) : alpha / double(rank);
}

std::vector<nn::Proj> parse_targets(const std::string& text) {
  std::vector<nn::Proj> out;
  for (const std::string& item : split_list(text)) {
    if (item == "all") {
      for (nn::Proj p : kAll)
        if (p != nn::Proj::Head && std::find(out.begin(), out.end(), p) == out.end())
          out.push_back(p);
      continue;
    }
    const nn::Proj* hit = std::find_if(std::begin(kAll), std::end(kAll),
                                       [&](nn::Proj p) { return item == nn::proj_name(p); });
    TESSERA_CHECK(hit != std::end(kAll), "lora.targets: unknown projection '", item,
                  "' (valid: q, k, v, o, gate, up, down, head, all)");
    if (std::find(out.begin(), out.end(), *hit) == out.end()) out.push_back(*hit);
  }
  TESSERA_CHECK(!out.empty(), "lora.targets: no projection named in '", text, "'");
  // Model order, whatever order the text used: adapter names and checkpoints do not depend on it.
  std::sort(out.begin(), out.end());
  return out;
}

std::string targets_string(const std::vector<nn::Proj>& targets) {
  std::string s;
  for (nn::Proj p : targets) {
    if (!s.empty()) s += ',';
    s += nn::proj_name(p);
  }
  return s;
}

std::string Lora::key(nn::Proj p, int64_t layer) {
  return std::to_string(layer) + "/" + nn::proj_name(p);
}

Lora::Lora(nn::GPT& model, const LoraOptions& opt, Generator& gen)
    : model_(model), opt_(opt), scaling_(opt.scaling()), base_parameters_(model.num_parameters()) {
  const nn::GPTConfig& cfg = model.config();
  TESSERA_CHECK(opt.rank > 0, "lora.rank must be positive, got ", opt.rank);
  TESSERA_CHECK(opt.alpha > 0, "lora.alpha must be positive, got ", opt.alpha);
  TESSERA_CHECK(opt.dropout >= 0 && opt.dropout < 1, "lora.dropout must be in [0, 1), got ",
                opt.dropout);
  TESSERA_CHECK(opt.quantize == "none" || opt.quantize == "nf4" || opt.quantize == "nf4-dq",
                "lora.quantize must be none, nf4 or nf4-dq; got '", opt.quantize, "'");
  TESSERA_CHECK(!model.hook(), "Lora: the model already has a hook");
  // A GELU MLP has no gate: "all" names it anyway (config validation refuses an explicit 'gate').
  if (cfg.mlp != nn::MlpKind::SwiGLU)
    std::erase(opt_.targets, nn::Proj::Gate);
  for (nn::Proj p : opt_.targets) {
    TESSERA_CHECK(p != nn::Proj::Head || !cfg.tie_embeddings,
                  "lora.targets: 'head' needs an untied head (model.tie_embeddings: false); the "
                  "tied matrix is also the token embedding, so its update could not be merged");
  }

  NoGradGuard no_grad;
  for (const auto& [name, t] : model.parameters()) Tensor(t).requires_grad_(false);
  if (opt.quantize != "none") {
    const std::vector<std::string> names = model.block_linear_weights();
    for (const std::string& n : names)
      nf4_.emplace(n, nf4_quantize(model.parameter(n), opt.quantize == "nf4-dq"));
    model.release_parameters(names);  // the f32 copies go; the codes stand in for them
  }

  const int64_t C = cfg.n_embd, Hq = cfg.n_head * cfg.head_dim();
  const int64_t Hkv = cfg.kv_heads() * cfg.head_dim(), F = cfg.hidden();
  // f32 adapters on a bf16 model (lora.h); f32 and f64 models get their own dtype.
  const Options model_o = model.parameters().front().second.options();
  const Options o{model_o.dtype == DType::BF16 ? DType::F32 : model_o.dtype, model_o.device};
  auto add = [&](nn::Proj p, int64_t layer, int64_t in, int64_t out) {
    const std::string module = model.module_name(p, layer);
    // B A has rank <= min(in, out): more adds parameters, not capacity (config/validate.cpp
    // refuses it in the config's terms; this covers every caller).
    TESSERA_CHECK(opt.rank <= std::min(in, out), "lora rank ", opt.rank, " exceeds min(in, out) = ",
                  std::min(in, out), " of ", module, " (", out, " x ", in, ")");
    const double bound = 1.0 / std::sqrt(double(in));  // kaiming_uniform_(a = sqrt 5)
    std::vector<double> u = rand({opt.rank, in}, gen, DType::F64).to_vector<double>();
    for (double& v : u) v = (2 * v - 1) * bound;
    Tensor A = from_vector(u, {opt.rank, in}, o);
    Tensor B = zeros({out, opt.rank}, o);
    A.requires_grad_(), B.requires_grad_();
    A.set_name(module + ".lora_A.weight");
    B.set_name(module + ".lora_B.weight");
    adapters_[key(p, layer)] = Adapter{params_.size(), params_.size() + 1};
    params_.emplace_back(A.name(), A);
    params_.emplace_back(B.name(), B);
  };
  for (int64_t l = 0; l < cfg.n_layer; ++l)
    for (nn::Proj p : opt_.targets) {
      switch (p) {
        case nn::Proj::Q: add(p, l, C, Hq); break;
        case nn::Proj::K:
        case nn::Proj::V: add(p, l, C, Hkv); break;
        case nn::Proj::O: add(p, l, Hq, C); break;
        case nn::Proj::Gate:
        case nn::Proj::Up: add(p, l, C, F); break;
        case nn::Proj::Down: add(p, l, F, C); break;
        case nn::Proj::Head: break;
      }
    }
  if (std::find(opt_.targets.begin(), opt_.targets.end(), nn::Proj::Head) != opt_.targets.end())
    add(nn::Proj::Head, -1, C, cfg.vocab_size);
  add_trainable();
  model.set_hook(this);
}

void Lora::replace_parameters(const std::vector<Tensor>& tensors) {
  TESSERA_CHECK(tensors.size() == params_.size(), "Lora::replace_parameters: ", tensors.size(),
                " tensors for ", params_.size(), " adapter parameters");
  for (size_t i = 0; i < tensors.size(); ++i)
    TESSERA_CHECK(tensors[i].shape() == params_[i].second.shape(), "Lora::replace_parameters: ",
                  params_[i].first, " has shape ", shape_str(params_[i].second.shape()), ", got ",
                  shape_str(tensors[i].shape()));
  for (size_t i = 0; i < tensors.size(); ++i) params_[i].second = tensors[i];
}

void Lora::place(Device device) {
  NoGradGuard no_grad;
  for (auto& [name, q] : nf4_) q = q.to(device);
  std::map<std::string, Tensor> model_params(model_.parameters().begin(),
                                             model_.parameters().end());
  for (auto& [name, t] : params_) {
    // A model tensor trained beside the adapters (lora.trainable) is the model's own: take the one
    // place_model put there, in the model's dtype.
    if (auto it = model_params.find(name); it != model_params.end()) {
      t = it->second;
      continue;
    }
    if (t.device() == device) continue;
    Tensor d = t.detach().to(device);
    d.requires_grad_();
    d.set_name(name);
    t = d;
  }
}

const NF4Tensor* Lora::nf4(const std::string& weight) const {
  auto it = nf4_.find(weight);
  return it == nf4_.end() ? nullptr : &it->second;
}

Lora::~Lora() {
  if (model_.hook() == this) model_.set_hook(nullptr);
}

int64_t Lora::base_bytes() const {
  int64_t n = 0;
  for (const auto& [name, t] : model_.parameters()) n += int64_t(t.nbytes());
  for (const auto& [name, q] : nf4_) n += q.nbytes();
  return n;
}

int64_t Lora::adapter_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel();
  return n;
}

int64_t Lora::adapter_bytes() const {
  int64_t n = 0;
  for (const auto& [name, t] : params_) n += int64_t(t.nbytes());
  return n;
}

Tensor Lora::base(const std::string& weight, const Tensor& x, const Tensor& w,
                  const Tensor& b) const {
  auto it = nf4_.find(weight);
  if (it != nf4_.end()) return nf4_linear(x, it->second, b);
  return ops::linear(x, w, b);
}

Tensor Lora::adapt(nn::Proj p, int64_t layer, const Tensor& x, const Tensor& y,
                   bool training) const {
  auto it = adapters_.find(key(p, layer));
  if (it == adapters_.end()) return y;
  const Tensor xd = opt_.dropout > 0 ? ops::dropout(x, opt_.dropout, training) : x;
  // f32 adapters on bf16 activations compute in bf16 (lora.h); on the CPU the dtypes agree and
  // to() returns the adapter itself.
  const Tensor A = params_[it->second.a].second.to(xd.dtype());
  const Tensor B = params_[it->second.b].second.to(xd.dtype());
  const Tensor delta = ops::linear(ops::linear(xd, A), B);
  return ops::add(y, ops::scale(delta, scaling_));
}

bool Lora::adapts(nn::Proj p, int64_t layer) const { return adapters_.count(key(p, layer)) > 0; }

void Lora::merge_into(nn::GPT& dst) const {
  TESSERA_CHECK(!dst.hook(), "merge_into: the destination model has a hook");
  NoGradGuard no_grad;
  const nn::GPTConfig& cfg = model_.config();
  std::map<std::string, Tensor> merged;
  for (const auto& [name, t] : model_.parameters()) merged[name] = t.detach().clone();
  for (const auto& [name, q] : nf4_)
    merged[name] = nf4_dequantize(q, dst.parameter(name).dtype());  // dequantise, then add
  const int64_t Hq = cfg.n_head * cfg.head_dim(), Hkv = cfg.kv_heads() * cfg.head_dim();
  for (int64_t l = -1; l < cfg.n_layer; ++l)
    for (nn::Proj p : opt_.targets) {
      if ((l < 0) != (p == nn::Proj::Head)) continue;
      const Adapter& ad = adapters_.at(key(p, l));
      const Tensor& A = params_[ad.a].second;
      const Tensor& B = params_[ad.b].second;
      std::string module = model_.module_name(p, l);
      int64_t row0 = 0;  // GPT-2's q, k, v are row blocks of the fused c_attn weight
      if (cfg.gpt2_names() && (p == nn::Proj::Q || p == nn::Proj::K || p == nn::Proj::V)) {
        module.resize(module.size() - 2);  // "....c_attn.q" -> "....c_attn"
        row0 = p == nn::Proj::Q ? 0 : p == nn::Proj::K ? Hq : Hq + Hkv;
      }
      Tensor& w = merged.at(module + ".weight");
      Tensor rows = w.narrow(0, row0, B.size(0));
      Tensor delta = ops::scale(ops::matmul(B, A), scaling_);
      rows.copy_(ops::add(rows, delta.to(rows.dtype())));
    }
  for (const auto& [name, t] : dst.parameters()) {
    auto it = merged.find(name);
    TESSERA_CHECK(it != merged.end() && it->second.shape() == t.shape(), "merge_into: ", name,
                  " has no counterpart of shape ", shape_str(t.shape()), " in the adapted model");
    Tensor(t).copy_(it->second);
  }
}

}  // namespace tessera::peft
