// The ranks' agreement on config and data: see rank_agreement.h.
#include "train/rank_agreement.h"

#include <cstdio>
#include <sstream>

#include "checkpoint/digest.h"
#include "core/error.h"

namespace tessera::train {

namespace {

std::string crc_text(uint32_t v) {
  char hex[24];
  std::snprintf(hex, sizeof hex, "CRC-32C %08x", v);
  return hex;
}

}  // namespace

std::vector<std::string> agreement_lines(const Config& cfg, const RankData& data) {
  // to_yaml writes "section:" lines, then "  key: value" lines under each (config/config.h).
  std::vector<std::string> lines;
  std::istringstream yaml(to_yaml(cfg));
  std::string line, section;
  while (std::getline(yaml, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] != ' ') {
      section = line.substr(0, line.find(':'));
      continue;
    }
    lines.push_back(section + "." + line.substr(line.find_first_not_of(' ')));
  }
  auto joined = [](const std::vector<std::string>& files) {
    std::string out;
    for (const std::string& f : files) out += (out.empty() ? "" : " ") + f;
    return out;
  };
  lines.push_back("checkpoint.resumed from: " + data.resumed);
  lines.push_back("checkpoint.init weights: " + data.init);
  lines.push_back("data.train files: " + joined(data.train_files));
  lines.push_back("data.train windows: " + std::to_string(data.train_windows));
  lines.push_back("data.train tokens: " + crc_text(data.train_contents));
  lines.push_back("data.val files: " + joined(data.val_files));
  lines.push_back("data.val tokens: " + crc_text(data.val_contents));
  return lines;
}

namespace {

uint32_t add(uint32_t crc, const std::string& s) { return crc32c(s.data(), s.size() + 1, crc); }

uint32_t add(uint32_t crc, const std::string& name, const Tensor& t) {
  crc = add(crc, name);
  const Tensor host = t.detach().to(Device::cpu()).contiguous();
  return crc32c(host.data_ptr(), size_t(host.nbytes()), crc);
}

}  // namespace

uint32_t checkpoint_crc(const CheckpointData& ck) {
  uint32_t crc = add(0, ck.config_yaml);
  for (const auto& [k, v] : ck.trainer_ints) crc = add(crc, k + "=" + std::to_string(v));
  for (const auto& [k, v] : ck.trainer_floats) crc = crc32c(&v, sizeof v, add(crc, k));
  for (const auto& [k, v] : ck.rng)
    crc = add(crc, k + "=" + std::to_string(v.seed) + "," + std::to_string(v.offset));
  for (const auto& [k, v] : ck.data) crc = add(crc, k + "=" + std::to_string(v));
  for (const auto& [k, v] : ck.adapter) crc = add(crc, k + "=" + v);
  for (const auto& [name, t] : ck.model) crc = add(crc, "model/" + name, t);
  for (const auto& [name, t] : ck.optimizer) crc = add(crc, "optimizer/" + name, t);
  for (const auto& [name, t] : ck.trainer_tensors) crc = add(crc, "trainer/" + name, t);
  return crc;
}

std::string resumed_identity(const std::optional<Resumable>& resumed) {
  if (!resumed) return "none";
  const auto& ints = resumed->data.trainer_ints;
  const auto step = ints.find("step");
  return "step " + (step == ints.end() ? std::string("?") : std::to_string(step->second)) + ", " +
         crc_text(checkpoint_crc(resumed->data));
}

std::string weights_identity(const std::vector<std::pair<std::string, Tensor>>& params) {
  uint32_t crc = 0;
  for (const auto& [name, t] : params) crc = add(crc, name, t);
  return crc_text(crc);
}

std::vector<double> fingerprints(const std::vector<std::string>& lines) {
  std::vector<double> out;  // 32-bit values: exact in a double and in a sum over ranks
  for (const std::string& l : lines) out.push_back(double(crc32c(l.data(), l.size())));
  return out;
}

std::string differing_keys(const std::vector<std::string>& mine,
                           const std::vector<double>& reference) {
  const std::vector<double> own = fingerprints(mine);
  std::string out;
  int listed = 0, more = 0;
  for (size_t i = 0; i < own.size() && i < reference.size(); ++i) {
    if (own[i] == reference[i]) continue;
    if (listed == 8) {
      ++more;
      continue;
    }
    const std::string& l = mine[i];
    const size_t colon = l.find(": ");
    if (listed++) out += ", ";
    out += l.substr(0, colon);
    out += colon == std::string::npos ? " is ? here" : " is '" + l.substr(colon + 2) + "' here";
  }
  if (more) out += " and " + std::to_string(more) + " more";
  return out;
}

void check_ranks_agree(dist::Communicator& comm, const Config& cfg, const RankData& data) {
  const int world = comm.world(), rank = comm.rank();
  if (world == 1) return;
  const std::vector<std::string> lines = agreement_lines(cfg, data);
  const double n = double(lines.size());
  // Another build of tessera may have other keys: then the lines do not pair up at all.
  const std::vector<double> extent = comm.all_reduce_host({n, -n}, dist::ReduceOp::Max);
  TESSERA_CHECK(extent[0] == -extent[1],
                "the ranks run different builds of tessera: their resolved configs have from ",
                -extent[1], " to ", extent[0], " keys (rank ", rank, ": ", lines.size(),
                "); every rank must run the same train binary");

  std::vector<double> reference(lines.size(), 0.0);
  if (rank == 0) reference = fingerprints(lines);
  reference = comm.all_reduce_host(std::move(reference), dist::ReduceOp::Sum);
  const std::string mine = differing_keys(lines, reference);
  std::vector<double> differs(size_t(world), 0.0);
  differs[size_t(rank)] = mine.empty() ? 0.0 : 1.0;
  differs = comm.all_reduce_host(std::move(differs), dist::ReduceOp::Sum);

  std::string ranks;
  int count = 0;
  for (int r = 0; r < world; ++r)
    if (differs[size_t(r)] > 0 && count++ < 8)
      ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  if (count == 0) return;
  if (count > 8) ranks += " and " + std::to_string(count - 8) + " more";
  const char* rule =
      "; every rank must be started with the same config file, overrides and data (shards of "
      "the same names and tokens), and see the same checkpoints (checkpoint.dir, --resume, "
      "--init: one shared directory, or the same files on every node)";
  if (!mine.empty())
    TESSERA_FAIL("rank ", rank,
                 " was started with another config, data or checkpoint than rank 0: ", mine, rule);
  TESSERA_FAIL("rank", count > 1 ? "s " : " ", ranks, count > 1 ? " were" : " was",
               " started with another config, data or checkpoint than rank 0 (",
               count > 1 ? "each names" : "its error names", " what differs)", rule);
}

void fail_together(dist::Communicator& comm, const std::string& error,
                   const std::string& elsewhere) {
  const bool any = comm.world() > 1 ? comm.all_reduce_host({error.empty() ? 0.0 : 1.0},
                                                           dist::ReduceOp::Sum)[0] > 0
                                    : !error.empty();
  if (!error.empty()) throw Error(error);  // an Error's text: it names its place already
  if (any) TESSERA_FAIL(elsewhere);
}

}  // namespace tessera::train
