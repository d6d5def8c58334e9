// Digests that guard checkpoints: SHA-256 of a whole file (FIPS 180-4), checked before HDF5 parses
// it, and CRC-32C of each tensor's stored bytes (RFC 3720), checked whenever the tensor is read.
//
//   Sha256 h;  h.update(data, n);  h.update(more, m);  std::string hex = h.hex();  // 64 hex digits
//   std::string d = sha256_file("step_00000500.h5");   // what `sha256sum` prints for the file
//   uint32_t c = crc32c(p, n);   // in pieces: crc32c(p + a, b, crc32c(p, a)) == crc32c(p, a + b)
//
// Both are written here rather than taken from a library: SHA-256 is about a hundred lines, and a
// checkpoint must not depend on which crypto library a machine happens to have. Where the CPU has
// instructions for them (x86-64's SHA extensions; SSE4.2's crc32), those compute them: the same
// bits, 5.2x (SHA-256: 1476 vs 284 MB/s) and 6x (CRC-32C, three streams at once: 10530 vs 1752
// MB/s) faster on this project's Xeon machines (scripts/bench_checkpoint.sh). A checkpoint of GPT-2 124M with AdamW's
// moments is 1.5 GB, hashed once as it is saved and once as it is loaded.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace tessera {

// Which code computes a digest: `best` takes the CPU's instructions where it has them (unless the
// environment says TESSERA_DIGEST=portable), `portable` always the plain C++ (tests compare them).
enum class DigestCode { best, portable };
bool cpu_has_sha256();  // x86-64 SHA extensions (with the SSSE3 and SSE4.1 they need)
bool cpu_has_crc32c();  // SSE4.2
// What DigestCode::best runs here, for reports: "SHA extensions" / "SSE4.2", or "portable".
const char* sha256_best_code();
const char* crc32c_best_code();

// SHA-256, FIPS 180-4 section 6.2, fed in pieces of any size.
class Sha256 {
 public:
  explicit Sha256(DigestCode code = DigestCode::best);
  void update(const void* data, size_t n);
  // The digest of everything fed so far. Ends the computation: call once.
  std::array<uint8_t, 32> finish();
  std::string hex();  // finish() as 64 lowercase hex digits, as sha256sum prints it

 private:
  // Folds `blocks` 64-byte blocks from p into state.
  using Blocks = void (*)(uint32_t* state, const uint8_t* p, size_t blocks);
  Blocks blocks_;
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buf_{};
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes fed
};

std::string sha256_hex(const std::string& bytes);
// The SHA-256 of a file's bytes as 64 lowercase hex digits, read in blocks (never whole); an error
// naming the file when it cannot be read. *size, when given, receives the number of bytes hashed.
std::string sha256_file(const std::string& path, uint64_t* size = nullptr);
// The same for a file already open for reading (from its current offset to its end); path names it
// in errors.
std::string sha256_fd(int fd, const std::string& path, uint64_t* size = nullptr);
// The SHA-256 of bytes [offset, offset + n) of an open file, read with pread (the file offset is
// left alone, so threads may hash ranges of one descriptor at once); an error naming path when they
// cannot be read or the file ends first.
std::string sha256_range(int fd, uint64_t offset, uint64_t n, const std::string& path);

// CRC-32C (Castagnoli polynomial, reflected 0x82F63B78; RFC 3720 appendix B.4), continuing from
// `crc` (0 to start), so a buffer can be checked in pieces.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0, DigestCode code = DigestCode::best);

}  // namespace tessera
