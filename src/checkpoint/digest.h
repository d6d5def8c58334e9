// Digests that guard checkpoints: SHA-256 of a whole file (FIPS 180-4), checked before HDF5 parses
// it, and CRC-32C of each tensor's stored bytes (RFC 3720), checked whenever the tensor is read.
//
//   Sha256 h;  h.update(data, n);  h.update(more, m);  std::string hex = h.hex();  // 64 hex digits
//   std::string d = sha256_file("step_00000500.h5");   // what `sha256sum` prints for the file
//   uint32_t c = crc32c(p, n);   // in pieces: crc32c(p + a, b, crc32c(p, a)) == crc32c(p, a + b)
//
// Both are written here rather than taken from a library: SHA-256 is about a hundred lines, and a
// checkpoint must not depend on which crypto library a machine happens to have.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace tessera {

// SHA-256, FIPS 180-4 section 6.2, fed in pieces of any size.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  // The digest of everything fed so far. Ends the computation: call once.
  std::array<uint8_t, 32> finish();
  std::string hex();  // finish() as 64 lowercase hex digits, as sha256sum prints it

 private:
  void block(const uint8_t* p);  // one 64-byte block into state_
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

// CRC-32C (Castagnoli polynomial, reflected 0x82F63B78; RFC 3720 appendix B.4), continuing from
// `crc` (0 to start), so a buffer can be checked in pieces.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

}  // namespace tessera
