// The strict JSON reader behind safetensors headers and Hugging Face's config.json (json.h): what
// it reads, what it refuses (with the source's name, the byte offset and the reason), and the
// writer's escaping read back.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "checkpoint/json.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;

TEST(Json, reads_every_kind_through_any_whitespace) {
  const std::string text =
      " {\n\t\"model_type\" :\r\n \"gpt2\",\n  \"n_layer\": 12, \"eps\": -1.5e-5,\n"
      "  \"tie\": true, \"bias\": false, \"rope\": null,\n"
      "  \"shape\": [ 768 , [ ], { } ], \"empty\": {}\n}\n ";
  const Json j = parse_json(text, "config.json");
  ASSERT_TRUE(j.is(Json::Kind::Object));
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.members()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"model_type", "n_layer", "eps", "tie", "bias", "rope",
                                            "shape", "empty"}));  // file order
  EXPECT_EQ(j.at("model_type").str(), "gpt2");
  EXPECT_EQ(j.at("n_layer").as_int(), 12);
  EXPECT_DOUBLE_EQ(j.at("eps").as_double(), -1.5e-5);
  EXPECT_TRUE(j.at("tie").boolean());
  EXPECT_FALSE(j.at("bias").boolean());
  EXPECT_TRUE(j.at("rope").is(Json::Kind::Null));
  const std::vector<Json>& shape = j.at("shape").items();
  ASSERT_EQ(shape.size(), 3u);
  EXPECT_EQ(shape[0].as_int(), 768);
  EXPECT_TRUE(shape[1].items().empty());
  EXPECT_TRUE(shape[2].members().empty());
  EXPECT_TRUE(j.at("empty").is(Json::Kind::Object));
  EXPECT_EQ(j.get("absent"), nullptr);
  EXPECT_EQ(parse_json("0", "x").as_int(), 0);
  EXPECT_EQ(parse_json("-9223372036854775808", "x").as_int(), INT64_MIN);
  EXPECT_DOUBLE_EQ(parse_json("2E+3", "x").as_double(), 2000.0);
  EXPECT_DOUBLE_EQ(parse_json("1e5", "x").as_double(), 1e5);  // an exponent without a sign
  EXPECT_DOUBLE_EQ(parse_json("-0.25e-2", "x").as_double(), -0.0025);
}

TEST(Json, escapes_decode_to_utf8) {
  // \u00e9 is two UTF-8 bytes, \u20ac three, the surrogate pair \ud83d\ude00 (U+1F600) four.
  const Json s = parse_json(R"("q\"b\\s\/\b\f\n\r\t\u0041\u00e9\u20AC\ud83d\ude00")", "x");
  EXPECT_EQ(s.str(), "q\"b\\s/\b\f\n\r\tA\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
  // The edges of the surrogate ranges: U+10000 (the first pair) and U+E000 (just past them).
  EXPECT_EQ(parse_json(R"("\ud800\udc00\ue000")", "x").str(), "\xF0\x90\x80\x80\xEE\x80\x80");
}

TEST(Json, the_writers_escaping_reads_back) {
  std::string s = "quote \" backslash \\ e\xC3\xA9 ";
  for (int c = 1; c < 0x20; ++c) s += char(c);
  const std::string escaped = json_escape(s);
  for (const char c : escaped) EXPECT_GE(static_cast<unsigned char>(c), 0x20u) << escaped;
  EXPECT_EQ(parse_json("\"" + escaped + "\"", "x").str(), s);
}

TEST(Json, malformed_text_is_refused_naming_the_source_the_byte_and_the_reason) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "at byte 0: unexpected end of text"},
      {"{\"a\":1,}", "at byte 7: expected a string key"},
      {"{\"a\" 1}", "expected ':' after key \"a\""},
      {"{\"a\":1 \"b\":2}", "expected ',' or '}' in an object"},
      {"[1 2]", "expected ',' or ']' in an array"},
      {"[1,]", "at byte 3: unexpected ']'"},
      {"{\"a\":1,\"a\":2}", "duplicate key \"a\""},
      {"tru", "expected 'true'"},
      {"fals", "expected 'false'"},
      {"nul", "expected 'null'"},
      {"01", "unexpected '1' after the value"},
      {"{\"a\":1} x", "unexpected 'x' after the value"},
      {"-", "malformed number"},
      {"1.", "malformed number"},
      {"1e+", "malformed number"},
      {"+1", "unexpected '+'"},
      {"\"abc", "unterminated string"},
      {"\"a\nb\"", "control character in a string"},
      {"\"\\", "unterminated escape"},
      {"\"\\q\"", "bad escape '\\q'"},
      {"\"\\u12", "truncated \\u escape"},
      {"\"\\u12g4\"", "bad hex digit in a \\u escape"},
      {"\"\\ud800\"", "unpaired surrogate"},
      {"\"\\ud800\\u0041\"", "unpaired surrogate"},
      {"\"\\udc00\"", "unpaired surrogate"},
      {"\"\\ud800xudc00\"", "unpaired surrogate"},
  };
  for (const auto& [text, reason] : cases) {
    const std::string msg = error_of([&] { parse_json(text, "model.safetensors header"); });
    EXPECT_NE(msg.find("model.safetensors header: JSON error at byte "), std::string::npos)
        << text << " -> " << msg;
    EXPECT_NE(msg.find(reason), std::string::npos) << text << " -> " << msg;
  }
}

TEST(Json, nesting_stops_at_64_levels) {
  // The n-th '[' is read at depth n - 1: 65 of them reach depth 64, 66 would reach 65.
  EXPECT_NO_THROW(parse_json(std::string(65, '[') + std::string(65, ']'), "x"));
  EXPECT_NE(error_of([] { parse_json(std::string(66, '[') + std::string(66, ']'), "x"); })
                .find("nested deeper than 64 levels"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_json(std::string(100000, '['), "x"); }).find("nested deeper"),
            std::string::npos);  // hostile input: an error, not a stack overflow
}

TEST(Json, accessors_name_the_key_and_refuse_what_does_not_fit) {
  const Json j = parse_json(
      R"({"n": 1.5, "big": 9223372036854775808, "huge": 1e999, "tiny": 1e-400, "s": "x"})", "x");
  const auto has = [](const std::string& msg, const std::string& what) {
    return msg.find(what) != std::string::npos;
  };
  EXPECT_TRUE(has(error_of([&] { j.at("n").as_int("n_layer"); }),
                  "n_layer: expected an integer that fits 64 bits, got 1.5"));
  EXPECT_TRUE(has(error_of([&] { j.at("big").as_int("big"); }), "got 9223372036854775808"));
  EXPECT_TRUE(has(error_of([&] { j.at("huge").as_double("eps"); }),
                  "eps: 1e999 is outside the range of a double"));
  EXPECT_TRUE(has(error_of([&] { j.at("tiny").as_double("eps"); }),
                  "eps: 1e-400 is outside the range of a double"));
  EXPECT_TRUE(has(error_of([&] { j.at("s").as_int("k"); }), "k: expected an integer, got a string"));
  EXPECT_TRUE(has(error_of([&] { j.at("s").as_double("k"); }), "k: expected a number, got a string"));
  EXPECT_TRUE(has(error_of([&] { j.at("n").str("k"); }), "k: expected a string, got a number"));
  EXPECT_TRUE(has(error_of([&] { j.at("s").boolean("k"); }),
                  "k: expected true or false, got a string"));
  EXPECT_TRUE(has(error_of([&] { j.at("s").items("k"); }), "k: expected an array, got a string"));
  EXPECT_TRUE(has(error_of([&] { j.at("s").members("k"); }),
                  "k: expected an object, got a string"));
  EXPECT_TRUE(has(error_of([&] { j.at("missing"); }), "missing key \"missing\""));
  EXPECT_TRUE(has(error_of([&] { parse_json("null", "x").items("k"); }), "got null"));
  EXPECT_TRUE(has(error_of([&] { parse_json("[]", "x").str("k"); }), "got an array"));
  EXPECT_TRUE(has(error_of([&] { parse_json("{}", "x").str("k"); }), "got an object"));
  EXPECT_TRUE(has(error_of([&] { parse_json("true", "x").str("k"); }), "got a boolean"));
}

}  // namespace
}  // namespace tessera
