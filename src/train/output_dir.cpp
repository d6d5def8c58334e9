#include "train/output_dir.h"

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

}  // namespace tessera::train
