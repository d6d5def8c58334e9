#include "checkpoint/retention.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "checkpoint/sidecar.h"
#include "core/error.h"

namespace tessera {
namespace fs = std::filesystem;

std::string checkpoint_name(int64_t step) {
  char name[40];
  std::snprintf(name, sizeof name, "step_%08lld.h5", static_cast<long long>(step));
  return name;
}

namespace {

// step_<digits>.h5 -> digits as a number; -1 for any other name.
int64_t step_of(const std::string& name) {
  const std::string prefix = "step_", suffix = ".h5";
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return -1;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

}  // namespace

std::vector<CheckpointFile> list_checkpoints(const std::string& dir) {
  std::vector<CheckpointFile> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const int64_t step = step_of(e.path().filename().string());
    if (step >= 0 && e.is_regular_file()) out.push_back({step, e.path().string()});
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointFile& a, const CheckpointFile& b) { return a.step < b.step; });
  return out;
}

namespace {

// fs::remove with an error naming the file (std::filesystem's own exception is not a
// tessera::Error, which the trainer turns into one clear line on every rank).
void remove_file(const std::string& path, const char* what) {
  std::error_code ec;
  fs::remove(path, ec);
  TESSERA_CHECK(!ec, "cannot remove ", what, " ", path, ": ", ec.message());
}

}  // namespace

void remove_checkpoint(const std::string& path) {
  remove_file(path, "checkpoint");
  remove_file(digest_path(path), "digest file");
}

void commit_checkpoint(const std::string& dir, const std::string& name, const CheckpointData& ck,
                       const RetentionPolicy& policy) {
  const std::string path = (fs::path(dir) / name).string();
  std::error_code ec;
  const bool is_new = !fs::exists(path, ec);
  save_checkpoint(path, ck);
  try {
    write_latest(dir, name);
  } catch (const std::exception& e) {
    if (!is_new) throw;  // a step saved again (a rollback's): its file was replaced, not added
    try {
      remove_checkpoint(path);
    } catch (const std::exception&) {
      throw Error(std::string(e.what()) + " (" + path + " was written, but `latest` still names "
                  "the checkpoint before it)");
    }
    throw Error(std::string(e.what()) + " (" + path + " was removed again: `latest` still names "
                "the checkpoint before it)");
  }
  prune_checkpoints(dir, policy, name);
}

std::vector<std::string> prune_checkpoints(const std::string& dir, const RetentionPolicy& policy,
                                           const std::string& protect) {
  TESSERA_CHECK(policy.keep >= 1, "prune_checkpoints: keep must be >= 1, got ", policy.keep);
  std::vector<CheckpointFile> regular;
  for (const CheckpointFile& c : list_checkpoints(dir)) {
    const bool milestone = policy.milestone_interval > 0 && c.step % policy.milestone_interval == 0;
    if (!milestone) regular.push_back(c);
  }
  std::vector<std::string> deleted;
  for (size_t i = 0; i + size_t(policy.keep) < regular.size(); ++i) {
    if (fs::path(regular[i].path).filename() == protect) continue;
    remove_checkpoint(regular[i].path);
    deleted.push_back(regular[i].path);
  }
  return deleted;
}

std::vector<std::string> remove_interrupted_writes(const std::string& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return removed;
  for (const auto& e : fs::directory_iterator(dir)) {
    // A directory (or device, ...) named `latest` would fail the first save, after the steps
    // before it (and hide the run's checkpoints from every loader): refused now.
    const std::string name = e.path().filename().string();
    TESSERA_CHECK((name != "latest" && name != "latest.tmp") || e.is_regular_file(ec),
                  e.path().string(), " is not a regular file, where a save writes one: move it aside");
    if (e.path().extension() == ".tmp" && e.is_regular_file()) removed.push_back(e.path().string());
    // A step's digest file without its checkpoint: a save that stopped between its two renames.
    const fs::path& p = e.path();  // step_XXXXXXXX.h5.sha256: its stem is the checkpoint's name
    if (p.extension() == ".sha256" && step_of(p.stem().string()) >= 0 && e.is_regular_file() &&
        !fs::exists(p.parent_path() / p.stem(), ec))
      removed.push_back(p.string());
  }
  std::sort(removed.begin(), removed.end());
  for (const std::string& p : removed) remove_file(p, "an interrupted write's file");
  return removed;
}

std::string describe_run(const std::string& dir) {
  std::error_code ec;
  std::string held;
  if (fs::exists(fs::symlink_status(fs::path(dir) / "latest", ec))) held = "latest";
  const std::vector<CheckpointFile> cks = list_checkpoints(dir);
  if (!cks.empty()) {
    const std::string newest = fs::path(cks.back().path).filename().string();
    held += (held.empty() ? "" : ", ") +
            (cks.size() == 1 ? "checkpoint " + newest
                             : std::to_string(cks.size()) + " checkpoints up to " + newest);
  }
  return held;
}

namespace {

// A step_*.h5 file of dir: one this run may save again, or prune.
bool is_run_checkpoint(const std::string& path, const std::string& dir) {
  std::error_code ec;
  const fs::path p(path);
  return step_of(p.filename().string()) >= 0 && fs::equivalent(p.parent_path(), dir, ec);
}

// Renames a checkpoint that --resume auto passed over, then its digest file, to names that nothing
// here lists, prunes or cleans up (step_00000020.h5.rejected and step_00000020.h5.rejected.sha256;
// .rejected.2 ... when taken): the run goes on from an older step and saves this one again, which
// must not write over the file. The checkpoint goes first, so another rank that still finds the
// digest file finds the checkpoint gone, never the checkpoint without its digest file.
std::string move_aside(const std::string& path) {
  std::error_code ec;
  std::string to = path + ".rejected";
  for (int n = 2; fs::exists(fs::symlink_status(to, ec)) ||
                  fs::exists(fs::symlink_status(digest_path(to), ec));
       ++n)
    to = path + ".rejected." + std::to_string(n);
  fs::rename(path, to, ec);
  TESSERA_CHECK(!ec, "cannot move checkpoint ", path, " aside to ", to, ": ", ec.message(),
                "; resume stopped so that this run does not write over it");
  if (fs::exists(fs::symlink_status(digest_path(path), ec))) {
    fs::rename(digest_path(path), digest_path(to), ec);
    TESSERA_CHECK(!ec, "cannot move ", digest_path(path), " aside to ", digest_path(to), ": ",
                  ec.message(), "; resume stopped (its checkpoint is already at ", to, ")");
  }
  return to;
}

}  // namespace

std::optional<Resumable> load_resumable(const std::string& dir, std::ostream& warn,
                                        bool move_rejected) {
  std::vector<std::string> candidates;  // in the order they are tried
  std::error_code ec;
  const fs::path latest = fs::path(dir) / "latest";
  std::string latest_error;
  if (fs::exists(latest, ec)) {
    try {
      candidates.push_back(resolve_checkpoint(latest.string()));
    } catch (const Error& e) {
      latest_error = e.what();
      warn << "warning: " << e.what() << "; looking for the newest complete checkpoint\n";
    }
  }
  std::vector<CheckpointFile> files = list_checkpoints(dir);
  for (auto it = files.rbegin(); it != files.rend(); ++it)
    if (candidates.empty() || !fs::equivalent(it->path, candidates.front(), ec))
      candidates.push_back(it->path);
  // `latest` is written only after a checkpoint was: with nothing left to read, the run's
  // checkpoints are gone, and starting it over would be a silent loss of its training.
  TESSERA_CHECK(!candidates.empty() || latest_error.empty(), "nothing to resume from in ", dir,
                ": ", latest_error, ", and no other checkpoint is there; remove ", latest.string(),
                " to start the run over");
  if (candidates.empty()) return std::nullopt;

  std::vector<std::pair<std::string, std::string>> skipped;  // (path, why), newest first
  for (const std::string& path : candidates) {
    try {
      Resumable r{path, load_checkpoint(path)};
      // Every rank reaches this decision, each reading the same files; rank 0 alone renames.
      for (const auto& [file, why] : skipped) {
        warn << "warning: skipping checkpoint " << file << ": " << why;
        if (is_run_checkpoint(file, dir))
          warn << (move_rejected ? "; moved it aside to " + move_aside(file) +
                                       " (with its digest file) so that this run does not write "
                                       "over it"
                                 : std::string("; rank 0 moves it aside"));
        warn << "\n";
      }
      return r;
    } catch (const CheckpointUnreadable& e) {
      // Not evidence of damage: passing over the file would let the run write over it.
      TESSERA_FAIL("cannot resume from ", dir, ": ", e.what(), "; resume stopped rather than pass ",
                   "over ", path, " (fix its permissions or the disk, or move it out of ", dir,
                   ")");
    } catch (const Error& e) {
      skipped.emplace_back(path, e.what());
    }
  }
  std::string tried;
  for (const auto& [file, why] : skipped) tried += "\n  " + file + ": " + why;
  TESSERA_FAIL("no checkpoint in ", dir, " can be resumed from:", tried);
}

}  // namespace tessera
