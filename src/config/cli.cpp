// Command-line parsing for the binaries. Every config flag is declared as a string and turned into
// a `key=value` override, so a value typed on the command line is checked by the same parser, with
// the same message, as one written in a YAML file.
#include "config/cli.h"

#include <iostream>
#include <string_view>

#include "core/error.h"

namespace tessera {

namespace {

struct Shorthand {
  const char* flag;
  const char* key;
  const char* arg;
  const char* help;
};

constexpr Shorthand kShorthands[] = {
    {"resume", "checkpoint.resume", "PATH", "resume a run: a checkpoint, or 'auto' for the newest"},
    {"init", "checkpoint.init", "PATH",
     "take initial weights (only) from a checkpoint, or hf:DIR (a Hugging Face directory)"},
    {"max-steps", "train.max_steps", "N", "optimizer steps to train for"},
    {"device", "train.device", "DEV", "cpu or cuda"},
    {"run-name", "train.run_name", "NAME", "run directory under checkpoint.dir"},
    {"lr", "optim.lr", "LR", "peak learning rate"},
    {"batch-size", "train.batch_size", "B", "micro-batch size (sequences per pass)"},
    {"lora.rank", "lora.rank", "R", "LoRA rank; > 0 freezes the --init model and trains adapters"},
    {"lora.alpha", "lora.alpha", "A", "LoRA scale numerator (update x alpha / rank)"},
    {"lora.dropout", "lora.dropout", "P", "dropout on the LoRA adapters' input"},
    {"lora.targets", "lora.targets", "LIST", "projections to adapt: q,k,v,o,gate,up,down,head,all"},
    {"quantize", "lora.quantize", "KIND", "frozen base in 4-bit: nf4 or nf4-dq (QLoRA)"},
};

const Shorthand* find_shorthand(std::string_view flag) {
  for (const auto& s : kShorthands) {
    if (flag == s.flag) return &s;
  }
  return nullptr;
}

void add_config_options(cxxopts::Options& options) {
  auto add = options.add_options("config");
  add("config", "YAML config file", cxxopts::value<std::string>(), "FILE");
  // A plain string, not a vector: cxxopts would split a vector's values at commas, and a value
  // such as a shard list may hold one. Repeats are read in order from arguments().
  add("set", "override a config key (repeatable)", cxxopts::value<std::string>(), "KEY=VALUE");
  for (const auto& s : kShorthands) {
    add(s.flag, std::string(s.help) + " (= --set " + s.key + "=" + s.arg + ")",
        cxxopts::value<std::string>(), s.arg);
  }
  add("h,help", "print this help");
}

}  // namespace

cxxopts::ParseResult parse_flags(cxxopts::Options& options, int argc, const char* const* argv,
                                 bool* help) {
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    TESSERA_FAIL("command line: ", e.what());
  }
  *help = args.count("help") > 0;
  if (!*help && !args.unmatched().empty()) {
    TESSERA_FAIL("command line: unexpected argument '", args.unmatched().front(), "'");
  }
  return args;
}

bool parse_flags_or_help(cxxopts::Options& options, int argc, const char* const* argv,
                         cxxopts::ParseResult& args) {
  bool help = false;
  args = parse_flags(options, argc, argv, &help);
  if (help) std::cout << options.help() << "\n";
  return !help;
}

CommandLine parse_command_line(int argc, const char* const* argv, cxxopts::Options& options,
                               bool config_required) {
  CommandLine cl;
  try {
    add_config_options(options);
  } catch (const cxxopts::exceptions::exception& e) {
    TESSERA_FAIL("command line: ", e.what());
  }
  cl.args = parse_flags(options, argc, argv, &cl.help);
  if (cl.help) return cl;

  for (const auto& kv : cl.args.arguments()) {
    if (kv.key() == "config") {
      TESSERA_CHECK(cl.config_path.empty(), "command line: --config given twice ('", cl.config_path,
                    "' and '", kv.value(), "')");
      cl.config_path = kv.value();
    } else if (kv.key() == "set") {
      cl.overrides.push_back(kv.value());
    } else if (const Shorthand* s = find_shorthand(kv.key())) {
      cl.overrides.push_back(std::string(s->key) + "=" + kv.value());
    }
  }

  if (!cl.config_path.empty()) {
    cl.config = load_config(cl.config_path, cl.overrides);
  } else {
    TESSERA_CHECK(!config_required, "command line: --config FILE is required");
    cl.config = parse_config("", "command line", cl.overrides);  // defaults + overrides
  }
  return cl;
}

int run_main(const char* app, const std::function<int()>& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::cerr << app << ": " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace tessera
