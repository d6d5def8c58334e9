// parse_flags, the command line of the binaries without a config (generate, eval, tokenize, ...):
// what it refuses, naming the flag.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdint>
#include <string>
#include <vector>

#include "config/cli.h"
#include "config/expect_contains.h"
#include "core/error.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;

// A generate-like binary's own flags, parsed with parse_flags (no config).
struct Flags {
  cxxopts::Options options{"generate", "test"};
  Flags() {
    options.add_options()("prompt", "text", cxxopts::value<std::string>()->default_value("\n"))(
        "temperature", "t", cxxopts::value<double>()->default_value("0.8"))(
        "max-new-tokens", "n", cxxopts::value<int64_t>()->default_value("200"))(
        "seed", "s", cxxopts::value<uint64_t>()->default_value("42"))(
        "iters", "i", cxxopts::value<int>()->default_value("3"))("input", "repeatable",
                                                                 cxxopts::value<std::string>())(
        "set", "a list", cxxopts::value<std::vector<std::string>>())("dry-run", "a switch")(
        "h,help", "help");
    options.add_options("widths")("u32", "", cxxopts::value<uint32_t>())(
        "u16", "", cxxopts::value<uint16_t>())("i16", "", cxxopts::value<int16_t>());
  }
  cxxopts::ParseResult parse(std::vector<std::string> args) {
    args.insert(args.begin(), "generate");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    argv.push_back(nullptr);  // argv[argc], as main() gets it
    bool help = false;
    return parse_flags(options, int(argv.size()) - 1, argv.data(), &help, {"input"});
  }
  std::string error(const std::vector<std::string>& args) {
    return error_of([&] { parse(args); });
  }
};

TEST(CommandLine, a_value_its_type_refuses_names_the_flag_and_why) {
  Flags f;
  EXPECT_CONTAINS(f.error({"--temperature", "nan"}), "--temperature: 'nan' is not a valid number");
  EXPECT_CONTAINS(f.error({"--prompt", "x", "--temperature=inf"}),
                  "--temperature: 'inf' is not a valid number");
  EXPECT_CONTAINS(f.error({"--temperature", "1e999"}),
                  "--temperature: '1e999' is out of range for a number");
  EXPECT_CONTAINS(f.error({"--max-new-tokens", "2.5"}),
                  "--max-new-tokens: '2.5' is not an integer");
  EXPECT_CONTAINS(f.error({"--max-new-tokens="}), "--max-new-tokens: '' is not an integer");
  EXPECT_CONTAINS(f.error({"--max-new-tokens", "99999999999999999999"}),
                  "--max-new-tokens: '99999999999999999999' is out of range "
                  "[-9223372036854775808, 9223372036854775807]");
  EXPECT_CONTAINS(f.error({"--seed", "-1"}),
                  "--seed: '-1' is out of range [0, 18446744073709551615]");
  EXPECT_CONTAINS(f.error({"--seed", "18446744073709551616"}), "is out of range [0, 1844674407");
  EXPECT_CONTAINS(f.error({"--iters", "3000000000"}), "[-2147483648, 2147483647]");
  EXPECT_CONTAINS(f.error({"--dry-run=maybe"}), "--dry-run: 'maybe' is not true or false");
  // The flag that failed, not the first valued one.
  EXPECT_CONTAINS(f.error({"--temperature", "0.5", "--seed", "7", "--max-new-tokens", "2x"}),
                  "--max-new-tokens: '2x' is not an integer");
  const auto args = f.parse({"--temperature", "1e-3", "--seed", "18446744073709551615",
                             "--max-new-tokens=-5", "--iters", "0x10"});
  EXPECT_EQ(args["temperature"].as<double>(), 1e-3);
  EXPECT_EQ(args["seed"].as<uint64_t>(), 18446744073709551615ull);
  EXPECT_EQ(args["max-new-tokens"].as<int64_t>(), -5);  // the binary checks its own range
  EXPECT_EQ(args["iters"].as<int>(), 16);
}

// The range named is the option's own type's, found by the widest bound it accepts. (No binary
// declares an 8-bit option: cxxopts 3.1.1 reads --x=300 into an int8_t as 44.)
TEST(CommandLine, an_integer_out_of_range_names_the_bounds_of_its_type) {
  Flags f;
  EXPECT_CONTAINS(f.error({"--u32", "4294967296"}),
                  "--u32: '4294967296' is out of range [0, 4294967295]");
  EXPECT_CONTAINS(f.error({"--u32", "-1"}), "--u32: '-1' is out of range [0, 4294967295]");
  EXPECT_CONTAINS(f.error({"--u16", "65536"}), "--u16: '65536' is out of range [0, 65535]");
  EXPECT_CONTAINS(f.error({"--i16", "-32769"}), "--i16: '-32769' is out of range [-32768, 32767]");
  EXPECT_CONTAINS(f.error({"--i16", "32768"}), "--i16: '32768' is out of range [-32768, 32767]");
  const auto args = f.parse({"--u32", "4294967295", "--u16", "65535", "--i16", "-32768"});
  EXPECT_EQ(args["u32"].as<uint32_t>(), 4294967295u);
  EXPECT_EQ(args["u16"].as<uint16_t>(), 65535);
  EXPECT_EQ(args["i16"].as<int16_t>(), -32768);
}

// What cxxopts refuses on its own (an unknown flag, a value missing at the end, anything after
// "--") is reported as a command-line error, never taken for an empty parse.
TEST(CommandLine, unknown_flags_missing_values_and_words_after_a_double_dash_are_refused) {
  Flags f;
  EXPECT_CONTAINS(f.error({"--bogus"}), "command line: ");
  EXPECT_CONTAINS(f.error({"--bogus"}), "bogus");
  EXPECT_CONTAINS(f.error({"--prompt", "x", "--seed"}), "command line: ");
  EXPECT_CONTAINS(f.error({"--prompt", "x", "--seed"}), "seed");
  // After "--" no word is a flag: "--help" there is no forgotten value of --seed.
  EXPECT_CONTAINS(f.error({"--", "--seed", "--help"}),
                  "command line: unexpected argument '--seed'");
  EXPECT_CONTAINS(f.error({"stray"}), "command line: unexpected argument 'stray'");
}

// An unknown flag is named with the one it most likely meant: near in spelling, written with '_',
// or holding its words; in a binary with a config, a config key written as a flag is shown as the
// --set that sets it. A value of a flag is never taken for an unknown flag.
TEST(CommandLine, an_unknown_flag_is_named_with_the_flag_it_most_likely_meant) {
  Flags f;
  EXPECT_CONTAINS(f.error({"--max-tokens", "5"}),
                  "command line: unknown flag --max-tokens (did you mean --max-new-tokens?)");
  EXPECT_CONTAINS(f.error({"--tokens=5"}),
                  "unknown flag --tokens (did you mean --max-new-tokens?)");
  EXPECT_CONTAINS(f.error({"--max_new_tokens", "5"}), "(did you mean --max-new-tokens?)");
  EXPECT_CONTAINS(f.error({"--temprature", "1"}), "(did you mean --temperature?)");
  EXPECT_CONTAINS(f.error({"--prompt", "--bogus", "--sede", "1"}),
                  "unknown flag --sede (did you mean --seed?)");
  const std::string far = f.error({"--zzzz"});
  EXPECT_CONTAINS(far, "command line: unknown flag --zzzz");
  EXPECT_EQ(far.find("did you mean"), std::string::npos) << far;
  // Config keys are suggested only where the config flags are: here "set" is the binary's own.
  EXPECT_EQ(f.error({"--warmup-steps", "5"}).find("--set"), std::string::npos);

  auto train_error = [](std::vector<const char*> argv) {
    cxxopts::Options options("train", "test");
    argv.insert(argv.begin(), "train");
    return error_of([&] { parse_command_line(int(argv.size()), argv.data(), options, false); });
  };
  EXPECT_CONTAINS(train_error({"--warmup-steps", "50"}),
                  "unknown flag --warmup-steps (did you mean --set optim.warmup_steps=50?)");
  EXPECT_CONTAINS(train_error({"--warmup-steps", "--lr", "1e-3"}),
                  "(did you mean --set optim.warmup_steps=VALUE?)");
  EXPECT_CONTAINS(train_error({"--optim.lr=3e-4"}), "(did you mean --set optim.lr=3e-4?)");
  EXPECT_CONTAINS(train_error({"--model.rope_scaling.type=yarn"}),
                  "(did you mean --set model.rope_scaling.type=yarn?)");
  EXPECT_CONTAINS(train_error({"--max_steps", "5"}), "(did you mean --max-steps?)");
  EXPECT_CONTAINS(train_error({"--run_name=x"}), "(did you mean --run-name?)");
  EXPECT_CONTAINS(train_error({"--lr", "1e-3", "--confg", "x.yaml"}),
                  "unknown flag --confg (did you mean --config?)");
}

TEST(CommandLine, a_flag_given_twice_is_refused_unless_it_repeats) {
  Flags f;
  EXPECT_CONTAINS(f.error({"--temperature", "0", "--temperature", "5"}),
                  "command line: --temperature given twice ('0' and '5')");
  EXPECT_CONTAINS(f.error({"--prompt=a", "--seed", "1", "--prompt", "b"}),
                  "--prompt given twice ('a' and 'b')");
  EXPECT_CONTAINS(f.error({"--dry-run", "--dry-run"}), "--dry-run given twice");
  bool help = false;
  const char* argv[] = {"generate", "--help", "--seed", "1", "--seed", "2"};
  parse_flags(f.options, 6, argv, &help);  // --help prints the help whatever else is there
  EXPECT_TRUE(help);
  const auto args = f.parse({"--input", "a,b", "--input", "c", "--set", "x=1", "--set", "y=2"});
  std::vector<std::string> inputs;
  for (const auto& kv : args.arguments())
    if (kv.key() == "input") inputs.push_back(kv.value());
  EXPECT_EQ(inputs, (std::vector<std::string>{"a,b", "c"}));
  EXPECT_EQ(args["set"].as<std::vector<std::string>>(), (std::vector<std::string>{"x=1", "y=2"}));
}

TEST(CommandLine, a_value_that_is_one_of_the_flags_is_refused) {
  Flags f;
  EXPECT_CONTAINS(f.error({"--prompt", "--help"}),
                  "command line: --prompt: its value '--help' is a flag; write --prompt=--help to "
                  "mean it as the value");
  EXPECT_CONTAINS(f.error({"--prompt", "-h"}), "--prompt: its value '-h' is a flag");
  EXPECT_CONTAINS(f.error({"--prompt", "--seed=3"}), "--prompt: its value '--seed=3' is a flag");
  EXPECT_EQ(f.parse({"--prompt=--help"})["prompt"].as<std::string>(), "--help");
  EXPECT_EQ(f.parse({"--prompt", "--not-a-flag"})["prompt"].as<std::string>(), "--not-a-flag");
  EXPECT_EQ(f.parse({"--prompt", "-"})["prompt"].as<std::string>(), "-");
}

// The binaries without a config: --help prints the help and tells main to stop.
TEST(CommandLine, parse_flags_or_help_says_whether_to_go_on) {
  Flags f;
  cxxopts::ParseResult args;
  const char* run[] = {"generate", "--seed", "7", nullptr};
  EXPECT_TRUE(parse_flags_or_help(f.options, 3, run, args));
  EXPECT_EQ(args["seed"].as<uint64_t>(), 7u);
  const char* help[] = {"generate", "--help", nullptr};
  ::testing::internal::CaptureStdout();
  const bool go_on = parse_flags_or_help(f.options, 2, help, args);
  const std::string printed = ::testing::internal::GetCapturedStdout();
  EXPECT_FALSE(go_on);
  EXPECT_CONTAINS(printed, "--temperature");
}

// A binary whose own options clash with the config flags is told which, as a command-line error.
TEST(CommandLine, an_option_that_clashes_with_a_config_flag_is_named) {
  cxxopts::Options options("train", "test");
  options.add_options()("lr", "the binary's own", cxxopts::value<double>());
  const char* argv[] = {"train", nullptr};
  EXPECT_CONTAINS(error_of([&] { parse_command_line(1, argv, options, false); }), "command line: ");
  EXPECT_CONTAINS(error_of([&] { parse_command_line(1, argv, options, false); }), "lr");
}

// run_main: the body's exit code, or 1 and the error after the binary's name; a write past a file
// size limit fails (EFBIG) instead of ending the process with SIGXFSZ.
TEST(CommandLine, run_main_reports_errors_and_ignores_sigxfsz) {
  struct sigaction old {};
  sigaction(SIGXFSZ, nullptr, &old);
  std::signal(SIGXFSZ, SIG_DFL);
  EXPECT_EQ(run_main("app", [] { return 3; }), 3);
  struct sigaction now {};
  sigaction(SIGXFSZ, nullptr, &now);
  EXPECT_EQ(now.sa_handler, SIG_IGN);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_main("app", []() -> int { TESSERA_FAIL("it broke"); }), 1);
  EXPECT_CONTAINS(::testing::internal::GetCapturedStderr(), "app: it broke");
  sigaction(SIGXFSZ, &old, nullptr);
}

}  // namespace
}  // namespace tessera
