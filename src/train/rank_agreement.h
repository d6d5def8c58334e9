// What the ranks of a data-parallel run must share, checked before anything trains: the resolved
// config, key by key, the checkpoints the run starts from, and the shards the loaders read. Ranks
// started with another config file, another --set, on a node whose data directory holds other
// shards, or whose checkpoint.dir holds other checkpoints (a directory that is not shared: one
// rank resumes step 4, another starts fresh) would otherwise train side by side with gradients of
// different models or data averaged together: a silent wrong answer, or a hang in a collective of
// another size.
//
//   check_ranks_agree(*comm, cfg, {train.options().files, train.windows_per_epoch(),
//                                  val.options().files, train.contents_fingerprint(),
//                                  val.contents_fingerprint(), resumed_identity(resumed),
//                                  weights_identity(model.parameters())});
//
// Rank 0's fingerprint of each line is sent to every rank (one all-reduce of host doubles), each
// rank compares its own, and a second all-reduce says which ranks differ. Then every rank throws:
// a rank that differs names its keys and values ("optim.lr is 0.002 here"), the others name the
// ranks that differ. A single process returns at once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/retention.h"  // Resumable
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
  // The checkpoint the run resumed from (resumed_identity: "step 4, CRC-32C ..."), and the weights
  // checkpoint.init loaded (weights_identity); "none" when there is none. The same path may name
  // other files on another node.
  std::string resumed = "none", init = "none";
};

// The lines the ranks compare: "section.key: value" for every key of to_yaml(cfg), then
// "checkpoint.resumed from: ...", "checkpoint.init weights: ...", "data.train files: ...",
// "data.train windows: N", "data.train tokens: CRC-32C XXXXXXXX", "data.val files: ..." and
// "data.val tokens: CRC-32C XXXXXXXX".
std::vector<std::string> agreement_lines(const Config& cfg, const RankData& data);

// What a checkpoint holds, for the lines above and for a rollback's check that every rank read the
// same file: its step and a CRC-32C of its tensors' bytes and attributes ("step 4, CRC-32C
// 1a2b3c4d"; "none" for nullopt).
std::string resumed_identity(const std::optional<Resumable>& resumed);
uint32_t checkpoint_crc(const CheckpointData& ck);
// The weights a model holds, by name and bytes: "CRC-32C 1a2b3c4d" (host copies of device tensors).
std::string weights_identity(const std::vector<std::pair<std::string, Tensor>>& params);

// The keys of `mine` whose fingerprints differ from `reference` (one 32-bit fingerprint per line,
// as rank 0 sent them), each as "key is VALUE here"; "" when none does.
std::string differing_keys(const std::vector<std::string>& mine,
                           const std::vector<double>& reference);
std::vector<double> fingerprints(const std::vector<std::string>& lines);

void check_ranks_agree(dist::Communicator& comm, const Config& cfg, const RankData& data);

// Throws on every rank when any rank's `error` is set: its own message where it is set, `elsewhere`
// on the others (a rank that threw alone would leave the rest in a collective). One all-reduce of
// one number, on every rank; none in a single process.
void fail_together(dist::Communicator& comm, const std::string& error,
                   const std::string& elsewhere);

}  // namespace tessera::train
