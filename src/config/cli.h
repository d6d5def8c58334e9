// The command line every binary shares: one call parses it and returns a validated Config, plus
// the cxxopts result for the flags the binary added itself.
//
//   cxxopts::Options options("train", "Train a GPT-style model");
//   options.add_options()("dry-run", "build everything, train nothing");   // binary's own flags
//   CommandLine cl = parse_command_line(argc, argv, options);
//   if (cl.help) { std::cout << options.help(); return 0; }
//   run(cl.config, cl.args.count("dry-run") > 0);
//
// Flags added here (a binary must not add them too):
//   --config FILE        the YAML config (required unless config_required is false)
//   --set KEY=VALUE      any key, repeatable: --set model.n_layer=6 --set optim.lr=3e-4
//   --resume, --init, --max-steps, --device, --run-name, --lr, --batch-size
//                        shorthands for checkpoint.resume, checkpoint.init, train.max_steps,
//                        train.device, train.run_name, optim.lr, train.batch_size
//   --lora.rank, --lora.alpha, --lora.dropout, --lora.targets, --quantize
//                        the lora section: lora.rank ... lora.targets, lora.quantize
//   -h, --help
// Overrides apply after the file in command-line order, so the last word on a key wins. Unknown
// flags, stray arguments, bad values and a flag other than --set given twice are tessera::Errors.
#pragma once

#include <cxxopts.hpp>
#include <functional>
#include <string>
#include <vector>

#include "config/config.h"

namespace tessera {

struct CommandLine {
  Config config;                       // validated; defaults + overrides when no --config
  cxxopts::ParseResult args;           // everything parsed, the binary's own flags included
  std::string config_path;             // "" when --config was not given
  std::vector<std::string> overrides;  // "key=value", in order, shorthands spelt out; to re-apply
                                       // on a config read from elsewhere (a checkpoint)
  bool help = false;                   // --help: nothing else was parsed or checked
};

// Parses argv against `options` alone (binaries without a config): a cxxopts error or a stray
// argument is a tessera::Error "command line: ..."; *help is set when -h/--help was given. Also
// refused, naming the flag:
//   a value its type does not hold   "--temperature: 'nan' is not a valid number",
//                                    "--seed: '-1' is out of range [0, 18446744073709551615]"
//   a flag given twice               "--output given twice ('a' and 'b')", unless it is named in
//                                    `repeatable` or holds a list (value<std::vector<...>>)
//   a value that is one of the flags "--prompt: its value '--help' is a flag; write
//                                    --prompt=--help to mean it as the value"
cxxopts::ParseResult parse_flags(cxxopts::Options& options, int argc, const char* const* argv,
                                 bool* help, const std::vector<std::string>& repeatable = {});

// parse_flags for a binary's main: on -h/--help prints the help and returns false (exit 0 then).
bool parse_flags_or_help(cxxopts::Options& options, int argc, const char* const* argv,
                         cxxopts::ParseResult& args,
                         const std::vector<std::string>& repeatable = {});

// Adds the flags above to `options` (once per Options), parses argv and loads the config.
CommandLine parse_command_line(int argc, const char* const* argv, cxxopts::Options& options,
                               bool config_required = true);

// A binary's main around `body`: an exception (a tessera::Error names the file, key or shape) is
// printed as "<app>: <message>" on stderr and the exit code is 1. SIGXFSZ is ignored first, so a
// write past a file size limit (ulimit -f) fails with an error naming the file instead of ending
// the process with its temporary files left behind.
//   int main(int argc, char** argv) { return run_main("eval", [&] { return run(argc, argv); }); }
int run_main(const char* app, const std::function<int()>& body);

}  // namespace tessera
