// Hugging Face directories: export and import (hf_dir.h). Field names and defaults are those of
// transformers' GPT2Config and LlamaConfig (configuration_gpt2.py, configuration_llama.py); a
// mixture of experts' keys are hf_moe.cpp's.
#include "train/hf_dir.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "checkpoint/json.h"
#include "checkpoint/safetensors.h"
#include "config/schema.h"
#include "data/tokenizer.h"
#include "nn/hf_names.h"
#include "train/hf_moe.h"
#include "train/options.h"

namespace fs = std::filesystem;

namespace tessera::train {

namespace {

// ---- writing JSON: an ordered object of already-encoded values ----

std::string num(double v) { return json_exact(v); }
std::string num(int64_t v) { return std::to_string(v); }
std::string boolean(bool v) { return v ? "true" : "false"; }
std::string str(const std::string& s) { return "\"" + json_escape(s) + "\""; }

struct JsonObject {
  std::vector<std::pair<std::string, std::string>> fields;
  JsonObject& set(const std::string& k, const std::string& encoded) {
    fields.emplace_back(k, encoded);
    return *this;
  }
  std::string text(int indent = 2) const {
    const std::string pad(size_t(indent), ' '), close(size_t(indent - 2), ' ');
    std::string out = "{\n";
    for (size_t i = 0; i < fields.size(); ++i)
      out += pad + str(fields[i].first) + ": " + fields[i].second +
             (i + 1 < fields.size() ? ",\n" : "\n");
    return out + close + "}";
  }
};

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  TESSERA_CHECK(f, p.string(), ": cannot open");
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << text;
  f.flush();
  TESSERA_CHECK(f, p.string(), ": write failed");
}

const char* torch_dtype(DType t) { return t == DType::BF16 ? "bfloat16" : "float32"; }

// The files of data.tokenizer_dir an export copies (tokenizer.h).
std::vector<const char*> tokenizer_files(const std::string& tokenizer) {
  if (tokenizer == "gpt2") return {"encoder.json", "vocab.bpe"};
  if (tokenizer == "hf") return {"tokenizer.json"};
  return {};
}

// The length RoPE scaling counts from (L0): rope_scaling.original_max_position, 0 = block_size.
int64_t rope_l0(const ModelConfig& m) {
  return m.rope_scaling.original_max_position > 0 ? m.rope_scaling.original_max_position
                                                  : m.block_size;
}

// HF's rope_scaling dict (transformers' modeling_rope_utils: "rope_type" and the fields each type
// reads); "null" for plain RoPE. HF's dynamic and yarn take L0 from max_position_embeddings (newer
// versions derive yarn's factor from max_position_embeddings / original_max_position_embeddings
// when the dict has the latter), so config_json writes max_position_embeddings = L0 and yarn's
// dict leaves original_max_position_embeddings out: every version then computes tessera's table.
// llama3 reads original_max_position_embeddings from the dict.
std::string rope_scaling_json(const ModelConfig& m) {
  const RopeScalingConfig& r = m.rope_scaling;
  if (m.position != "rope" || r.type == "none") return "null";
  JsonObject o;
  o.set("rope_type", str(r.type)).set("factor", num(r.factor));
  if (r.type == "yarn") {
    o.set("beta_fast", num(r.beta_fast)).set("beta_slow", num(r.beta_slow));
    if (r.attention_factor > 0) o.set("attention_factor", num(r.attention_factor));
  } else if (r.type == "llama3") {
    o.set("original_max_position_embeddings", num(rope_l0(m)));
    o.set("low_freq_factor", num(r.low_freq_factor)).set("high_freq_factor", num(r.high_freq_factor));
  }
  return o.text(4);
}

std::string config_json(const Config& cfg, DType dtype, int64_t eot) {
  const ModelConfig& m = cfg.model;
  const nn::HFArch& arch = nn::hf_arch(model_config(m, cfg.train));
  JsonObject o;
  o.set("architectures", "[" + str(arch.architecture) + "]").set("model_type", str(arch.model_type));
  o.set("vocab_size", num(m.vocab_size));
  if (std::string(arch.model_type) == "gpt2") {
    o.set("n_positions", num(m.block_size)).set("n_ctx", num(m.block_size));
    o.set("n_embd", num(m.n_embd)).set("n_layer", num(m.n_layer)).set("n_head", num(m.n_head));
    o.set("n_inner", num(m.hidden()));
    // tessera's GELU is the tanh form (backend/cpu/activation.cpp), HF's "gelu_new".
    o.set("activation_function", str("gelu_new"));
    o.set("layer_norm_epsilon", num(m.norm_eps));
    // tessera drops out after the embeddings and after each residual branch's projection: GPT-2's
    // embd_pdrop and resid_pdrop; it has no dropout on attention probabilities.
    o.set("resid_pdrop", num(m.dropout)).set("embd_pdrop", num(m.dropout));
    o.set("attn_pdrop", num(0.0));
    o.set("scale_attn_weights", boolean(true)).set("scale_attn_by_inverse_layer_idx", boolean(false));
    o.set("reorder_and_upcast_attn", boolean(false));
  } else {
    o.set("hidden_size", num(m.n_embd)).set("intermediate_size", num(m.hidden()));
    o.set("num_hidden_layers", num(m.n_layer)).set("num_attention_heads", num(m.n_head));
    o.set("num_key_value_heads", num(m.kv_heads())).set("head_dim", num(m.head_dim()));
    o.set("hidden_act", str("silu")).set("rms_norm_eps", num(m.norm_eps));
    o.set("rope_theta", num(m.rope_theta)).set("rope_scaling", rope_scaling_json(m));
    // = block_size unless rope scaling names another L0 (rope_scaling_json says why); then the
    // block size (a model extended past L0) travels in a key of tessera's own, for import.
    const int64_t max_pos = m.rope_scaling.type == "none" ? m.block_size : rope_l0(m);
    o.set("max_position_embeddings", num(max_pos));
    if (max_pos != m.block_size) o.set("tessera_block_size", num(m.block_size));
    const std::string type = arch.model_type;
    // Mixtral's is always off, Qwen2's (and Qwen2-MoE's) on q, k and v alone.
    const bool qwen2 = type == "qwen2" || type == "qwen2_moe";
    if (type != "mixtral" && !qwen2) o.set("attention_bias", boolean(m.bias));
    o.set("attention_dropout", num(0.0));
    if (type == "qwen3" || type == "qwen3_moe" || qwen2) {
      // Qwen3Config and Qwen2Config: every layer attends to every earlier token (the sliding window
      // is off and then unset); no bias in the MLP (hf_unsupported refuses model.bias).
      o.set("use_sliding_window", boolean(false)).set("sliding_window", "null");
      o.set("max_window_layers", num(m.n_layer));
    } else if (type == "mixtral") {
      o.set("sliding_window", "null");  // MixtralConfig's window: every earlier key
    } else {
      o.set("mlp_bias", boolean(m.bias)).set("pretraining_tp", num(int64_t(1)));
    }
    for (const auto& [key, value] : hf_moe_config(m)) o.set(key, value);
  }
  o.set("tie_word_embeddings", boolean(m.tie_embeddings));
  o.set("initializer_range", num(0.02)).set("use_cache", boolean(true));
  if (eot >= 0) o.set("bos_token_id", num(eot)).set("eos_token_id", num(eot));
  o.set("torch_dtype", str(torch_dtype(dtype)));
  o.set("tessera_tokenizer", str(cfg.data.tokenizer));
  std::string notes = "[";
  for (const std::string& n : hf_export_notes(cfg)) notes += (notes.size() > 1 ? ", " : "") + str(n);
  o.set("tessera_notes", notes + "]");
  return o.text() + "\n";
}

}  // namespace

std::string hf_unsupported(const Config& cfg) {
  const ModelConfig& m = cfg.model;
  const nn::GPTConfig g = model_config(m, cfg.train);
  std::vector<std::string> why;
  if (g.attention.kind != nn::AttentionKind::Softmax)
    why.push_back("model.attention is " + m.attention +
                  ": transformers' GPT-2 and Llama attend with softmax only");
  if (m.sliding_window > 0)
    why.push_back("model.sliding_window is " + std::to_string(m.sliding_window) +
                  ": transformers' GPT-2 and Llama attend to every earlier token");
  if (m.position == "alibi")
    why.push_back("model.position is alibi: transformers' GPT-2 and Llama have no ALiBi bias");
  if (m.position == "none")
    why.push_back("model.position is none: HF GPT-2 has learned positions and Llama RoPE; "
                  "neither runs without position information");
  if (g.gpt2_names()) {
    if (m.qk_norm)
      why.push_back(
          "model.qk_norm in a GPT-2-style model (layernorm + gelu): GPT2Attention does "
          "not normalise q and k");
    if (m.position == "rope")
      why.push_back("model.position is rope in a GPT-2-style model (layernorm + gelu): "
                    "GPT2LMHeadModel has learned positions only");
    if (!m.bias)
      why.push_back("model.bias is false in a GPT-2-style model: GPT2LMHeadModel has a bias in "
                    "every Conv1D and LayerNorm");
    if (m.kv_heads() != m.n_head)
      why.push_back("model.n_kv_head " + std::to_string(m.n_kv_head) +
                    " (grouped-query attention) in a GPT-2-style model: GPT2Attention has one key "
                    "and value head per query head");
  } else {
    if (m.norm != "rmsnorm")
      why.push_back("model.norm is " + m.norm + " in a Llama-style model (the names follow " +
                    "mlp: " + m.mlp + "): LlamaForCausalLM normalises with RMSNorm");
    if (m.mlp != "swiglu")
      why.push_back("model.mlp is " + m.mlp + " in a Llama-style model (norm: " + m.norm +
                    "): LlamaForCausalLM's MLP is SwiGLU");
    if (m.position == "learned")
      why.push_back("model.position is learned in a Llama-style model: LlamaForCausalLM has "
                    "RoPE and no position embedding table");
    if (m.qk_norm && m.bias)
      why.push_back(
          "model.bias is true with model.qk_norm (Qwen3ForCausalLM): Qwen3's MLP has "
          "no biases");
    if (m.qkv_bias && m.qk_norm)
      why.push_back(
          "model.qkv_bias with model.qk_norm: Qwen3Attention has no biases (Qwen2's biases on q, "
          "k and v go without q and k norms)");
  }
  for (const std::string& w : hf_moe_unsupported(m, g.gpt2_names())) why.push_back(w);
  std::string out;
  for (const std::string& w : why) out += (out.empty() ? "" : "; ") + w;
  return out;
}

std::vector<std::string> hf_export_notes(const Config& cfg) {
  std::vector<std::string> notes;
  const bool gpt2 = model_config(cfg.model, cfg.train).gpt2_names();
  if (cfg.train.s2_attn)
    notes.push_back("trained with S^2-Attn (LongLoRA shifted sparse attention), a training-time "
                    "approximation: inference attends to every earlier token, as HF does");
  if (!gpt2 && cfg.model.dropout > 0)
    notes.push_back("trained with dropout " + num(cfg.model.dropout) +
                    " after the embeddings and each residual branch, which LlamaForCausalLM "
                    "lacks; inference is unaffected");
  for (const std::string& n : hf_moe_notes(cfg.model)) notes.push_back(n);
  if (cfg.data.tokenizer == "byte")
    notes.push_back("tokenizer: tessera's byte-level tokenizer (ids 0..255 are the bytes of the "
                    "UTF-8 text, 256 is end of text) has no Hugging Face tokenizer file");
  return notes;
}

void export_hf(const Config& cfg, const std::vector<std::pair<std::string, Tensor>>& params,
               const std::string& dir, const std::function<void()>& then) {
  const std::string why = hf_unsupported(cfg);
  TESSERA_CHECK(why.empty(), "this model has no Hugging Face counterpart: ", why,
                " (nothing was written)");
  fs::path out = fs::path(dir).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();  // "out/hf/": the temporary is a sibling
  TESSERA_CHECK(!out.empty(), "--output names no directory");
  TESSERA_CHECK(!fs::exists(out) || fs::is_directory(out), dir,
                " is a file, not a directory (nothing was written)");
  TESSERA_CHECK(!fs::exists(out) || fs::is_empty(out), dir,
                " exists and is not an empty directory (nothing was written)");
  std::map<std::string, Tensor> by_name(params.begin(), params.end());
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::set<std::string> used;
  for (const nn::ParamSpec& s : nn::param_specs(model_config(cfg.model, cfg.train))) {
    auto it = by_name.find(s.name);
    TESSERA_CHECK(it != by_name.end(), "the model has no parameter '", s.name, "'");
    const Tensor& t = it->second;
    TESSERA_CHECK(t.shape() == s.shape, s.name, " has shape ", shape_str(t.shape()),
                  ", the config says ", shape_str(s.shape));
    tensors.emplace_back(s.name, s.hf_transposed ? t.detach().transpose(0, 1).contiguous() : t);
    used.insert(s.name);
  }
  for (const auto& [name, t] : params)
    TESSERA_CHECK(used.count(name), "parameter '", name, "' has no Hugging Face name");
  const fs::path tok(cfg.data.tokenizer_dir);
  for (const char* f : tokenizer_files(cfg.data.tokenizer))
    TESSERA_CHECK(fs::exists(tok / f), "data.tokenizer is ", cfg.data.tokenizer, " but ",
                  (tok / f).string(), " is missing (set data.tokenizer_dir)");
  const int64_t eot =
      end_of_text_id(cfg);  // an hf tokenizer is read for it: once, and before writing

  // Folders above out that are missing are made (as transformers' save_pretrained makes its
  // directory's), and taken back, the empty ones this export made, when it fails.
  const fs::path above = out.parent_path();
  fs::path made;  // the highest folder this export makes, if any
  for (fs::path p = above; !p.empty() && !fs::exists(p); p = p.parent_path()) made = p;
  auto take_back_folders = [&] {
    if (made.empty()) return;
    for (fs::path p = above;; p = p.parent_path()) {
      std::error_code ec;
      fs::remove(p, ec);  // only an empty folder goes: one never made, or holding files, stays
      if (p == made || p.empty()) return;
    }
  };
  if (!made.empty()) {
    std::error_code ec;
    fs::create_directories(above, ec);
    if (ec) {
      take_back_folders();
      TESSERA_FAIL("cannot create the folder ", above.string(), " for ", dir, ": ", ec.message(),
                   " (nothing was written)");
    }
  }
  // A name of its own beside out (mkdtemp): never a directory someone else made or left.
  std::string staging = out.string() + ".export-tmp.XXXXXX";
  if (::mkdtemp(staging.data()) == nullptr) {
    const int err = errno;
    take_back_folders();
    TESSERA_FAIL("cannot create a directory beside ", out.string(), ": ", std::strerror(err),
                 " (nothing was written)");
  }
  const fs::path tmp = staging;
  const bool was_there = fs::exists(out);  // empty (checked above): put back on a failure
  bool placed = false;
  try {
    write_text(tmp / "config.json", config_json(cfg, tensors.front().second.dtype(), eot));
    JsonObject gen;
    gen.set("_from_model_config", boolean(true));
    if (eot >= 0) gen.set("bos_token_id", num(eot)).set("eos_token_id", num(eot));
    write_text(tmp / "generation_config.json", gen.text() + "\n");
    write_safetensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
    if (cfg.data.tokenizer == "gpt2") {
      // The same two files under HF's names: encoder.json is vocab.json, vocab.bpe merges.txt.
      fs::copy_file(tok / "encoder.json", tmp / "vocab.json");
      fs::copy_file(tok / "vocab.bpe", tmp / "merges.txt");
    }
    if (cfg.data.tokenizer == "hf") {  // Hugging Face's own files, as they came
      fs::copy_file(tok / "tokenizer.json", tmp / "tokenizer.json");
      if (fs::exists(tok / "tokenizer_config.json"))
        fs::copy_file(tok / "tokenizer_config.json", tmp / "tokenizer_config.json");
    }
    if (was_there) fs::remove(out);  // empty, checked above
    fs::rename(tmp, out);
    placed = true;
    if (then) then();
  } catch (...) {
    std::error_code ec;
    fs::remove_all(placed ? out : tmp, ec);
    if (was_there && !fs::exists(out, ec)) fs::create_directory(out, ec);  // as it was: empty
    take_back_folders();
    try {
      throw;
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {  // a file system call's: named, as tessera's errors are
      TESSERA_FAIL("export to ", dir, ": ", e.what(), " (nothing was written)");
    }
  }
}

namespace {

// config.json keys that do not change what the model computes: read past. Everything else must be
// understood or is an error.
const std::set<std::string> kIgnored = {
    "transformers_version", "_name_or_path", "initializer_range", "use_cache", "bos_token_id",
    "eos_token_id", "pad_token_id", "torch_dtype", "dtype", "tessera_notes", "architectures",
    "model_type", "tokenizer_class", "output_past", "task_specific_params", "summary_type",
    "summary_use_proj", "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
    "reorder_and_upcast_attn", "pretraining_tp", "attention_dropout", "attn_pdrop",
    "embd_pdrop", "tessera_tokenizer"};

// Reads config.json's keys, recording which ones it read and, for each config field it sets
// through `into`, the key that field came from (for check_config's messages).
struct ConfigReader {
  const Json& root;
  std::string file;
  std::set<std::string> read;
  std::map<const void*, std::string> source;  // a field of the Config being built -> its key

  void note(const void* field, const std::string& key) { source[field] = key; }

  const Json* get(const std::string& key) {
    read.insert(key);
    const Json* v = root.get(key);
    return v && !v->is(Json::Kind::Null) ? v : nullptr;
  }
  std::string where(const std::string& key) const { return file + ": " + key; }
  int64_t integer(const std::string& key, std::optional<int64_t> dflt = std::nullopt) {
    const Json* v = get(key);
    TESSERA_CHECK(v || dflt, file, ": missing key \"", key, "\"");
    return v ? v->as_int(where(key)) : *dflt;
  }
  double number(const std::string& key, double dflt) {
    const Json* v = get(key);
    return v ? v->as_double(where(key)) : dflt;
  }
  bool flag(const std::string& key, bool dflt) {
    const Json* v = get(key);
    return v ? v->boolean(where(key)) : dflt;
  }
  std::string text(const std::string& key, const std::string& dflt) {
    const Json* v = get(key);
    return v ? v->str(where(key)) : dflt;
  }
  // field = the value of key (its default when absent or null), noted as key's.
  void into(int64_t& field, const std::string& key, std::optional<int64_t> dflt = std::nullopt) {
    field = integer(key, dflt);
    note(&field, key);
  }
  void into(double& field, const std::string& key, double dflt) {
    field = number(key, dflt);
    note(&field, key);
  }
  void into(bool& field, const std::string& key, bool dflt) {
    field = flag(key, dflt);
    note(&field, key);
  }
  void require(bool ok, const std::string& key, const std::string& why) const {
    TESSERA_CHECK(ok, file, ": ", key, ": ", why);
  }
  void check_all_read() const {
    for (const auto& [k, v] : root.members())
      TESSERA_CHECK(read.count(k) || kIgnored.count(k), file, ": unsupported key \"", k,
                    "\" (tessera does not know what it changes)");
  }
};

// key: "rope_scaling", or "rope_parameters" (transformers 5).
void read_rope_scaling(ConfigReader& c, const std::string& key, const Json& rs, ModelConfig& m) {
  RopeScalingConfig& r = m.rope_scaling;
  std::set<std::string> known = {"rope_type", "type"};
  const std::string type_key = rs.get("rope_type") ? "rope_type" : "type";
  const Json* type = rs.get(type_key);
  c.require(type != nullptr, key, "has no rope_type");
  r.type = type->str(c.where(key + "." + type_key));
  c.note(&r.type, key + "." + type_key);
  if (r.type == "default") r.type = "none";
  c.require(r.type == "none" || r.type == "linear" || r.type == "dynamic" || r.type == "yarn" ||
                r.type == "llama3",
            key + "." + type_key, "'" + r.type + "' is not one tessera implements (linear, "
            "dynamic, yarn, llama3)");
  auto opt = [&](const char* k, auto& field) {
    known.insert(k);
    if (const Json* v = rs.get(k); v && !v->is(Json::Kind::Null)) {
      if constexpr (std::is_same_v<std::remove_reference_t<decltype(field)>, int64_t>)
        field = v->as_int(c.where(key + "." + k));
      else
        field = v->as_double(c.where(key + "." + k));
      c.note(&field, key + "." + k);
    }
  };
  opt("rope_theta", m.rope_theta);
  opt("factor", r.factor);
  opt("original_max_position_embeddings", r.original_max_position);
  if (r.original_max_position > 0 && r.type != "llama3") {
    // HF's dynamic uses max_position_embeddings as L0; newer yarn derives its factor from
    // max_position_embeddings / original_max_position_embeddings. Only files where every reading
    // agrees are taken.
    const double ratio = double(m.block_size) / double(r.original_max_position);
    c.require(r.type != "dynamic" || r.original_max_position == m.block_size,
              key + ".original_max_position_embeddings",
              "differs from max_position_embeddings, which HF's dynamic scaling uses");
    c.require(r.type != "yarn" || ratio == r.factor || r.original_max_position == m.block_size,
              key + ".original_max_position_embeddings",
              "max_position_embeddings / original_max_position_embeddings differs from factor; "
              "transformers versions disagree on which applies");
  }
  opt("beta_fast", r.beta_fast);
  opt("beta_slow", r.beta_slow);
  opt("attention_factor", r.attention_factor);
  opt("low_freq_factor", r.low_freq_factor);
  opt("high_freq_factor", r.high_freq_factor);
  for (const auto& [k, v] : rs.members())
    c.require(known.count(k) > 0, key + "." + k, "unsupported rope scaling field");
}

// Validates the config the reader built (config_problems): each problem prefixed with the file and
// followed by the config.json keys its tessera keys were read from.
void check_config(const Config& cfg, const ConfigReader& c) {
  const std::vector<std::string> problems = config_problems(cfg);
  if (problems.empty()) return;
  std::map<std::string, std::string> keys;  // "model.n_head" -> "n_head"
  config_schema::for_each_field(cfg, [&](const char* section, const char* key, const auto& v) {
    if (auto it = c.source.find(&v); it != c.source.end())
      keys[std::string(section) + "." + key] = it->second;
  });
  std::string text;
  for (const std::string& p : problems) {
    std::vector<std::pair<size_t, std::string>> from;  // (where the message names it, HF key)
    for (const auto& [key, hf] : keys) {
      const size_t at = p.find(key), end = at + key.size();
      const bool whole = end >= p.size() || !(std::isalnum(uint8_t(p[end])) || p[end] == '_');
      if (at != std::string::npos && whole) from.emplace_back(at, hf);
    }
    std::sort(from.begin(), from.end());
    std::string named;
    for (const auto& f : from) named += (named.empty() ? "" : ", ") + f.second;
    text += (problems.size() > 1 ? "\n  - " : " ") + p +
            (from.empty() ? "" : (from.size() > 1 ? " (config.json keys " : " (config.json key ") +
                                     named + ")");
  }
  TESSERA_FAIL(c.file, ": invalid model:", text);
}

Config read_config_json(const fs::path& path, std::vector<std::string>& notes,
                        std::string& architecture) {
  const Json root = parse_json(read_text(path), path.string());
  TESSERA_CHECK(root.is(Json::Kind::Object), path.string(), ": not a JSON object");
  ConfigReader c{root, path.string(), {}, {}};
  Config cfg;
  ModelConfig& m = cfg.model;
  const std::string type = c.text("model_type", "");
  const std::map<std::string, std::string> classes = {
      {"gpt2", "GPT2LMHeadModel"},       {"llama", "LlamaForCausalLM"},
      {"qwen3", "Qwen3ForCausalLM"},     {"mistral", "MistralForCausalLM"},
      {"mixtral", "MixtralForCausalLM"}, {"qwen3_moe", "Qwen3MoeForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"},     {"qwen2_moe", "Qwen2MoeForCausalLM"}};
  c.require(classes.count(type), "model_type",
            "'" + type + "' is not gpt2, llama, qwen2, qwen3 or mistral, or the mixtures of " +
                "experts mixtral, qwen2_moe and qwen3_moe, the architectures tessera maps");
  const std::string want = classes.at(type);
  architecture = want;
  if (const Json* a = c.get("architectures")) {
    const std::vector<Json>& list = a->items(c.where("architectures"));
    c.require(list.size() == 1 && list[0].is(Json::Kind::String) && list[0].str() == want,
              "architectures", "expected [\"" + want + "\"]");
  }
  if (type == "gpt2") {
    m.norm = "layernorm", m.mlp = "gelu", m.position = "learned", m.bias = true;
    c.into(m.n_layer, "n_layer"), c.into(m.n_head, "n_head"), c.into(m.n_embd, "n_embd");
    c.into(m.vocab_size, "vocab_size");
    c.into(m.block_size, "n_positions");
    if (c.get("n_ctx"))
      c.require(c.integer("n_ctx") == m.block_size, "n_ctx", "differs from n_positions");
    c.into(m.mlp_hidden, "n_inner", 0);  // null = 4 n_embd, tessera's 0 too
    const std::string act = c.text("activation_function", "gelu_new");
    // Both names are 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), tessera's GELU.
    c.require(act == "gelu_new" || act == "gelu_pytorch_tanh", "activation_function",
              "'" + act + "': tessera's GELU is the tanh form (gelu_new)");
    c.into(m.norm_eps, "layer_norm_epsilon", 1e-5);
    c.into(m.tie_embeddings, "tie_word_embeddings", true);
    c.into(m.dropout, "resid_pdrop", 0.1);
    c.require(c.flag("scale_attn_weights", true), "scale_attn_weights",
              "false: tessera always scales attention scores by 1/sqrt(head_dim)");
    c.require(!c.flag("scale_attn_by_inverse_layer_idx", false), "scale_attn_by_inverse_layer_idx",
              "true: tessera has no per-layer attention scaling");
    c.require(!c.flag("add_cross_attention", false), "add_cross_attention",
              "true: tessera's GPT has no cross-attention");
  } else {
    m.norm = "rmsnorm", m.mlp = "swiglu", m.position = "rope";
    c.into(m.n_embd, "hidden_size"), c.into(m.n_layer, "num_hidden_layers");
    c.into(m.n_head, "num_attention_heads");
    c.into(m.n_kv_head, "num_key_value_heads", m.n_head);
    // Qwen3-MoE's and Qwen2-MoE's is a dense layer's width (they have none: read_hf_moe_config
    // takes their experts').
    c.into(m.mlp_hidden, "intermediate_size",
           type == "qwen3_moe"   ? std::optional<int64_t>(6144)
           : type == "qwen2_moe" ? std::optional<int64_t>(5632)
                                 : std::nullopt);
    c.into(m.vocab_size, "vocab_size");
    c.require(m.n_head > 0, "num_attention_heads", "must be positive");
    // head_dim where it is not hidden_size / num_attention_heads (Qwen3-0.6B: 16 x 128 on 1024).
    if (c.get("head_dim") &&
        (m.n_embd % m.n_head != 0 || c.integer("head_dim") != m.n_embd / m.n_head))
      c.into(m.explicit_head_dim, "head_dim");
    else
      c.require(m.n_embd % m.n_head == 0, "num_attention_heads",
                "does not divide hidden_size, and there is no head_dim");
    const std::string act = c.text("hidden_act", "silu");
    c.require(act == "silu", "hidden_act", "'" + act + "': tessera's Llama MLP is SwiGLU (silu)");
    const bool mixtral = type == "mixtral";  // MixtralConfig's defaults differ from Llama's
    const bool qwen2 = type == "qwen2" || type == "qwen2_moe";
    const bool qwen = qwen2 || type == "qwen3" || type == "qwen3_moe";
    c.into(m.norm_eps, "rms_norm_eps", mixtral ? 1e-5 : 1e-6);
    c.into(m.rope_theta, "rope_theta", mixtral ? 1e6 : 10000.0);
    c.into(m.block_size, "max_position_embeddings", mixtral ? 4096 * 32 : qwen ? 32768 : 2048);
    c.into(m.tie_embeddings, "tie_word_embeddings", false);
    if (qwen) {
      if (qwen2) {
        // Qwen2Attention: q_proj, k_proj and v_proj with biases, o_proj and the MLP without.
        // Qwen2.5's files write use_mrope false (Qwen2-VL's multimodal RoPE is off).
        m.bias = false, m.qkv_bias = true;
        c.require(!c.flag("use_mrope", false), "use_mrope",
                  "true: multimodal RoPE (Qwen2-VL's) is not tessera's");
      } else {
        // Qwen3Attention: q_norm and k_norm; Qwen3MLP has no bias, so neither may the projections.
        m.qk_norm = true;
        c.require(!c.flag("attention_bias", false), "attention_bias",
                  "true: tessera has one bias switch, and Qwen3's MLP has no biases");
        m.bias = false;
      }
      c.require(!c.flag("use_sliding_window", false), "use_sliding_window",
                "true: tessera's sliding window is not Qwen's (from max_window_layers on)");
      c.get("sliding_window");  // read past: unused while the window is off
      c.get("max_window_layers");
      if (const Json* lt = c.get("layer_types"))
        for (const Json& t : lt->items(c.where("layer_types")))
          c.require(t.is(Json::Kind::String) && t.str() == "full_attention", "layer_types",
                    "every layer must be full_attention (tessera has no per-layer windows)");
    } else if (type == "mistral" || mixtral) {
      // MistralForCausalLM and MixtralForCausalLM: Llama's attention without biases, and a
      // window of the last sliding_window keys (the query's own among them; null: every earlier
      // key), as model.sliding_window attends.
      m.bias = false;
      if (const Json* w = c.get("sliding_window"); w && !w->is(Json::Kind::Null))
        c.into(m.sliding_window, "sliding_window");
    } else {
      const bool ab = c.flag("attention_bias", false), mb = c.flag("mlp_bias", false);
      c.require(ab == mb, "attention_bias", "differs from mlp_bias; tessera has one bias switch");
      m.bias = ab;
    }
    if (mixtral || type == "qwen3_moe" || type == "qwen2_moe") {
      const HFConfigKeys keys{c.file, [&c](const std::string& key, const void* field) {
                                if (field) c.note(field, key);
                                return c.get(key);
                              }};
      read_hf_moe_config(keys, type, m, notes);
    }
    m.dropout = 0.0;
    // transformers 5 writes rope_theta and the scaling together as rope_parameters.
    for (const char* k : {"rope_scaling", "rope_parameters"})
      if (const Json* rs = c.get(k)) read_rope_scaling(c, k, *rs, m);
    // tessera's export of a model extended past L0: max_position_embeddings holds L0, this key
    // the block size the model was trained at.
    if (c.get("tessera_block_size")) {
      const int64_t block = c.integer("tessera_block_size");
      c.require(block > 0 && m.rope_scaling.type != "none", "tessera_block_size",
                "needs a positive value and rope scaling");
      if (m.rope_scaling.original_max_position == 0) {
        m.rope_scaling.original_max_position = m.block_size;
        c.note(&m.rope_scaling.original_max_position, "max_position_embeddings");
      }
      m.block_size = block;
      c.note(&m.block_size, "tessera_block_size");
    }
  }
  c.check_all_read();
  // tessera's own exports name their tokenizer; otherwise the files decide: GPT-2's, else a
  // tokenizer.json.
  const std::string tok = c.text("tessera_tokenizer", "");
  c.require(tok.empty() || tok == "byte" || tok == "gpt2" || tok == "hf", "tessera_tokenizer",
            "'" + tok + "' is not byte, gpt2 or hf");
  const fs::path dir = path.parent_path();
  const bool files = fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt");
  cfg.data.tokenizer = !tok.empty()                         ? tok
                       : files                              ? "gpt2"
                       : fs::exists(dir / "tokenizer.json") ? "hf"
                                                            : "byte";
  if (!tok.empty()) c.note(&cfg.data.tokenizer, "tessera_tokenizer");
  if (const Json* a = root.get("attn_pdrop");
      a && a->is(Json::Kind::Number) && a->as_double(c.where("attn_pdrop")) > 0)
    notes.push_back("attn_pdrop " + num(a->as_double()) +
                    " ignored: tessera has no dropout on attention probabilities");
  check_config(cfg, c);
  return cfg;
}

// The tensors of a directory and the file they were read through (for messages): model.safetensors
// or the shards' index.
struct Weights {
  SafetensorsFile st;
  std::string from;
};

// The tensors of dir: model.safetensors, or the shards model.safetensors.index.json's weight_map
// names (as save_pretrained writes a model past its shard size, e.g. Qwen3-1.7B and larger), each
// tensor in the shard the map names and nowhere else. An error names the index, the shard and the
// tensor.
Weights read_weights(const fs::path& dir) {
  const fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
  if (fs::exists(single) || !fs::exists(index)) {
    TESSERA_CHECK(fs::exists(single), single.string(),
                  " is missing (and there is no model.safetensors.index.json naming shards)");
    return {read_safetensors(single.string()), single.string()};
  }
  const std::string where = index.string();
  const Json root = parse_json(read_text(index), where);
  TESSERA_CHECK(root.is(Json::Kind::Object) && root.get("weight_map") &&
                    root.get("weight_map")->is(Json::Kind::Object),
                where, ": not a JSON object with a weight_map object");
  std::map<std::string, std::string> shard_of;  // tensor -> shard file name
  std::vector<std::string> shards;              // in the order the map first names them
  for (const auto& [name, shard_json] : root.get("weight_map")->members()) {
    const std::string& shard = shard_json.str(where + ": weight_map." + name);
    TESSERA_CHECK(
        !shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..",
        where, ": weight_map.", name, " names '", shard, "', not a file beside the index");
    shard_of[name] = shard;
    if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
  }
  TESSERA_CHECK(!shards.empty(), where, ": weight_map names no tensor");
  SafetensorsFile out;
  std::set<std::string> seen;
  for (const std::string& shard : shards) {
    const fs::path file = dir / shard;
    TESSERA_CHECK(fs::exists(file), where, " names ", shard, ", which is missing");
    SafetensorsFile st = read_safetensors(file.string());
    for (auto& [name, t] : st.tensors) {
      const auto it = shard_of.find(name);
      TESSERA_CHECK(it != shard_of.end() && it->second == shard, file.string(), ": tensor '", name,
                    "' is ",
                    it == shard_of.end() ? "not in " + where + "'s weight_map"
                                         : "mapped to " + it->second + " by " + where);
      seen.insert(name);
      out.stored_dtype[name] = st.stored_dtype[name];
      out.tensors.emplace_back(name, std::move(t));
    }
  }
  for (const auto& [name, shard] : shard_of)
    TESSERA_CHECK(seen.count(name), where, ": tensor '", name, "' is not in ", shard);
  return {std::move(out), where};
}

// A NaN or infinite weight makes every loss NaN: an error naming the tensor, the count and the
// first such element.
void check_finite(const Tensor& t, const std::string& file, const std::string& name) {
  const Tensor f = t.to(DType::F32).contiguous();
  const float* p = static_cast<const float*>(f.data_ptr());
  int64_t bad = 0, first = -1;
  for (int64_t i = 0, n = f.numel(); i < n; ++i)
    if (!std::isfinite(p[i]) && bad++ == 0) first = i;
  TESSERA_CHECK(bad == 0, file, ": tensor '", name, "' holds ", bad, " non-finite value",
                bad > 1 ? "s" : "", " (the first, ", p[first], ", at flat index ", first,
                " of shape ", shape_str(t.shape()), ")");
}

}  // namespace

HFModel import_hf(const std::string& dir) {
  const fs::path d(dir);
  TESSERA_CHECK(fs::is_directory(d), "Hugging Face directory ", dir, " is not a directory");
  HFModel out;
  out.config = read_config_json(d / "config.json", out.notes, out.architecture);
  out.gpt2_tokenizer_files = fs::exists(d / "vocab.json") && fs::exists(d / "merges.txt");
  out.hf_tokenizer_json = !out.gpt2_tokenizer_files && out.config.data.tokenizer == "hf";
  out.config.train.run_name = d.filename().string();
  const nn::GPTConfig g = model_config(out.config.model, out.config.train);
  try {
    g.validate();  // after check_config, what only the model checks
  } catch (const Error& e) {
    TESSERA_FAIL((d / "config.json").string(), ": ", e.what());
  }

  auto [st, file] = read_weights(d);  // file: model.safetensors or the shards' index
  std::map<std::string, Tensor> by_name(st.tensors.begin(), st.tensors.end());
  std::set<std::string> used;
  const std::string root = g.gpt2_names() ? "transformer." : "model.";
  for (const nn::ParamSpec& s : nn::param_specs(g)) {
    std::string name = s.name;
    // HF's base-model files (e.g. the published gpt2) omit the root prefix.
    if (!by_name.count(name) && name.rfind(root, 0) == 0) name = name.substr(root.size());
    auto it = by_name.find(name);
    TESSERA_CHECK(it != by_name.end(), file, ": missing tensor '", s.name,
                  "', which config.json's model has");
    const Shape want = s.hf_transposed ? Shape{s.shape[1], s.shape[0]} : s.shape;
    const Tensor& t = it->second;
    TESSERA_CHECK(t.shape() == want, file, ": tensor '", name, "' has shape ",
                  shape_str(t.shape()), ", config.json's model needs ", shape_str(want),
                  s.hf_transposed ? " (Conv1D: [in, out])" : "");
    TESSERA_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16, file, ": tensor '", name,
                  "' is ", st.stored_dtype[name], "; parameters must be F32, BF16 or F16");
    check_finite(t, file, name);
    out.params.emplace_back(s.name, s.hf_transposed ? t.transpose(0, 1).contiguous() : t);
    used.insert(name);
  }
  for (const auto& [name, t] : st.tensors) {
    if (used.count(name)) continue;
    if (name == "lm_head.weight" && g.tie_embeddings) {
      out.notes.push_back("lm_head.weight ignored: tie_word_embeddings is true");
      continue;
    }
    const bool mask = name.size() > 9 && (name.ends_with(".attn.bias") ||
                                          name.ends_with(".attn.masked_bias"));
    if (mask && g.gpt2_names()) continue;  // GPT-2's causal-mask buffers, not parameters
    TESSERA_FAIL(file, ": tensor '", name, "' is not a parameter of config.json's model");
  }
  return out;
}

}  // namespace tessera::train
