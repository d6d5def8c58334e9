// Multiple-choice evaluation: see choices.h.
#include "train/choices.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autograd/autograd.h"
#include "checkpoint/json.h"
#include "core/error.h"
#include "core/text.h"
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
  TESSERA_CHECK(!std::filesystem::is_directory(path), "cannot read ", path, ": it is a directory");
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in, "cannot read ", path, ": ", std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  TESSERA_CHECK(!in.bad(), "error reading ", path);
  return parse_choice_items(text.str(), path);
}

namespace {

// A sequence to score: the context's tail and an ending, at most window + 1 tokens (the last one
// only a target); its last `scored` targets are the ending's.
struct Row {
  std::vector<uint32_t> tokens;
  int64_t scored = 0;
};

// The item's rows, one an ending, and each ending's bytes with its separator into *bytes.
std::vector<Row> rows_of(const ChoiceItem& item, const data::Tokenizer& tok, int64_t window,
                         std::vector<int64_t>* bytes) {
  std::vector<uint32_t> context = tok.encode(item.context);
  if (context.empty()) context.push_back(tok.eot_id());
  std::vector<Row> rows;
  for (size_t k = 0; k < item.endings.size(); ++k) {
    const std::string& e = item.endings[k];
    const bool joined = space(e.front()) || (!item.context.empty() && space(item.context.back()));
    const std::string continuation = joined ? e : " " + e;
    const std::vector<uint32_t> ending = tok.encode(continuation);
    TESSERA_CHECK(int64_t(ending.size()) <= window, item.where, ": ending ", k, " is ",
                  ending.size(), " tokens; the model's context of ", window, " scores at most ",
                  window, " after a token of context");
    const size_t keep = std::min(context.size(), size_t(window) + 1 - ending.size());
    Row row{std::vector<uint32_t>(context.end() - int64_t(keep), context.end()),
            int64_t(ending.size())};
    row.tokens.insert(row.tokens.end(), ending.begin(), ending.end());
    rows.push_back(std::move(row));
    bytes->push_back(int64_t(continuation.size()));
  }
  return rows;
}

// Each row's sum of log-probabilities of its scored targets, from one forward over all of them,
// rows padded at their end (causal attention: a row's scores never see its padding).
std::vector<double> score_rows(const nn::GPT& model, const std::vector<Row>& rows, uint32_t pad) {
  NoGradGuard no_grad;
  size_t longest = 0;
  for (const Row& r : rows) longest = std::max(longest, r.tokens.size());
  const int64_t K = int64_t(rows.size()), T = int64_t(longest) - 1;
  std::vector<int32_t> inputs(size_t(K * T), int32_t(pad));
  for (int64_t r = 0; r < K; ++r)
    for (size_t t = 0; t + 1 < rows[size_t(r)].tokens.size(); ++t)
      inputs[size_t(r * T) + t] = int32_t(rows[size_t(r)].tokens[t]);
  const Tensor ids = from_vector(inputs, {K, T}).to(model_device(model));
  const Tensor logp = ops::log_softmax(model.forward(ids, false));  // (K, T, V)
  const Tensor host = logp.to(DType::F32).to(Device::cpu()).contiguous();
  const float* lp = host.data<float>();
  const int64_t V = logp.size(2);
  std::vector<double> out;
  for (int64_t r = 0; r < K; ++r) {
    const std::vector<uint32_t>& row = rows[size_t(r)].tokens;
    double sum = 0;
    // Target i (row[i]) is predicted at position i - 1.
    for (size_t i = row.size() - size_t(rows[size_t(r)].scored); i < row.size(); ++i)
      sum += double(lp[size_t((r * T + int64_t(i) - 1) * V + row[i])]);
    out.push_back(sum);
  }
  return out;
}

}  // namespace

EndingScores score_endings(const nn::GPT& model, const data::Tokenizer& tok,
                           const ChoiceItem& item) {
  EndingScores s;
  s.logprob =
      score_rows(model, rows_of(item, tok, model.config().block_size, &s.bytes), tok.eot_id());
  return s;
}

int64_t best_choice(const std::vector<double>& values) {
  TESSERA_CHECK(!values.empty(), "best_choice: no values");
  return int64_t(std::max_element(values.begin(), values.end()) - values.begin());
}

ChoiceResult evaluate_choices(const nn::GPT& model, const data::Tokenizer& tok,
                              const std::vector<ChoiceItem>& all, dist::Communicator* comm) {
  const int world = comm ? comm->world() : 1, rank = comm ? comm->rank() : 0;
  std::vector<ChoiceItem> items;  // this rank's
  for (size_t i = size_t(rank); i < all.size(); i += size_t(world)) items.push_back(all[i]);
  // Items are scored several at once: rows up to kBatchRows, and up to kBatchFloats log-
  // probabilities read back (rows x length x vocabulary: about 3 items of HellaSwag's length at
  // GPT-2's vocabulary), but always one whole item.
  constexpr int64_t kBatchRows = 64, kBatchFloats = int64_t(1) << 26;
  const int64_t window = model.config().block_size, V = model.config().vocab_size;
  ChoiceResult r;
  int64_t right = 0, right_norm = 0;
  for (size_t first = 0; first < items.size();) {
    std::vector<Row> rows;
    std::vector<EndingScores> scores;
    size_t longest = 0, last = first;
    for (; last < items.size(); ++last) {
      EndingScores s;
      std::vector<Row> more = rows_of(items[last], tok, window, &s.bytes);
      size_t len = longest;
      for (const Row& row : more) len = std::max(len, row.tokens.size());
      const int64_t n = int64_t(rows.size() + more.size());
      if (last > first && (n > kBatchRows || n * int64_t(len) * V > kBatchFloats)) break;
      longest = len;
      rows.insert(rows.end(), more.begin(), more.end());
      scores.push_back(std::move(s));
    }
    const std::vector<double> sums = score_rows(model, rows, tok.eot_id());
    size_t at = 0;
    for (size_t i = first; i < last; ++i) {
      const ChoiceItem& item = items[i];
      EndingScores& s = scores[i - first];
      s.logprob.assign(sums.begin() + int64_t(at),
                       sums.begin() + int64_t(at + item.endings.size()));
      at += item.endings.size();
      std::vector<double> per_byte(s.logprob.size());
      for (size_t k = 0; k < per_byte.size(); ++k) per_byte[k] = s.logprob[k] / double(s.bytes[k]);
      right += best_choice(s.logprob) == item.label;
      right_norm += best_choice(per_byte) == item.label;
      r.chance += 1.0 / double(item.endings.size());
    }
    first = last;
  }
  double counts[3] = {double(right), double(right_norm), r.chance};
  if (world > 1) {
    const std::vector<double> sums =
        comm->all_reduce_host({counts[0], counts[1], counts[2]}, dist::ReduceOp::Sum);
    std::copy(sums.begin(), sums.end(), counts);
  }
  right = int64_t(counts[0]), right_norm = int64_t(counts[1]), r.chance = counts[2];
  r.items = int64_t(all.size());
  if (r.items) {
    r.acc = double(right) / double(r.items);
    r.acc_norm = double(right_norm) / double(r.items);
    r.chance /= double(r.items);
  }
  return r;
}

TrainingChoices::TrainingChoices(const Config& cfg) {
  try {
    tok_ = data::make_tokenizer(cfg.data.tokenizer, cfg.data.tokenizer_dir);
    items_ = read_choice_items(cfg.eval.choices);
    std::vector<int64_t> bytes;
    for (const ChoiceItem& item : items_) rows_of(item, *tok_, cfg.model.block_size, &bytes);
  } catch (const Error& e) {
    TESSERA_FAIL("eval.choices: ", e.what());
  }
}

}  // namespace tessera::train
