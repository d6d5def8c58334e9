// Samples during training (log.sample_interval): every so many steps rank 0 draws
// log.sample_tokens ids after log.sample_prompt and the run prints them and writes them to
// metrics.jsonl, as llm.c's trainer prints a generation every sample_every steps, so a run shows
// what its model writes while it learns.
//
//   TrainingSamples samples(cfg);                     // the tokenizer read, the prompt encoded
//   std::string text = samples.draw(model, step);     // the prompt and what follows it
//
// A draw reads the model and nothing else of the run: build/generate's sampler (nn/generate.h:
// temperature 0.8 among the 40 most likely, the KV cache) under a generator of its own, seeded by
// train.seed and the step, so a run's losses are the same bits with or without samples, and a
// resumed run draws the same text at a step as the run it continues.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "config/config.h"
#include "data/tokenizer.h"
#include "nn/gpt.h"

namespace tessera::train {

class TrainingSamples {
 public:
  // Reads data.tokenizer's files (errors name log.sample_interval and the file) and encodes
  // log.sample_prompt ("": the end-of-text id alone, as unconditioned GPT-2 sampling starts),
  // after the beginning-of-text id with log.sample_bos (for a model trained on tokenize --bos
  // documents; an error naming the key where the tokenizer has none). Under data.chat_template the
  // prompt is a user's message in that template (as build/generate sends it; the sample shows the
  // markers, and ends at the end of turn).
  explicit TrainingSamples(const Config& cfg);

  // The prompt's text and up to log.sample_tokens sampled tokens after it (fewer when the
  // end-of-text id, or a chat template's end of turn, comes: it ends the sample and is not shown).
  std::string draw(const nn::GPT& model, int64_t step) const;

 private:
  std::unique_ptr<data::Tokenizer> tok_;
  data::Prompt prompt_;
  int64_t tokens_ = 0;
  uint64_t seed_ = 0;
};

}  // namespace tessera::train
