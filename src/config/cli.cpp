// Command-line parsing for the binaries. Every config flag is declared as a string and turned into
// a `key=value` override, so a value typed on the command line is checked by the same parser, with
// the same message, as one written in a YAML file.
#include "config/cli.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string_view>

#include "core/error.h"
#include "core/text.h"

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

// What the parser needs to know of one option, read from the help groups (cxxopts keeps its own map
// private): whether it takes a value, and whether it may be given more than once.
struct FlagInfo {
  std::string name;  // as arguments() names it: the first long name, else the short one
  bool takes_value = false;
  bool repeatable = false;
  bool boolean = false;
};

// Every spelling of every option: "--name" and "-x" -> its FlagInfo.
std::map<std::string, FlagInfo> flag_table(const cxxopts::Options& options,
                                           const std::vector<std::string>& repeatable) {
  std::map<std::string, FlagInfo> table;
  for (const auto& group : options.groups()) {
    for (const auto& o : options.group_help(group).options) {
      FlagInfo info;
      info.name = o.l.empty() ? o.s : o.l.front();
      info.takes_value = !o.has_implicit;  // a boolean's implicit value: never the next word
      info.boolean = o.is_boolean;
      info.repeatable = o.is_container || std::find(repeatable.begin(), repeatable.end(),
                                                    info.name) != repeatable.end();
      for (const auto& l : o.l) table["--" + l] = info;
      if (!o.s.empty()) table["-" + o.s] = info;
    }
  }
  return table;
}

// One value given to a flag, as cxxopts will read argv: "--name=value", or "--name value" (also
// "-x value") for a flag that takes a value.
struct Given {
  const FlagInfo* flag;
  std::string value;
  bool attached;  // written --name=value
};

std::vector<Given> given_values(int argc, const char* const* argv,
                                const std::map<std::string, FlagInfo>& table) {
  std::vector<Given> out;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") break;  // the rest are plain arguments
    const size_t eq = arg.starts_with("--") ? arg.find('=') : std::string_view::npos;
    const auto it = table.find(std::string(arg.substr(0, eq)));
    if (it == table.end()) continue;  // not a flag, or one cxxopts will refuse by name
    if (eq != std::string_view::npos) {
      out.push_back({&it->second, std::string(arg.substr(eq + 1)), true});
    } else if (it->second.takes_value && i + 1 < argc) {
      out.push_back({&it->second, argv[++i], false});
    }
  }
  return out;
}

// A word that cxxopts would read as one of these options had it stood alone.
bool is_flag(const std::string& word, const std::map<std::string, FlagInfo>& table) {
  const size_t eq = word.starts_with("--") ? word.find('=') : std::string::npos;
  return table.count(word.substr(0, eq)) > 0;
}

// Whether cxxopts accepts `value` for the option: parses "--name=value" alone, so the option's
// own declared type decides (its incorrect_argument_type names neither the option nor the type).
bool accepts(cxxopts::Options& options, const std::string& name, const std::string& value) {
  const std::string program = options.program(), arg = "--" + name + "=" + value;
  const char* argv[] = {program.c_str(), arg.c_str()};
  try {
    options.parse(2, argv);
    return true;
  } catch (const cxxopts::exceptions::exception&) {
    return false;
  }
}

// An integer as cxxopts writes one: an optional '-', then decimal digits or 0x and hex digits.
bool is_integer_text(std::string_view s) {
  if (s.starts_with('-')) s.remove_prefix(1);
  const bool hex = s.starts_with("0x");
  if (hex) s.remove_prefix(2);
  return !s.empty() && std::all_of(s.begin(), s.end(), [&](char c) {
    return hex ? std::isxdigit((unsigned char)c) : std::isdigit((unsigned char)c);
  });
}

// Why the option's type refuses `value`, the type found by what else it accepts.
std::string why_refused(cxxopts::Options& options, const FlagInfo& flag, const std::string& value) {
  const std::string quoted = "'" + value + "'";
  if (flag.boolean) return quoted + " is not true or false";
  if (accepts(options, flag.name, "0.5")) {
    errno = 0;
    char* end = nullptr;
    std::strtod(value.c_str(), &end);
    const bool overflow = !value.empty() && *end == '\0' && errno == ERANGE;
    return quoted + (overflow ? " is out of range for a number" : " is not a valid number");
  }
  if (!accepts(options, flag.name, "0")) return quoted + " is not a valid value";
  if (!is_integer_text(value)) return quoted + " is not an integer";
  // Out of range: the widest of the usual integer types whose largest value it takes.
  const bool is_signed = accepts(options, flag.name, "-1");
  for (const int bits : {64, 32, 16, 8}) {
    const uint64_t max = is_signed ? (uint64_t(1) << (bits - 1)) - 1
                                   : (bits == 64 ? ~uint64_t(0) : (uint64_t(1) << bits) - 1);
    if (!accepts(options, flag.name, std::to_string(max))) continue;
    const std::string min = is_signed ? "-" + std::to_string(max + 1) : "0";
    return quoted + " is out of range [" + min + ", " + std::to_string(max) + "]";
  }
  return quoted + " is out of range";
}

// The first word of argv that looks like a long flag and is none ("--max-tokens=5" or "--max-tokens
// 5" -> "max-tokens" and "5"), skipping the values of the flags that take one; {"", ""} if none.
std::pair<std::string, std::string> unknown_flag(int argc, const char* const* argv,
                                                 const std::map<std::string, FlagInfo>& table) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") break;
    const size_t eq = arg.find('=');
    const std::string name(arg.substr(0, eq));
    const auto it = table.find(name);
    if (it != table.end()) {
      if (it->second.takes_value && eq == std::string_view::npos) ++i;  // its value
      continue;
    }
    if (!arg.starts_with("--") || arg.size() == 2) continue;
    if (eq != std::string_view::npos) return {name.substr(2), std::string(arg.substr(eq + 1))};
    // The next word, unless it is a flag too: most likely its value.
    const bool valued = i + 1 < argc && !std::string_view(argv[i + 1]).starts_with("--");
    return {name.substr(2), valued ? argv[i + 1] : ""};
  }
  return {"", ""};
}

// A word's hyphen-separated parts: "max-new-tokens" -> {max, new, tokens}.
std::vector<std::string> parts_of(std::string_view name) {
  std::vector<std::string> out;
  for (size_t at = 0; at <= name.size();) {
    const size_t end = std::min(name.find('-', at), name.size());
    if (end > at) out.emplace_back(name.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

// What an unknown flag most likely meant: " (did you mean --max-new-tokens?)" for --max-tokens,
// --max_steps or --tokens; with the config flags, " (did you mean --set optim.warmup_steps=V?)" for
// a config key written as a flag (--warmup-steps, --optim.lr=3e-4). "" when nothing is close.
std::string flag_suggestion(const std::string& name, const std::string& value,
                            const std::map<std::string, FlagInfo>& table) {
  std::vector<std::string> flags;
  for (const auto& [spelling, info] : table)
    if (spelling.starts_with("--")) flags.push_back(spelling.substr(2));
  std::string dashed = name, underscored = name;
  std::replace(dashed.begin(), dashed.end(), '_', '-');
  std::replace(underscored.begin(), underscored.end(), '-', '_');
  if (std::find(flags.begin(), flags.end(), dashed) != flags.end())
    return " (did you mean --" + dashed + "?)";
  if (table.count("--config")) {  // a binary with the config flags
    for (const std::string& key : config_keys()) {
      const std::string leaf = key.substr(key.find('.') + 1);
      if (underscored == key || underscored == leaf)
        return " (did you mean --set " + key + "=" + (value.empty() ? "VALUE" : printable(value)) +
               "?)";
    }
  }
  std::string guess = closest(dashed, flags);
  if (guess.empty()) {  // every part of the word in one flag's name, the fewest others beside
    const std::vector<std::string> want = parts_of(dashed);
    size_t extra = SIZE_MAX;
    for (const std::string& f : flags) {
      const std::vector<std::string> have = parts_of(f);
      const bool all = !want.empty() && std::all_of(want.begin(), want.end(), [&](auto& p) {
        return p.size() >= 3 && std::find(have.begin(), have.end(), p) != have.end();
      });
      if (all && have.size() >= want.size() && have.size() - want.size() < extra)
        guess = f, extra = have.size() - want.size();
    }
  }
  return guess.empty() ? "" : " (did you mean --" + guess + "?)";
}

}  // namespace

cxxopts::ParseResult parse_flags(cxxopts::Options& options, int argc, const char* const* argv,
                                 bool* help, const std::vector<std::string>& repeatable) {
  const std::map<std::string, FlagInfo> table = flag_table(options, repeatable);
  const std::vector<Given> given = given_values(argc, argv, table);
  // "--prompt --help" would sample from the text "--help": a flag's value that is itself one of
  // the flags is almost always a forgotten value.
  for (const Given& g : given) {
    TESSERA_CHECK(g.attached || !is_flag(g.value, table), "command line: --", g.flag->name,
                  ": its value '", g.value, "' is a flag; write --", g.flag->name, "=", g.value,
                  " to mean it as the value");
  }
  cxxopts::ParseResult args;
  try {
    args = options.parse(argc, argv);
  } catch (const cxxopts::exceptions::incorrect_argument_type& e) {
    for (const Given& g : given) {
      if (!accepts(options, g.flag->name, g.value)) {
        TESSERA_FAIL("command line: --", g.flag->name, ": ",
                     why_refused(options, *g.flag, g.value));
      }
    }
    TESSERA_FAIL("command line: ", e.what());
  } catch (const cxxopts::exceptions::exception& e) {
    const auto [name, value] = unknown_flag(argc, argv, table);
    if (!name.empty())
      TESSERA_FAIL("command line: unknown flag --", printable(name),
                   flag_suggestion(name, value, table));
    TESSERA_FAIL("command line: ", e.what());
  }
  *help = args.count("help") > 0;
  if (*help) return args;
  if (!args.unmatched().empty()) {
    TESSERA_FAIL("command line: unexpected argument '", args.unmatched().front(), "'");
  }
  // A flag given twice would silently keep its last value.
  std::map<std::string, std::string> seen;
  for (const auto& kv : args.arguments()) {
    const auto it = table.find("--" + kv.key());
    if (it == table.end() || it->second.repeatable) continue;
    const auto [first, inserted] = seen.emplace(kv.key(), kv.value());
    if (inserted) continue;
    if (it->second.takes_value) {
      TESSERA_FAIL("command line: --", kv.key(), " given twice ('", first->second, "' and '",
                   kv.value(), "')");
    }
    TESSERA_FAIL("command line: --", kv.key(), " given twice");
  }
  return args;
}

bool parse_flags_or_help(cxxopts::Options& options, int argc, const char* const* argv,
                         cxxopts::ParseResult& args, const std::vector<std::string>& repeatable) {
  bool help = false;
  args = parse_flags(options, argc, argv, &help, repeatable);
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
  cl.args = parse_flags(options, argc, argv, &cl.help, {"set"});
  if (cl.help) return cl;

  for (const auto& kv : cl.args.arguments()) {
    if (kv.key() == "config") {
      cl.config_path = kv.value();  // once: parse_flags refuses a second --config
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
  // A file size limit (ulimit -f) would end the process at the write past it with SIGXFSZ, no
  // message and its temporary files left behind; ignored, the write fails with EFBIG ("File too
  // large") and the error names the file like any other failed write.
  std::signal(SIGXFSZ, SIG_IGN);
  try {
    return body();
  } catch (const std::exception& e) {
    std::cerr << app << ": " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace tessera
