// SHA-256 and CRC-32C against published test vectors, and their piecewise use.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "checkpoint/digest.h"
#include "test_util.h"

using namespace tessera;

// NIST's SHA-256 examples (FIPS 180-4 refers to them: csrc.nist.gov "SHA256.pdf" for "abc" and the
// two-block message; FIPS 180-2 appendix B.3 for one million 'a').
// Each vector through both codes: the CPU's SHA instructions (where it has them) and the portable.
TEST(Sha256, matches_the_fips_180_test_vectors) {
  for (DigestCode code : {DigestCode::best, DigestCode::portable}) {
    auto hex = [code](const std::string& s) {
      Sha256 h(code);
      h.update(s.data(), s.size());
      return h.hex();
    };
    const char* which = code == DigestCode::best ? "best" : "portable";
    EXPECT_EQ(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") << which;
    EXPECT_EQ(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        << which;
    EXPECT_EQ(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        << which;
    EXPECT_EQ(hex(std::string(1000000, 'a')),
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        << which;
  }
}

// The CPU's instructions and the portable code agree on random messages of every length around
// the block and padding edges, fed whole and in pieces from unaligned addresses.
TEST(Sha256, the_cpu_instructions_give_the_portable_digest) {
  if (!cpu_has_sha256())
    GTEST_SKIP() << "this CPU has no SHA extensions: both are the portable code";
  std::mt19937 gen(11);
  std::string msg(4096 + 3, '\0');
  for (char& c : msg) c = char(gen());
  for (size_t n = 0; n <= 4096; n += n < 300 ? 1 : 61) {
    for (size_t offset : {0, 1, 3}) {
      Sha256 fast(DigestCode::best), slow(DigestCode::portable), pieces(DigestCode::best);
      fast.update(msg.data() + offset, n);
      slow.update(msg.data() + offset, n);
      for (size_t i = 0; i < n;) {
        const size_t k = std::min(n - i, size_t(gen() % 200));
        pieces.update(msg.data() + offset + i, k);
        i += k;
      }
      const std::string want = slow.hex();
      EXPECT_EQ(fast.hex(), want) << n << " bytes at offset " << offset;
      EXPECT_EQ(pieces.hex(), want) << n << " bytes at offset " << offset << ", in pieces";
    }
  }
}

// The padding edges: 55 bytes fit one block with the length, 56..63 need a second block, 64 is a
// block of its own. Every length agrees with the message fed one byte at a time and in odd pieces.
TEST(Sha256, any_split_of_the_message_gives_the_same_digest) {
  std::mt19937 gen(3);
  for (size_t n : {0, 1, 55, 56, 57, 63, 64, 65, 127, 128, 129, 1000}) {
    std::string msg(n, '\0');
    for (char& c : msg) c = char(gen());
    const std::string whole = sha256_hex(msg);
    Sha256 bytewise;
    for (char c : msg) bytewise.update(&c, 1);
    EXPECT_EQ(bytewise.hex(), whole) << n;
    Sha256 pieces;
    for (size_t i = 0; i < n;) {
      const size_t k = std::min(n - i, size_t(gen() % 70));
      pieces.update(msg.data() + i, k);
      i += k;
    }
    EXPECT_EQ(pieces.hex(), whole) << n;
  }
  // 56 and 64 bytes of 'a' are distinct known values (computed with sha256sum), so the padding
  // branch is checked against an outside implementation, not only against itself.
  EXPECT_EQ(sha256_hex(std::string(56, 'a')),
            "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  EXPECT_EQ(sha256_hex(std::string(64, 'a')),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

TEST(Sha256, file_digest_equals_the_digest_of_its_bytes_and_names_a_missing_file) {
  tessera::testing::TempDir dir;
  std::string bytes(3 << 20, '\0');  // several read blocks of 1 MiB
  std::mt19937 gen(5);
  for (char& c : bytes) c = char(gen());
  const std::string f = dir.write("blob", bytes);
  uint64_t size = 0;
  EXPECT_EQ(sha256_file(f, &size), sha256_hex(bytes));
  EXPECT_EQ(size, bytes.size());
  const std::string msg = tessera::testing::error_of([&] { sha256_file(dir.file("absent")); });
  EXPECT_NE(msg.find("cannot open " + dir.file("absent") +
                     " to compute its SHA-256: No such file or directory"),
            std::string::npos)
      << msg;
  // A range is the digest of those bytes; one past the end of the file (a file cut short since
  // its size was read) is an error naming where it ends, not a wait for bytes that never come.
  const int fd = ::open(f.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << f;
  EXPECT_EQ(sha256_range(fd, 1000, 2 << 20, f), sha256_hex(bytes.substr(1000, 2 << 20)));
  const std::string past = tessera::testing::error_of([&] { sha256_range(fd, 3 << 20, 5, f); });
  EXPECT_NE(past.find("cannot read " + f + " to compute its SHA-256: it ends at byte 3145728, "
                      "before byte 3145733"),
            std::string::npos)
      << past;
  ::close(fd);
}

// RFC 3720 appendix B.4 (iSCSI) vectors, and the common check value of "123456789".
TEST(Crc32c, matches_the_rfc_3720_test_vectors) {
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xff), up(32), down(32);
  std::iota(up.begin(), up.end(), uint8_t(0));
  for (int i = 0; i < 32; ++i) down[size_t(i)] = uint8_t(31 - i);
  for (DigestCode code : {DigestCode::best, DigestCode::portable}) {
    const char* which = code == DigestCode::best ? "best" : "portable";
    EXPECT_EQ(crc32c("123456789", 9, 0, code), 0xE3069283u) << which;
    EXPECT_EQ(crc32c(zeros.data(), 32, 0, code), 0x8A9136AAu) << which;
    EXPECT_EQ(crc32c(ones.data(), 32, 0, code), 0x62A8AB43u) << which;
    EXPECT_EQ(crc32c(up.data(), 32, 0, code), 0x46DD794Eu) << which;
    EXPECT_EQ(crc32c(down.data(), 32, 0, code), 0x113FDB5Cu) << which;
    EXPECT_EQ(crc32c(nullptr, 0, 0, code), 0u) << which;
  }
}

// SSE4.2's crc32 and the tables agree at every length and alignment, and continuing from a CRC
// computed by the other code; past 12 KiB the instruction runs three streams side by side and
// joins them (digest.cpp), checked at the lengths around each join.
TEST(Crc32c, the_cpu_instruction_gives_the_portable_crc) {
  if (!cpu_has_crc32c()) GTEST_SKIP() << "this CPU has no SSE4.2: both are the portable code";
  std::vector<uint8_t> buf(1000);
  std::mt19937 gen(13);
  for (uint8_t& b : buf) b = uint8_t(gen());
  for (size_t offset = 0; offset < 8; ++offset)
    for (size_t n = 0; offset + n <= buf.size(); n += n < 40 ? 1 : 37) {
      const uint32_t want = crc32c(buf.data() + offset, n, 0, DigestCode::portable);
      EXPECT_EQ(crc32c(buf.data() + offset, n, 0, DigestCode::best), want) << offset << "+" << n;
      const size_t a = n / 3;
      const uint32_t head = crc32c(buf.data() + offset, a, 0, DigestCode::portable);
      EXPECT_EQ(crc32c(buf.data() + offset + a, n - a, head, DigestCode::best), want)
          << offset << "+" << n;
    }
  std::vector<uint8_t> big(100003 + 8);
  for (uint8_t& b : big) b = uint8_t(gen());
  for (size_t n : {12287, 12288, 12289, 12295, 24576, 24583, 36864 + 4, 100003})
    for (size_t offset : {0, 1, 5}) {
      const uint32_t want = crc32c(big.data() + offset, n, 0, DigestCode::portable);
      EXPECT_EQ(crc32c(big.data() + offset, n, 0, DigestCode::best), want) << offset << "+" << n;
      const uint32_t head = crc32c(big.data() + offset, 777, 0, DigestCode::portable);
      EXPECT_EQ(crc32c(big.data() + offset + 777, n - 777, head, DigestCode::best), want)
          << offset << "+" << n << " after 777";
    }
}

// The 8-byte fast path and the byte tail must agree wherever the split falls, and every single
// bit flip must change the value (a CRC detects all errors of one burst up to 32 bits).
TEST(Crc32c, pieces_continue_and_every_single_bit_flip_is_seen) {
  std::vector<uint8_t> buf(203);
  std::mt19937 gen(9);
  for (uint8_t& b : buf) b = uint8_t(gen());
  const uint32_t whole = crc32c(buf.data(), buf.size());
  for (size_t a = 0; a <= buf.size(); a += 7)
    EXPECT_EQ(crc32c(buf.data() + a, buf.size() - a, crc32c(buf.data(), a)), whole) << a;
  for (size_t i = 0; i < buf.size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      buf[i] ^= uint8_t(1 << bit);
      EXPECT_NE(crc32c(buf.data(), buf.size()), whole) << i << ":" << bit;
      buf[i] ^= uint8_t(1 << bit);
    }
}
