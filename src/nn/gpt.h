// The GPT model: one config covering GPT-2 style (LayerNorm, GELU, learned positions, tied
// embeddings, fused qkv) and Llama style (RMSNorm, SwiGLU, RoPE, grouped-query attention via
// n_kv_head, untied head, no biases).
//
//   GPTConfig cfg;  cfg.n_layer = 4; cfg.n_embd = 128; cfg.vocab_size = 257;
//   Generator g(1337);
//   GPT model(cfg, g);                               // GPT-2 initialisation
//   Tensor loss = model.loss(inputs, targets);       // inputs, targets (B, T) i32
//   loss.backward();                                 // gradients on model.parameters()
//
// Shapes: B batch, T time, C = n_embd, H heads of hd = C / H, Hkv key/value heads, V vocabulary.
// Parameter names are Hugging Face's for the architecture (transformer.h.0.attn.c_attn.weight for
// GPT-2 style, model.layers.0.self_attn.q_proj.weight for Llama style), matrices stored
// [out, in] like a PyTorch Linear, so a converter is a rename plus GPT-2's Conv1D transpose. The
// names come from one table per architecture, nn/hf_names.h.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "nn/moe.h"
#include "nn/rope_scaling.h"
#include "ops/attention_spec.h"
#include "ops/documents.h"

namespace tessera::nn {

enum class NormKind { LayerNorm, RMSNorm };
enum class MlpKind { GELU, SwiGLU };
// ALiBi: no position embedding; each head's attention scores fall linearly with distance
// (GPTConfig::attention.alibi, which goes with it; ops/attention_spec.h).
enum class PositionKind { Learned, RoPE, ALiBi, None };
using AttentionKind = ops::AttentionKind;  // the kinds and their names: ops/attention_spec.h

struct GPTConfig {
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t n_kv_head = 0;  // 0 = n_head
  int64_t n_embd = 128;
  int64_t explicit_head_dim = 0;  // each head's width; 0 = n_embd / n_head
  int64_t block_size = 64;  // context length (learned positions cover exactly this)
  int64_t vocab_size = 257;
  NormKind norm = NormKind::LayerNorm;
  MlpKind mlp = MlpKind::GELU;
  PositionKind position = PositionKind::Learned;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;  // type none = plain RoPE (nn/rope_scaling.h)
  bool tie_embeddings = true;
  bool bias = true;
  bool qkv_bias = false;  // bias false: biases on the q, k and v projections alone (Qwen2)
  // RMSNorm (weight only, eps norm_eps) over each head's q and k before RoPE, as Qwen3 and Gemma 3
  // (Dehghani et al. 2023 normalise them for stability at scale; OLMo 2 normalises the whole
  // projection instead). Attention then runs on split heads.
  bool qk_norm = false;
  double dropout = 0.0;
  double norm_eps = 1e-5;
  int64_t mlp_hidden = 0;  // 0: 4 C for GELU, round_up(8 C / 3, 64) for SwiGLU (Llama's rule)
  // > 0: each block's MLP is a mixture of n_expert MLPs of mlp_hidden (the MLP kind's own), each
  // token sent to its expert_top_k most probable under a router (nn/moe.h); router_renormalize
  // divides their weights by their sum. router_aux_loss and router_z_loss: the coefficients of
  // the load-balancing loss and the z-loss (nn/moe.h's RouterLosses) in loss() while training
  // (each summed over the blocks; their values are not in the loss returned).
  int64_t n_expert = 0;
  int64_t expert_top_k = 2;
  bool router_renormalize = true;
  double router_aux_loss = 0.01;
  double router_z_loss = 0;
  // > 0: a shared expert beside the routed ones, an MLP of this width (the MLP kind's own) every
  // token goes through; shared_expert_gate: its output times sigmoid(x w^T), w (1, C) (Qwen2-MoE).
  int64_t shared_expert_hidden = 0;
  bool shared_expert_gate = false;
  bool recompute = false;  // activation checkpointing per block
  // What ops::causal_attention computes (ops/attention_spec.h): the kind, stick-breaking's options,
  // a sliding window, S^2-Attn on training forwards.
  ops::AttentionSpec attention;
  // >= 0: the id between documents (ops/documents.h; the data's end of text, the config's
  // data.windows: documents). A document starts at each, and each position attends its own
  // document's keys, learned positions counting from its start. -1: every row is one sequence.
  // Decoding (forward_cached) holds one document: the id past position 0 is refused.
  int64_t document_separator = -1;

  int64_t kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  int64_t head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : n_embd / n_head; }
  int64_t hidden() const;
  bool gpt2_names() const { return norm == NormKind::LayerNorm && mlp == MlpKind::GELU; }
  void validate() const;  // errors name the offending field
};

using NamedTensor = std::pair<std::string, Tensor>;

// The projections of the model that a LinearHook sees: attention query/key/value/output, MLP
// gate/up/down, and the output head.
enum class Proj { Q, K, V, O, Gate, Up, Down, Head };
const char* proj_name(Proj p);  // "q", "k", "v", "o", "gate", "up", "down", "head"

// Takes over the model's linear layers (installed with GPT::set_hook; peft/lora.h is the one user):
// LoRA adds a low-rank update to chosen projections, QLoRA replaces frozen weights by NF4 codes.
class LinearHook {
 public:
  virtual ~LinearHook() = default;
  // y = x W^T + b for the Linear whose weight parameter is called `weight`; w is undefined when
  // the model no longer holds it (GPT::release_parameters handed it to the hook).
  virtual Tensor base(const std::string& weight, const Tensor& x, const Tensor& w,
                      const Tensor& b) const = 0;
  // Projection p of layer `layer` (-1 for the head) computed y from x: returns y plus any update.
  // For GPT-2's fused c_attn, q, k and v are its three column slices, each adapted on its own.
  virtual Tensor adapt(Proj p, int64_t layer, const Tensor& x, const Tensor& y,
                       bool training) const = 0;
  // Whether adapt may change projection p of `layer`: the model runs attention straight off a fused
  // q, k, v projection (ops/packed_attention.h) only when none of the three is adapted.
  virtual bool adapts(Proj p, int64_t layer) const {
    (void)p;
    (void)layer;
    return true;
  }
};

// Keys and values of every layer for incremental decoding: k[l], v[l] are (B, Hkv, capacity, hd);
// positions [0, length) are filled. forget[l] (B, H, capacity): the forget gate's sums of a
// forgetting-attention model (ops/forget_gate.h), empty for the other kinds.
// Rows of different lengths (prompts of different lengths decoded as one batch): `lengths` holds
// each row's filled positions, [0, lengths[b]), and `length` is unused; empty when every row holds
// `length`. rows(first, n) is rows [first, first + n) alone, views of these tensors (writes
// through it land here), holding lengths[first] (or length) positions: rows are filled, or
// refilled, by forward_cached on it.
struct KVCache {
  std::vector<Tensor> k, v, forget;
  int64_t length = 0;
  int64_t capacity = 0;
  std::vector<int64_t> lengths;
  KVCache rows(int64_t first, int64_t n = 1) const;
};

class GPT {
 public:
  // Parameters are created with GPT-2's initialisation: N(0, 0.02) for matrices and embeddings,
  // N(0, 0.02 / sqrt(2 n_layer)) for the projections that write into the residual stream, zeros
  // for biases, ones for norm weights (Radford et al. 2019; nanoGPT/llm.c follow the same).
  GPT(const GPTConfig& cfg, Generator& gen, DType dtype = DType::F32);

  // inputs (B, T) i32 with T <= block_size -> logits (B, T, V).
  Tensor forward(const Tensor& inputs, bool training = true) const;
  // Mean cross-entropy of forward(inputs) against targets (B, T) i32 (ignore index -100). The batch
  // may also be on the host for a model on a device: its ids are then checked on the host and
  // uploaded once, so nothing is read back from the device to check them. fused_dy > 0: the dy
  // the caller's backward will send, so the loss's forward computes the logits' gradient in the
  // same pass (ops::cross_entropy's fused classifier).
  // A mixture of experts (n_expert > 0) training: router_aux_loss x the blocks' load-balancing
  // losses and router_z_loss x their z-losses (nn/moe.h) join the gradient, not the value, which
  // stays the cross-entropy's (as Megatron-LM's MoEAuxLossAutoScaler attaches them); router
  // non-null: set to the blocks' losses summed, detached (undefined for a dense model or
  // evaluation).
  Tensor loss(const Tensor& inputs, const Tensor& targets, bool training = true,
              double fused_dy = 0, RouterLosses* router = nullptr) const;
  // Each position's cross-entropy (B, T), unreduced (ops::token_losses: f32 for a bf16 model, 0
  // where the target is ignored), differentiable; the batch as loss() takes it. A mixture's
  // router losses, which loss() joins to its gradient, are handed back instead: penalty non-null
  // is set to their weighted sum (router_aux_loss x balance + router_z_loss x z, a scalar that
  // carries their gradient; undefined when there is none), router as in loss().
  Tensor token_losses(const Tensor& inputs, const Tensor& targets, bool training = true,
                      RouterLosses* router = nullptr, Tensor* penalty = nullptr) const;

  // Inference with a KV cache (no autograd): inputs (B, Tn) continue the sequence held in cache;
  // returns logits (B, Tn, V) equal to the last Tn rows of forward() over the whole sequence.
  // Except under dynamic NTK scaling past its L0: forward() rotates every position with the table
  // of the whole length, a cache keeps each key rotated with the table of the length it was
  // written at (as Hugging Face's cache does), and new tokens get the table of the length so far.
  // Attention runs forward()'s kernels with a query offset over the cache's filled positions, on
  // the cache's device (ops::causal_attention); the cache is never copied to the host.
  // last_only: the logits of each row's last position alone, (B, 1, V), what sampling reads: the
  // final norm and the head (at GPT-2's vocabulary 50304 columns a position) run on one position
  // instead of Tn.
  // A cache whose rows hold different lengths (KVCache::lengths) takes one token a row, inputs
  // (B, 1), each at its row's next position: the projections, MLPs and head run on the batch, the
  // positions and attention on each run of neighbouring rows of one length, each row's logits
  // those of forward_cached on that row alone (up to a batched gemm's rounding).
  KVCache make_cache(int64_t batch, int64_t capacity) const;
  Tensor forward_cached(const Tensor& inputs, KVCache& cache, bool last_only = false) const;

  const GPTConfig& config() const { return cfg_; }
  // Columns of the logits loss() computes: the vocabulary rounded up to a multiple of 64, so the
  // classifier's gemms and the cross-entropy run on rows 128-byte aligned in bf16 (GPT-2's
  // 50257 -> 50304, as llm.c pads; the padding's logits are 0 and take no part in the loss); the
  // vocabulary itself when a hook adapts the head or the model no longer holds its weight.
  // forward() returns the vocabulary's columns only.
  int64_t logit_columns() const;
  // Changes the RoPE scaling of a built model (eval scales a trained one without touching its
  // weights or checkpoint); the next forward uses it.
  void set_rope_scaling(const RopeScaling& s) { cfg_.rope_scaling = s; }
  // GPTConfig::document_separator for the forwards that follow (-1: off); an id >= vocab_size
  // throws.
  void set_document_separator(int64_t id);
  const std::vector<NamedTensor>& parameters() const { return params_; }
  Tensor parameter(const std::string& name) const;  // error naming it when absent
  int64_t num_parameters() const;
  // Swaps in new tensors for every parameter (same names, shapes in order): gradient checks and
  // weight loading use it.
  void replace_parameters(const std::vector<Tensor>& tensors);
  void zero_grad();

  // ---- fine-tuning (peft/lora.h) ----
  // Every forward routes its linear layers through hook (null: none). The hook must outlive its use.
  void set_hook(const LinearHook* hook) { hook_ = hook; }
  const LinearHook* hook() const { return hook_; }
  // Removes these parameters from the model and returns them (a hook then computes their Linears,
  // e.g. from quantised copies); an unknown name is an error and nothing is removed.
  std::vector<NamedTensor> release_parameters(const std::vector<std::string>& names);
  // The weight parameter names of every Linear inside the blocks (attention and MLP), in order.
  std::vector<std::string> block_linear_weights() const;
  // The module a projection's adapter is named after: "model.layers.0.self_attn.q_proj",
  // GPT-2's "transformer.h.0.attn.c_attn.q" (a slice of the fused c_attn), "lm_head".
  std::string module_name(Proj p, int64_t layer) const;

 private:
  struct Block {
    int64_t index = 0;
    Tensor ln1_w, ln1_b, ln2_w, ln2_b;
    Tensor qkv_w, qkv_b;               // GPT-2 names: fused (Hq + 2 Hkv) hd x C
    Tensor q_w, k_w, v_w, q_b, k_b, v_b;  // Llama names: separate projections
    Tensor o_w, o_b;
    struct Mlp {
      Tensor gate_w, gate_b, up_w, up_b, down_w, down_b;
    };
    Mlp mlp;                   // a dense block's MLP
    Tensor router_w;           // a mixture's router (E, C)
    std::vector<Mlp> experts;  // a mixture's experts (GPTConfig::n_expert)
    Mlp shared;                // its shared expert (GPTConfig::shared_expert_hidden)
    Tensor shared_gate_w;      // the shared expert's gate (1, C) (GPTConfig::shared_expert_gate)
    Tensor fgate_w, fgate_b;  // Forgetting Attention's gate: (H, C), (H)
    Tensor q_norm_w, k_norm_w;  // GPTConfig::qk_norm: (hd) each
  };

  Tensor& add_param(const std::string& name, Tensor t);
  void bind();  // points the named fields at params_
  Tensor norm(const Tensor& x, const Tensor& w, const Tensor& b) const;
  // x (B, T, C) -> q (B, T, H hd), k and v (B, T, Hkv hd): the projections, as adapted.
  void project(const Block& blk, const Tensor& x, bool training, Tensor& q, Tensor& k,
               Tensor& v) const;
  // x (B, T, C) -> q (B, H, T, hd), k and v (B, Hkv, T, hd), q and k normalised (qk_norm);
  // project_qkv also rotates them for positions pos0 + t (rotate).
  void project_heads(const Block& blk, const Tensor& x, bool training, Tensor& q, Tensor& k,
                     Tensor& v) const;
  void project_qkv(const Block& blk, const Tensor& x, int64_t pos0, bool training, Tensor& q,
                   Tensor& k, Tensor& v) const;
  // RoPE on q and k for positions pos0 + t (model.rope_scaling applied); nothing for other kinds.
  void rotate(Tensor& q, Tensor& k, int64_t pos0) const;
  // forward_cached's work: runs of neighbouring rows, rows [first, first + rows) taking their
  // inputs at positions [pos, pos + Tn) of the cache (one run for a cache of one length; rows of
  // different lengths: one token a row, a run for each neighbouring rows of one position).
  struct DecodeRun {
    int64_t first, rows, pos;
  };
  Tensor decode(const Tensor& inputs, KVCache& cache, const std::vector<DecodeRun>& runs,
                bool last_only) const;
  // A Linear (through the hook when one is installed): module "attn.c_attn" of blk, or a full name.
  Tensor linear(const std::string& module, const Tensor& x, const Tensor& w, const Tensor& b) const;
  Tensor adapt(Proj p, int64_t layer, const Tensor& x, const Tensor& y, bool training) const;
  // (B, T, C) -> logits (B, T, V), or with `padded` (B, T, logit_columns()): the vocabulary's
  // columns, then zero padding. Training and evaluation pad; a decoding step (a few rows) does not.
  Tensor head(const Tensor& x, bool training, bool padded) const;
  // The first vocab_size columns of padded logits (a view; the logits themselves when unpadded).
  Tensor vocab_logits(const Tensor& logits) const;
  // y (B, H, T, hd) -> residual + the output projection of y's heads (B, T, C).
  Tensor merge_heads(const Block& blk, const Tensor& y, const Tensor& residual,
                     bool training) const;
  // m (B, T, C), the heads side by side -> residual + the output projection (and its dropout).
  Tensor project_out(const Block& blk, const Tensor& m, const Tensor& residual,
                     bool training) const;
  // Whether a residual add can ride its Linear's kernel: no hook (which may adapt the Linear or
  // compute it from NF4 codes) and no dropout between the two.
  bool residual_in_kernel(bool training) const;
  // residual + dropout(adapt(p, x w^T + b)), the Linear `module` of `layer`: ops::linear_add when
  // residual_in_kernel.
  Tensor residual_linear(Proj p, const std::string& module, int64_t layer, const Tensor& x,
                         const Tensor& w, const Tensor& b, const Tensor& residual,
                         bool training) const;
  // How blk's attention meets its projections (ops/packed_attention.h), given a kernel that takes
  // strided heads: Packed, off GPT-2's fused c_attn (no RoPE, no hook adapting q, k or v);
  // Projected, off separate q, k, v projections (RoPE applied by the op); else Split (heads
  // copied out and merged back).
  enum class AttentionPath { Split, Packed, Projected };
  AttentionPath attention_path(const Block& blk, const Tensor& x, bool training) const;
  // q (B, H, Tq, hd), k and v (B, Hkv, Tk, hd), Tq <= Tk -> (B, H, Tq, hd): causal_attention.
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, bool training,
                const Tensor& forget = Tensor()) const;
  // Forgetting attention: the forget gate's sums (B, H, T) of x (B, T, C), the block's attention
  // input, continuing from start (B, H) (a cache's last sums; undefined: 0). Undefined for the
  // other kinds.
  Tensor forget_sums(const Block& blk, const Tensor& x, const Tensor& start = Tensor()) const;
  // Each sublayer returns the residual stream: residual + its output. docs: the rows' documents
  // (null: one sequence a row).
  Tensor attention(const Block& blk, const Tensor& x, const Tensor& residual, bool training,
                   const ops::Documents* docs) const;
  // host_inputs: the same ids on the CPU, when the caller has them (ops::embedding). positions:
  // each token's position (B, T) i32 on the host, for learned positions other than pos0 + t
  // (within documents, rows decoded at positions of their own).
  Tensor embed(const Tensor& inputs, int64_t pos0, bool training, const Tensor& host_inputs = {},
               const Tensor& positions = {}) const;
  // The documents of inputs' rows under cfg_.document_separator, read from host_inputs (or inputs,
  // read back); null when it is off or every row is one document.
  std::shared_ptr<const ops::Documents> documents(const Tensor& inputs,
                                                  const Tensor& host_inputs) const;
  // Padded logits (B, T, logit_columns()). aux non-null: the mixtures' load-balancing losses, one
  // a block, appended.
  Tensor forward_from(const Tensor& inputs, const Tensor& host_inputs, bool training,
                      std::vector<RouterLosses>* aux = nullptr) const;
  // loss() and token_losses(): score(padded logits, targets on their device, host targets or
  // undefined) on forward_from's logits, the batch uploaded once when it is on the host; penalty
  // as token_losses() sets it.
  using Scorer = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>;
  Tensor scored(const Tensor& inputs, const Tensor& targets, bool training, RouterLosses* router,
                Tensor* penalty, const Scorer& score) const;
  // aux non-null (a training forward of a mixture of experts): the block's load-balancing loss is
  // appended to it.
  Tensor mlp(const Block& blk, const Tensor& x, const Tensor& residual, bool training,
             std::vector<RouterLosses>* aux = nullptr) const;
  // The MLP's activations before its down projection: SwiGLU's or GELU's of x (N, C), through
  // the hook; adapted (LoRA) for the dense MLP (expert -1), not for an expert.
  Tensor mlp_hidden(const Block::Mlp& m, int64_t layer, int64_t expert, const Tensor& x,
                    bool training) const;
  // A mixture of experts over x (B, T, C) -> (B, T, C) (nn/moe.h), its shared expert's output
  // (gated or not) added.
  Tensor experts(const Block& blk, const Tensor& x, bool training,
                 std::vector<RouterLosses>* aux) const;
  Tensor block(const Block& blk, const Tensor& x, bool training,
               const ops::Documents* docs = nullptr,
               std::vector<RouterLosses>* aux = nullptr) const;

  GPTConfig cfg_;
  DType dtype_;
  std::vector<NamedTensor> params_;
  Tensor wte_, wpe_, lnf_w_, lnf_b_, head_;
  std::vector<Block> blocks_;
  const LinearHook* hook_ = nullptr;
};

}  // namespace tessera::nn
