// Small helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace tessera::testing {

// Sets environment variables for one scope; each one's previous value (or its absence) comes back
// after.
class ScopedEnv {
 public:
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name);
      saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
      ::setenv(name, value, 1);
    }
  }
  ~ScopedEnv() {
    for (const auto& [name, old] : saved_)
      old ? ::setenv(name.c_str(), old->c_str(), 1) : ::unsetenv(name.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

// The build directory, which holds the binaries (train, eval, export, ...): the test binaries run
// from its tests/ folder. Found from the running executable rather than compiled in, so that a
// test's object is the same in every build directory (CI's builds share them through ccache).
inline std::string bin_dir() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path().string();
}

// A file's bytes ("" when it cannot be read).
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A file's bytes as a vector, to edit and write back whole (a corrupted header, a flipped byte).
inline std::vector<char> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}
inline void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// Whether a staging file of `file` is left beside it: FILE.partial-<pid> (eval --per-position,
// export --reference-logits).
inline bool staging_left(const std::filesystem::path& file) {
  const std::string prefix = file.filename().string() + ".partial";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(file.parent_path(), ec))
    if (e.path().filename().string().rfind(prefix, 0) == 0) return true;
  return false;
}

// How many file descriptors this process holds open: a test compares it before and after code that
// must close every descriptor it opens.
inline long open_descriptors() {
  return long(std::distance(std::filesystem::directory_iterator("/proc/self/fd"),
                            std::filesystem::directory_iterator()));
}

// Runs a shell command; returns its exit status (128 + the signal when one ended it) and puts its
// output, stdout and stderr together, in *out.
inline int run_command(const std::string& cmd, std::string* out) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  out->clear();
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs f, expects a tessera::Error, and returns its message ("" and a test failure when none was
// thrown), so a test can check that the message names the shapes, keys or values involved.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a tessera::Error";
  return "";
}

// A fresh directory under the system temp dir, named after the process and the running test,
// removed with everything in it at scope exit.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "tessera") {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = std::filesystem::temp_directory_path() /
           (prefix + "_" + std::to_string(::getpid()) + "_" + info->name());
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  // Kept when the test has failed, so that its logs and files can be read after the run.
  ~TempDir() {
    if (::testing::Test::HasFailure()) {
      std::fprintf(stderr, "test failed: its files are kept in %s\n", path.c_str());
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  // Writes text to a file in the directory; returns its path.
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name, std::ios::binary) << text;
    return file(name);
  }
};

// (B, T) int32 ids drawn uniformly from [0, V) with g.
inline Tensor random_tokens(int64_t B, int64_t T, int64_t V, Generator& g) {
  const std::vector<float> u = rand({B * T}, g).to_vector<float>();
  std::vector<int32_t> ids(u.size());
  for (size_t i = 0; i < u.size(); ++i)
    ids[i] = std::min(int32_t(V - 1), int32_t(double(u[i]) * double(V)));
  return from_vector<int32_t>(ids, {B, T});
}

// A tensor's values as doubles, whatever its floating dtype.
inline std::vector<double> values(const Tensor& t) {
  return t.to(DType::F64).to_vector<double>();
}

// The largest |got - ref| over the largest |ref|, in double (infinite when got holds a non-finite
// value): a kernel's error against a reference, relative to the tensor's scale. got may be on the
// GPU.
inline double rel_err(const Tensor& got, const Tensor& ref) {
  const std::vector<double> g = values(got.to(Device::cpu())), r = values(ref);
  EXPECT_EQ(g.size(), r.size());
  double err = 0, scale = 0;
  for (size_t i = 0; i < g.size() && i < r.size(); ++i) {
    if (!std::isfinite(g[i])) return INFINITY;
    err = std::max(err, std::abs(g[i] - r[i]));
    scale = std::max(scale, std::abs(r[i]));
  }
  return err / std::max(scale, 1e-30);
}

// The largest |a - b| over elements of two tensors of one shape, compared in double.
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const std::vector<double> x = values(a), y = values(b);
  double m = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

// x (..., T, D) on the CPU as f32 with row t of its last two dimensions scaled by 1 + growth t / T:
// attention scores that rise along a row when x holds the keys.
inline Tensor rows_growing(const Tensor& x, double growth) {
  Tensor f = x.to(DType::F32).contiguous();
  const int64_t T = f.size(-2), D = f.size(-1);
  float* p = static_cast<float*>(f.data_ptr());
  for (int64_t row = 0; row < f.numel() / D; ++row)
    for (int64_t d = 0; d < D; ++d)
      p[row * D + d] *= float(1.0 + growth * double(row % T) / double(T));
  return f;
}

// The raw bytes of a tensor: "bit-identical" compares these.
inline std::vector<unsigned char> bytes(const Tensor& t) {
  Tensor c = t.contiguous();
  std::vector<unsigned char> out(c.nbytes());
  std::memcpy(out.data(), c.data_ptr(), out.size());
  return out;
}

}  // namespace tessera::testing
