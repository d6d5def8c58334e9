// The weights' exponential moving average: see ema.h.
#include "train/ema.h"

#include <map>

#include "autograd/autograd.h"
#include "backend/kernels.h"
#include "core/error.h"

namespace tessera::train {
namespace {

constexpr const char* kPrefix = "ema/";

// A copy of w in f32 on w's device (never w itself, whatever its dtype).
Tensor f32_copy(const Tensor& w) { return w.dtype() == DType::F32 ? w.clone() : w.to(DType::F32); }

}  // namespace

WeightEma::WeightEma(std::vector<NamedParam> params, double decay, const FlatParams* flat)
    : params_(std::move(params)), flat_(flat), decay_(decay) {
  TESSERA_CHECK(decay > 0 && decay < 1, "train.ema_decay must be in (0, 1) for an average, got ",
                decay);
  if (flat_) {
    std::map<std::string, int64_t> at;
    for (const FlatParams::Slot& s : flat_->slots()) at[s.name] = s.offset;
    for (const NamedParam& p : params_) {
      const auto it = at.find(p.name);
      TESSERA_CHECK(it != at.end(), "WeightEma: ", p.name, " is not in the flat buffer");
      offsets_.push_back(it->second);
    }
  }
  restart();
}

Tensor WeightEma::average(size_t i) const {
  const Tensor& w = params_[i].param;
  return flat_ ? ema_[0].narrow(0, offsets_[i], w.numel()).reshape(w.shape()) : ema_[i];
}

void WeightEma::restart() {
  NoGradGuard no_grad;
  ema_.clear();
  if (flat_) {
    ema_.push_back(f32_copy(flat_->values()));
    return;
  }
  for (const NamedParam& p : params_) ema_.push_back(f32_copy(p.param));
}

void WeightEma::update() {
  NoGradGuard no_grad;
  for (size_t i = 0; i < ema_.size(); ++i) {
    const Tensor& w = flat_ ? flat_->values() : params_[i].param;
    const Tensor w32 = w.dtype() == DType::F32 ? w.contiguous() : w.to(DType::F32);
    // In place, one pass: ema = decay ema + (1 - decay) w.
    TESSERA_KERNEL(w32, axpby)(ema_[i], decay_, ema_[i], 1.0 - decay_, w32);
  }
}

std::vector<Tensor> WeightEma::swap_in() {
  NoGradGuard no_grad;
  std::vector<Tensor> held;
  if (flat_) {
    held.push_back(flat_->values().clone());
    Tensor(flat_->values()).copy_(ema_[0]);
    return held;
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    held.push_back(params_[i].param.clone());
    Tensor(params_[i].param).copy_(ema_[i]);
  }
  return held;
}

void WeightEma::swap_out(const std::vector<Tensor>& held) {
  NoGradGuard no_grad;
  if (flat_) {
    Tensor(flat_->values()).copy_(held[0]);
    return;
  }
  for (size_t i = 0; i < params_.size(); ++i) Tensor(params_[i].param).copy_(held[i]);
}

void WeightEma::put(CheckpointData& ck) const {
  for (size_t i = 0; i < params_.size(); ++i)
    ck.trainer_tensors.emplace_back(kPrefix + params_[i].name, average(i));
}

bool WeightEma::take(const CheckpointData& ck, const std::string& path) {
  std::map<std::string, const Tensor*> held;
  for (const auto& [name, t] : ck.trainer_tensors)
    if (name.rfind(kPrefix, 0) == 0) held[name.substr(std::string(kPrefix).size())] = &t;
  if (held.empty()) return false;
  std::vector<const Tensor*> found;
  for (const NamedParam& p : params_) {
    const auto it = held.find(p.name);
    TESSERA_CHECK(it != held.end(), "checkpoint ", path, " holds an average of the weights ",
                  "(/trainer/", kPrefix, "...) without ", p.name);
    TESSERA_CHECK(it->second->shape() == p.param.shape(), "checkpoint ", path, ": /trainer/",
                  kPrefix, p.name, " is ", shape_str(it->second->shape()), ", the weight ",
                  shape_str(p.param.shape()));
    found.push_back(it->second);
  }
  TESSERA_CHECK(held.size() == params_.size(), "checkpoint ", path, " holds an average of ",
                held.size(), " tensors (/trainer/", kPrefix, "...), this model ", params_.size());
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) average(i).copy_(*found[i]);
  return true;
}

std::vector<std::pair<std::string, Tensor>> ema_weights(const CheckpointData& ck,
                                                        const std::string& path) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : ck.trainer_tensors)
    if (name.rfind(kPrefix, 0) == 0) out.emplace_back(name.substr(std::string(kPrefix).size()), t);
  TESSERA_CHECK(!out.empty(), path, " holds no average of the weights (/trainer/", kPrefix,
                "...): the run that wrote it had no train.ema_decay");
  return out;
}

}  // namespace tessera::train
