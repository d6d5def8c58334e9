#include "train/samples.h"

#include "core/error.h"
#include "core/rng.h"
#include "data/chat.h"
#include "nn/generate.h"

namespace tessera::train {

TrainingSamples::TrainingSamples(const Config& cfg)
    : tokens_(cfg.log.sample_tokens), seed_(cfg.train.seed) {
  try {
    tok_ = data::make_tokenizer(cfg.data.tokenizer, cfg.data.tokenizer_dir);
  } catch (const Error& e) {
    TESSERA_FAIL("log.sample_interval ", cfg.log.sample_interval, " decodes samples with ",
                 "data.tokenizer ", cfg.data.tokenizer, ": ", e.what());
  }
  if (const auto chat = data::chat_template_named(cfg.data.chat_template))
    prompt_ = data::encode_chat_prompt(*tok_, *chat, {{"user", cfg.log.sample_prompt}});
  else
    prompt_ =
        data::encode_prompt(*tok_, cfg.log.sample_prompt, cfg.log.sample_bos, "log.sample_bos");
  for (const uint32_t id : prompt_.ids)
    TESSERA_CHECK(int64_t(id) < cfg.model.vocab_size, "log.sample_prompt encodes to id ", id,
                  ", outside model.vocab_size ", cfg.model.vocab_size, " (data.tokenizer ",
                  cfg.data.tokenizer, ")");
}

std::string TrainingSamples::draw(const nn::GPT& model, int64_t step) const {
  nn::SampleOptions opt;
  opt.max_new_tokens = tokens_;
  opt.temperature = nn::kDefaultTemperature;  // build/generate's
  opt.top_k = nn::kDefaultTopK;
  opt.stop_tokens = data::stop_ids(prompt_);
  opt.vocab = tok_->vocab_size();  // a model padded past it: its extra ids decode to nothing
  // A key of its own (not the training's seed: dropout and the loader draw under that one) and
  // counters 2^32 apart from one step to the next.
  Generator gen(seed_ ^ 0x73616d706c657321ull);  // "samples!"
  gen.reserve(uint64_t(step) << 32);
  const std::vector<int32_t> ids(prompt_.ids.begin(), prompt_.ids.end());
  return data::decode_generation(*tok_, prompt_, nn::generate(model, ids, opt, gen));
}

}  // namespace tessera::train
