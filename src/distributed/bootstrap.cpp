// Getting rank 0's bytes (an ncclUniqueId) to every rank: through a file in a shared directory, or
// as a broadcast over an MPI communicator. Plain C++ so that it is tested on CPU-only machines.
//
// The file is text, "tessera-shared v1 world=<N> <hex bytes>\n": readable when debugging a stuck
// launch, and the world size lets a reader refuse a file left by a crashed run of another size.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <unistd.h>

#include "distributed/backends.h"

namespace tessera::dist {

namespace fs = std::filesystem;

std::string init_directory(const std::string& init) {
  if (init.empty()) return "";
  constexpr std::string_view kScheme = "file://";
  TESSERA_CHECK(init.rfind(kScheme, 0) == 0 && init.size() > kScheme.size() &&
                    init[kScheme.size()] == '/',
                "communicator init '", init, "' is not of the form file:///absolute/directory");
  return init.substr(kScheme.size());
}

namespace {

// dir/name, or dir/name.<job> when the launcher names the launch: a file left by a crashed launch
// is then another file, not one a reader could take before rank 0 replaces it.
fs::path shared_path(const std::string& dir, const std::string& name, const LaunchInfo& launch) {
  return fs::path(dir) / (launch.job.empty() ? name : name + "." + launch.job);
}

std::string encode(const std::vector<uint8_t>& bytes, int world) {
  static const char* hex = "0123456789abcdef";
  std::string s = "tessera-shared v1 world=" + std::to_string(world) + " ";
  for (uint8_t b : bytes) {
    s += hex[b >> 4];
    s += hex[b & 15];
  }
  return s + "\n";
}

// Parses what encode wrote; "" on success, else what is wrong (the caller names the file).
std::string decode(const std::string& text, int world, std::vector<uint8_t>& bytes) {
  std::istringstream in(text);
  std::string magic, version, world_field, payload;
  in >> magic >> version >> world_field >> payload;
  if (magic != "tessera-shared" || version != "v1") return "not a tessera-shared v1 file";
  if (world_field != "world=" + std::to_string(world))
    return "written for " + world_field + ", this run has world=" + std::to_string(world) +
           " (a stale file from another run? delete it)";
  if (payload.size() != 2 * bytes.size())
    return "holds " + std::to_string(payload.size() / 2) + " bytes, expected " +
           std::to_string(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) {
    unsigned v = 0;
    if (std::sscanf(payload.c_str() + 2 * i, "%2x", &v) != 1) return "malformed hex";
    bytes[i] = uint8_t(v);
  }
  return "";
}

std::vector<uint8_t> share_through_file(const std::vector<uint8_t>& bytes, const fs::path& path,
                                        const CommOptions& options, const LaunchInfo& launch) {
  if (launch.rank == 0) {
    // Readers poll for `path`: rename makes it appear complete or not at all.
    const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << encode(bytes, launch.world);
      out.flush();
      TESSERA_CHECK(out.good(), "cannot write ", tmp.string(), " (communicator init ",
                    options.init, ")");
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    TESSERA_CHECK(!ec, "cannot rename ", tmp.string(), " to ", path.string(), ": ", ec.message());
    return bytes;
  }
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    std::ifstream in(path);
    if (in) {
      std::stringstream text;
      text << in.rdbuf();
      std::vector<uint8_t> out(bytes.size());
      const std::string problem = decode(text.str(), launch.world, out);
      TESSERA_CHECK(problem.empty(), "rank ", launch.rank, ": ", path.string(), " ", problem);
      return out;
    }
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    TESSERA_CHECK(waited < options.timeout_s, "rank ", launch.rank, " of ", launch.world,
                  " waited ", options.timeout_s, " s (timeout_s) for rank 0 to write ",
                  path.string(), " (communicator init ", options.init,
                  "): is rank 0 running, and is the directory shared by every node?");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

std::vector<uint8_t> share_from_rank0(const std::vector<uint8_t>& bytes, const std::string& name,
                                      const CommOptions& options, const LaunchInfo& launch,
                                      Communicator* bootstrap) {
  if (launch.world == 1) return bytes;
  const std::string dir = init_directory(options.init);
  if (!dir.empty()) return share_through_file(bytes, shared_path(dir, name, launch), options, launch);
  TESSERA_CHECK(bootstrap, "sharing ", name, " between ", launch.world, " ranks needs either "
                "init: file:///shared/dir or an MPI launch");
  TESSERA_CHECK(bootstrap->world() == launch.world && bootstrap->rank() == launch.rank,
                "bootstrap communicator is rank ", bootstrap->rank(), " of ", bootstrap->world(),
                ", the launch says rank ", launch.rank, " of ", launch.world);
  Tensor t = from_vector<uint8_t>(bytes, {int64_t(bytes.size())});
  bootstrap->broadcast(t, 0);
  return t.to_vector<uint8_t>();
}

void remove_shared_bytes(const std::string& name, const CommOptions& options,
                         const LaunchInfo& launch) {
  try {
    const std::string dir = init_directory(options.init);
    if (dir.empty()) return;
    std::error_code ec;
    fs::remove(shared_path(dir, name, launch), ec);
  } catch (...) {  // cleanup only: a leftover file is refused or overwritten by the next run
  }
}

}  // namespace tessera::dist
