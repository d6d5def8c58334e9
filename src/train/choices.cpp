// Multiple-choice evaluation: see choices.h.
#include "train/choices.h"

#include <algorithm>
#include <cctype>

#include "autograd/autograd.h"
#include "checkpoint/json.h"
#include "core/error.h"
#include "core/text.h"
#include "data/loader.h"
#include "ops/softmax.h"
#include "train/device.h"

namespace tessera::train {
namespace {

ChoiceItem item_of(const Json& j, const std::string& where) {
  TESSERA_CHECK(j.is(Json::Kind::Object), where, ": an item is a JSON object, not ", j.kind_name());
  const Json* ctx = j.get("ctx");
  const Json* endings = j.get("endings");
  const Json* label = j.get("label");
  TESSERA_CHECK(ctx && endings && label, where, ": an item needs \"",
                !ctx       ? "ctx"
                : !endings ? "endings"
                           : "label",
                "\" (HellaSwag's layout: ctx, endings, label)");
  ChoiceItem item;
  item.where = where;
  TESSERA_CHECK(ctx->is(Json::Kind::String), where, ": \"ctx\" is ", ctx->kind_name(),
                ", not a string");
  item.context = ctx->str();
  TESSERA_CHECK(endings->is(Json::Kind::Array), where, ": \"endings\" is ", endings->kind_name(),
                ", not an array of strings");
  for (const Json& e : endings->items()) {
    TESSERA_CHECK(e.is(Json::Kind::String), where, ": ending ", item.endings.size(), " is ",
                  e.kind_name(), ", not a string");
    TESSERA_CHECK(!e.str().empty(), where, ": ending ", item.endings.size(), " is empty");
    item.endings.push_back(e.str());
  }
  TESSERA_CHECK(item.endings.size() >= 2, where, ": ", item.endings.size(),
                " ending(s); a choice needs two or more");
  // HellaSwag writes the label as a number; some of its copies as a string of one.
  const bool text = label->is(Json::Kind::String);
  TESSERA_CHECK(text || label->is(Json::Kind::Number), where, ": \"label\" is ", label->kind_name(),
                ", not an integer");
  const std::string& digits = text ? label->str() : std::string();
  TESSERA_CHECK(!text || (!digits.empty() && digits.size() < 10 &&
                          std::all_of(digits.begin(), digits.end(),
                                      [](unsigned char c) { return std::isdigit(c); })),
                where, ": \"label\" '", tessera::printable(digits), "' is not an integer");
  item.label = text ? std::stoll(digits) : label->as_int(where + ": \"label\"");
  TESSERA_CHECK(item.label >= 0 && item.label < int64_t(item.endings.size()), where, ": \"label\" ",
                item.label, " is not the index of one of its ", item.endings.size(),
                " endings (0 to ", item.endings.size() - 1, ")");
  return item;
}

bool space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

}  // namespace

std::vector<ChoiceItem> parse_choice_items(const std::string& text, const std::string& path) {
  std::vector<ChoiceItem> out;
  for_each_json_line(text, path, [&](const Json& j, const std::string& where) {
    out.push_back(item_of(j, where));
  });
  TESSERA_CHECK(!out.empty(), path,
                ": no items (JSON Lines of {\"ctx\", \"endings\", \"label\"} objects)");
  return out;
}

std::vector<ChoiceItem> read_choice_items(const std::string& path) {
  return parse_choice_items(read_json_file(path), path);
}

std::vector<EncodedItem> encode_choice_items(const std::vector<ChoiceItem>& items,
                                             const data::Tokenizer& tok, int64_t window) {
  std::vector<EncodedItem> out;
  for (const ChoiceItem& item : items) {
    std::vector<uint32_t> context = tok.encode(item.context);
    if (context.empty()) context.push_back(tok.eot_id());
    EncodedItem& enc = out.emplace_back();
    enc.label = item.label;
    for (size_t k = 0; k < item.endings.size(); ++k) {
      const std::string& e = item.endings[k];
      const bool joined = space(e.front()) || (!item.context.empty() && space(item.context.back()));
      const std::string continuation = joined ? e : " " + e;
      const std::vector<uint32_t> ending = tok.encode_more(continuation);
      TESSERA_CHECK(int64_t(ending.size()) <= window, item.where, ": ending ", k, " is ",
                    ending.size(), " tokens; the model's context of ", window, " scores at most ",
                    window, " after a token of context");
      const size_t keep = std::min(context.size(), size_t(window) + 1 - ending.size());
      std::vector<uint32_t>& row =
          enc.rows.emplace_back(context.end() - int64_t(keep), context.end());
      row.insert(row.end(), ending.begin(), ending.end());
      enc.scored.push_back(int64_t(ending.size()));
      enc.bytes.push_back(int64_t(continuation.size()));
    }
  }
  return out;
}

namespace {

// Each row's sum of log-probabilities of its scored targets, for every row of the batch's items
// in order, from one forward over all of them, rows padded at their end (causal attention: a
// row's scores never see its padding). Only the scored targets' losses are read back.
std::vector<double> score_batch(const nn::GPT& model, const std::vector<const EncodedItem*>& batch,
                                uint32_t pad) {
  NoGradGuard no_grad;
  size_t longest = 0, K = 0;
  for (const EncodedItem* item : batch)
    for (const auto& row : item->rows) longest = std::max(longest, row.size()), ++K;
  const int64_t T = int64_t(longest) - 1;
  std::vector<int32_t> inputs(K * size_t(T), int32_t(pad));
  // Target i of a row (row[i]) is predicted at position i - 1; the context's and the padding's
  // positions are not scored.
  std::vector<int32_t> targets(K * size_t(T), data::kIgnoreTarget);
  size_t r = 0;
  for (const EncodedItem* item : batch)
    for (size_t k = 0; k < item->rows.size(); ++k, ++r) {
      const std::vector<uint32_t>& row = item->rows[k];
      int32_t* in = inputs.data() + r * size_t(T);
      int32_t* tg = targets.data() + r * size_t(T);
      std::copy(row.begin(), row.end() - 1, in);
      for (size_t i = row.size() - size_t(item->scored[k]); i < row.size(); ++i)
        tg[i - 1] = int32_t(row[i]);
    }
  const Device dev = model_device(model);
  const Tensor host_targets = from_vector(targets, {int64_t(K), T});
  const std::vector<float> losses =
      ops::token_losses(model.forward(from_vector(inputs, {int64_t(K), T}).to(dev), false),
                        host_targets.to(dev), data::kIgnoreTarget, host_targets)
          .to(DType::F32)
          .to_vector<float>();
  std::vector<double> out(K, 0.0);
  for (size_t i = 0; i < losses.size(); ++i) out[i / size_t(T)] -= double(losses[i]);
  return out;
}

}  // namespace

EndingScores score_endings(const nn::GPT& model, const data::Tokenizer& tok,
                           const ChoiceItem& item) {
  const std::vector<EncodedItem> enc = encode_choice_items({item}, tok, model.config().block_size);
  return {score_batch(model, {&enc[0]}, tok.eot_id()), enc[0].bytes};
}

int64_t best_choice(const std::vector<double>& values) {
  TESSERA_CHECK(!values.empty(), "best_choice: no values");
  return int64_t(std::max_element(values.begin(), values.end()) - values.begin());
}

ChoiceResult evaluate_choices(const nn::GPT& model, const std::vector<EncodedItem>& items,
                              uint32_t pad, dist::Communicator* comm) {
  const size_t world = comm ? size_t(comm->world()) : 1, rank = comm ? size_t(comm->rank()) : 0;
  // Items are scored several at once: rows up to kBatchRows, and logits up to kBatchFloats on
  // the device (rows x length x vocabulary: about 3 items of HellaSwag's length at GPT-2's
  // vocabulary), but always one whole item.
  constexpr int64_t kBatchRows = 64, kBatchFloats = int64_t(1) << 26;
  const int64_t V = model.config().vocab_size;
  // Items in order of their longest row, so that a batch pads its rows little; this rank takes
  // every world-th of that order (ranks get alike lengths).
  auto longest_row = [](const EncodedItem& item) {
    size_t len = 0;
    for (const auto& row : item.rows) len = std::max(len, row.size());
    return len;
  };
  std::vector<std::pair<size_t, size_t>> by_length;  // (longest row, index)
  for (size_t i = 0; i < items.size(); ++i) by_length.emplace_back(longest_row(items[i]), i);
  std::sort(by_length.begin(), by_length.end());
  std::vector<std::pair<size_t, size_t>> mine;  // this rank's (longest row, index), ascending
  for (size_t i = rank; i < by_length.size(); i += world) mine.push_back(by_length[i]);
  double right = 0, right_norm = 0, chance = 0;
  for (size_t first = 0; first < mine.size();) {
    std::vector<const EncodedItem*> batch;
    int64_t rows = 0;
    size_t next = first;
    for (; next < mine.size(); ++next) {
      const auto [longest, index] = mine[next];
      const EncodedItem& item = items[index];
      const int64_t n = rows + int64_t(item.rows.size());
      // Lengths ascend: this item's longest row is the batch's.
      if (!batch.empty() && (n > kBatchRows || n * int64_t(longest) * V > kBatchFloats)) break;
      batch.push_back(&item), rows = n;
    }
    const std::vector<double> sums = score_batch(model, batch, pad);
    size_t at = 0;
    for (const EncodedItem* item : batch) {
      std::vector<double> logprob, per_byte;
      for (size_t k = 0; k < item->rows.size(); ++k, ++at) {
        logprob.push_back(sums[at]);
        per_byte.push_back(sums[at] / double(item->bytes[k]));
      }
      right += best_choice(logprob) == item->label;
      right_norm += best_choice(per_byte) == item->label;
      chance += 1.0 / double(item->rows.size());
    }
    first = next;
  }
  if (world > 1) {
    const std::vector<double> sums =
        comm->all_reduce_host({right, right_norm, chance}, dist::ReduceOp::Sum);
    right = sums[0], right_norm = sums[1], chance = sums[2];
  }
  ChoiceResult r;
  r.items = int64_t(items.size());
  if (r.items) {
    r.acc = right / double(r.items);
    r.acc_norm = right_norm / double(r.items);
    r.chance = chance / double(r.items);
  }
  return r;
}

ChoiceResult evaluate_choices(const nn::GPT& model, const data::Tokenizer& tok,
                              const std::vector<ChoiceItem>& items, dist::Communicator* comm) {
  return evaluate_choices(model, encode_choice_items(items, tok, model.config().block_size),
                          tok.eot_id(), comm);
}

TrainingChoices::TrainingChoices(const Config& cfg) {
  try {
    const auto tok = data::make_tokenizer(cfg.data.tokenizer, cfg.data.tokenizer_dir);
    items_ = encode_choice_items(read_choice_items(cfg.eval.choices), *tok, cfg.model.block_size);
    pad_ = tok->eot_id();
  } catch (const Error& e) {
    TESSERA_FAIL("eval.choices: ", e.what());
  }
}

}  // namespace tessera::train
