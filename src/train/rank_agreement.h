// What the ranks of a data-parallel run must share, checked before anything trains: the resolved
// config, key by key, and the shards the loaders read. Ranks started with another config
// file, another --set, or on a node whose data directory holds other shards would otherwise train
// side by side with gradients of different models or data averaged together: a silent wrong
// answer, or a hang in a collective of another size.
//
//   check_ranks_agree(*comm, cfg, {train.options().files, train.windows_per_epoch(),
//                                  val.options().files, train.contents_fingerprint(),
//                                  val.contents_fingerprint()});
//
// Rank 0's fingerprint of each line is sent to every rank (one all-reduce of host doubles), each
// rank compares its own, and a second all-reduce says which ranks differ. Then every rank throws:
// a rank that differs names its keys and values ("optim.lr is 0.002 here"), the others name the
// ranks that differ. A single process returns at once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "distributed/communicator.h"

namespace tessera::train {

// The shards a rank's loaders read: names in the loaders' order (matched in the rank's working
// directory), and the training windows they hold at the run's sequence length.
struct RankData {
  std::vector<std::string> train_files;
  int64_t train_windows = 0;
  std::vector<std::string> val_files;  // empty when the run does not evaluate
  // What the files hold (DataLoader::contents_fingerprint): shards of the same names and sizes on
  // another node may still hold other tokens (another tokenizer, another version of a corpus).
  uint32_t train_contents = 0, val_contents = 0;
};

// The lines the ranks compare: "section.key: value" for every key of to_yaml(cfg), then
// "data.train files: ...", "data.train windows: N", "data.train tokens: CRC-32C XXXXXXXX",
// "data.val files: ..." and "data.val tokens: CRC-32C XXXXXXXX".
std::vector<std::string> agreement_lines(const Config& cfg, const RankData& data);

// The keys of `mine` whose fingerprints differ from `reference` (one 32-bit fingerprint per line,
// as rank 0 sent them), each as "key is VALUE here"; "" when none does.
std::string differing_keys(const std::vector<std::string>& mine,
                           const std::vector<double>& reference);
std::vector<double> fingerprints(const std::vector<std::string>& lines);

void check_ranks_agree(dist::Communicator& comm, const Config& cfg, const RankData& data);

}  // namespace tessera::train
