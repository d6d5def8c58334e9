#include "train/output_dir.h"

#include <unistd.h>

#include <filesystem>

#include "checkpoint/retention.h"
#include "core/error.h"

namespace fs = std::filesystem;

namespace tessera::train {

void check_new_checkpoint_dir(const std::string& dir, const std::string& flag) {
  const fs::path d(dir);
  std::error_code ec;
  const fs::file_status st = fs::status(d, ec);
  if (!fs::exists(st)) return;
  TESSERA_CHECK(fs::is_directory(st), flag, " ", dir,
                " is a file, not a directory (nothing was written)");
  const std::string held = describe_run(dir);
  TESSERA_CHECK(held.empty(), flag, " ", dir, " already holds a run (", held,
                "); writing there would re-point its latest. Choose another directory (nothing "
                "was written)");
}

std::string staging_path(const std::string& path) {
  return path + ".partial-" + std::to_string(::getpid());
}

void write_checkpoint_dir(const std::string& dir, const std::string& name, const CheckpointData& ck,
                          const ExtraFiles& extra) {
  const fs::path d(dir);
  std::error_code ec;
  const bool made_dir = !fs::exists(d, ec);
  std::vector<fs::path> made;
  try {
    fs::create_directories(d);
    if (extra) extra(&made);
    made.push_back(d / name);
    save_checkpoint((d / name).string(), ck);  // removes its own .tmp when it fails
    made.push_back(d / "latest");
    write_latest(dir, name);
  } catch (const std::exception& e) {
    bool cleaned = true;
    if (made_dir) {
      cleaned = fs::remove_all(d, ec) != static_cast<std::uintmax_t>(-1) && !ec;
    } else {
      for (auto it = made.rbegin(); it != made.rend(); ++it) {
        if (it->filename() == name) {
          try {
            remove_checkpoint(it->string());  // with its digest file
          } catch (const std::exception&) {
            cleaned = false;
          }
        }
        fs::remove_all(*it, ec);
        cleaned = cleaned && !ec;
      }
    }
    throw Error(std::string(e.what()) + (cleaned ? " (nothing was left in " + dir + ")"
                                                 : " (what was written in " + dir +
                                                       " could not all be removed)"));
  }
}

}  // namespace tessera::train
