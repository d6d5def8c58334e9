// SHA-256 and CRC-32C: see digest.h.
#include "checkpoint/digest.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "core/error.h"

namespace tessera {
namespace {

// ---- SHA-256 (FIPS 180-4) ----

// Section 4.2.2: the first 32 bits of the fractional parts of the cube roots of the first 64
// primes.
constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

// Section 5.3.3: the first 32 bits of the fractional parts of the square roots of the first 8
// primes.
constexpr std::array<uint32_t, 8> kH0 = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

constexpr uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

// Section 6.2.2: message schedule W, then 64 rounds over the working variables a..h (section 4.1.2
// defines Ch, Maj and the four sigma functions written inline below).
void sha256_blocks_portable(uint32_t* state, const uint8_t* p, size_t blocks) {
  for (; blocks; --blocks, p += 64) {
    uint32_t w[64];
    for (int t = 0; t < 16; ++t)  // the block is read big-endian (section 3.1)
      w[t] = uint32_t(p[4 * t]) << 24 | uint32_t(p[4 * t + 1]) << 16 | uint32_t(p[4 * t + 2]) << 8 |
             uint32_t(p[4 * t + 3]);
    for (int t = 16; t < 64; ++t) {
      const uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
      const uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int t = 0; t < 64; ++t) {
      const uint32_t ch = (e & f) ^ (~e & g), maj = (a & b) ^ (a & c) ^ (b & c);
      const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ch + kK[t] + w[t];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + maj;
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    state[0] += a, state[1] += b, state[2] += c, state[3] += d;
    state[4] += e, state[5] += f, state[6] += g, state[7] += h;
  }
}

#if defined(__x86_64__)
// The same rounds with the SHA extensions (Intel SDM vol. 2, SHA256RNDS2, SHA256MSG1, SHA256MSG2;
// Gulley et al., "Intel SHA Extensions", 2013). SHA256RNDS2 does two rounds on the state held as
// two registers, {A, B, E, F} and {C, D, G, H} (A in the top lane), taking W[t] + K[t] for the two
// rounds in its low lanes; after two rounds the old {A, B, E, F} is the new {C, D, G, H}, so the
// two registers swap roles every call. MSG1 and MSG2 compute four words of the schedule: W[t..t+3]
// = MSG2(MSG1(W[t-16..t-13], W[t-12..t-9]) + W[t-7..t-4], W[t-4..t-1]).
__attribute__((target("sha,sse4.1,ssse3"))) void sha256_blocks_shani(uint32_t* state,
                                                                     const uint8_t* p,
                                                                     size_t blocks) {
  // Each 32-bit word of the block is big-endian: reverse the bytes within every lane.
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bll, 0x0405060700010203ll);
  const __m128i abcd = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state));  // lane 0 = A
  const __m128i efgh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state + 4));
  const __m128i badc = _mm_shuffle_epi32(abcd, 0xB1);  // lanes B A D C
  const __m128i hgfe = _mm_shuffle_epi32(efgh, 0x1B);  // lanes H G F E
  __m128i abef = _mm_alignr_epi8(badc, hgfe, 8);       // lanes F E B A
  __m128i cdgh = _mm_blend_epi16(hgfe, badc, 0xF0);    // lanes H G D C
  for (; blocks; --blocks, p += 64) {
    const __m128i abef0 = abef, cdgh0 = cdgh;
    __m128i m[4];  // the last 16 words of the schedule, four to a register
    for (int j = 0; j < 4; ++j)
      m[j] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * j)), bswap);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {  // rounds 4i .. 4i + 3
      if (i >= 4) {                 // m[i % 4] holds W[4i-16 ..]; replace it with W[4i ..]
        const __m128i w7 = _mm_alignr_epi8(m[(i + 3) & 3], m[(i + 2) & 3], 4);  // W[4i-7 .. 4i-4]
        m[i & 3] = _mm_sha256msg2_epu32(
            _mm_add_epi32(_mm_sha256msg1_epu32(m[i & 3], m[(i + 1) & 3]), w7), m[(i + 3) & 3]);
      }
      __m128i wk =
          _mm_add_epi32(m[i & 3], _mm_loadu_si128(reinterpret_cast<const __m128i*>(kK + 4 * i)));
      cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);  // now {A, B, E, F}
      wk = _mm_shuffle_epi32(wk, 0x0E);              // the next two words in the low lanes
      abef = _mm_sha256rnds2_epu32(abef, cdgh, wk);
    }
    abef = _mm_add_epi32(abef, abef0);
    cdgh = _mm_add_epi32(cdgh, cdgh0);
  }
  const __m128i abef_r = _mm_shuffle_epi32(abef, 0x1B);  // lanes A B E F
  const __m128i ghcd = _mm_shuffle_epi32(cdgh, 0xB1);    // lanes G H C D
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state), _mm_blend_epi16(abef_r, ghcd, 0xF0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state + 4), _mm_alignr_epi8(ghcd, abef_r, 8));
}

// CPUID leaf 1 ECX: SSSE3 bit 9, SSE4.1 bit 19, SSE4.2 bit 20; leaf 7 EBX: SHA bit 29.
bool cpuid_bit(unsigned leaf, int reg_ebx_or_ecx, int bit) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(leaf, 0, &a, &b, &c, &d)) return false;
  return ((reg_ebx_or_ecx == 0 ? b : c) >> bit) & 1u;
}
#endif

// TESSERA_DIGEST=portable: the portable code even where the CPU has instructions (what
// scripts/bench_checkpoint.sh compares against; a CPU path under suspicion); best (or unset): them.
bool instructions_allowed() {
  static const bool allowed = [] {
    const char* e = std::getenv("TESSERA_DIGEST");
    if (!e || !*e || std::strcmp(e, "best") == 0) return true;
    TESSERA_CHECK(std::strcmp(e, "portable") == 0, "TESSERA_DIGEST must be best or portable, got '",
                  e, "'");
    return false;
  }();
  return allowed;
}

}  // namespace

bool cpu_has_sha256() {
#if defined(__x86_64__)
  static const bool has = cpuid_bit(7, 0, 29) && cpuid_bit(1, 1, 9) && cpuid_bit(1, 1, 19);
  return has;
#else
  return false;
#endif
}

bool cpu_has_crc32c() {
#if defined(__x86_64__)
  static const bool has = cpuid_bit(1, 1, 20);
  return has;
#else
  return false;
#endif
}

const char* sha256_best_code() {
  return instructions_allowed() && cpu_has_sha256() ? "SHA extensions" : "portable";
}

const char* crc32c_best_code() {
  return instructions_allowed() && cpu_has_crc32c() ? "SSE4.2" : "portable";
}

Sha256::Sha256(DigestCode code) : blocks_(sha256_blocks_portable), state_(kH0) {
#if defined(__x86_64__)
  if (code == DigestCode::best && instructions_allowed() && cpu_has_sha256())
    blocks_ = sha256_blocks_shani;
#else
  (void)code;
#endif
}

void Sha256::update(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  length_ += n;
  if (buffered_) {
    const size_t take = std::min(n, buf_.size() - buffered_);
    std::memcpy(buf_.data() + buffered_, p, take);
    buffered_ += take, p += take, n -= take;
    if (buffered_ < buf_.size()) return;
    blocks_(state_.data(), buf_.data(), 1);
    buffered_ = 0;
  }
  blocks_(state_.data(), p, n / 64);
  p += n / 64 * 64, n %= 64;
  std::memcpy(buf_.data(), p, n);
  buffered_ = n;
}

// Section 5.1.1: a 1 bit, zeros up to 56 bytes mod 64, then the message length in bits as a 64-bit
// big-endian number.
std::array<uint8_t, 32> Sha256::finish() {
  const uint64_t bits = length_ * 8;
  const uint8_t one = 0x80, zero = 0;
  update(&one, 1);
  while (buffered_ != 56) update(&zero, 1);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(bits >> (56 - 8 * i));
  update(len, 8);
  std::array<uint8_t, 32> out;
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 4; ++j) out[4 * i + j] = uint8_t(state_[i] >> (24 - 8 * j));
  return out;
}

std::string Sha256::hex() {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (uint8_t b : finish()) s += {digits[b >> 4], digits[b & 15]};
  return s;
}

std::string sha256_hex(const std::string& bytes) {
  Sha256 h;
  h.update(bytes.data(), bytes.size());
  return h.hex();
}

std::string sha256_file(const std::string& path, uint64_t* size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TESSERA_CHECK(fd >= 0, "cannot open ", path, " to compute its SHA-256: ", std::strerror(errno));
  try {
    std::string hex = sha256_fd(fd, path, size);
    ::close(fd);
    return hex;
  } catch (...) {
    ::close(fd);
    throw;
  }
}

std::string sha256_fd(int fd, const std::string& path, uint64_t* size) {
  Sha256 h;
  std::vector<uint8_t> buf(size_t(1) << 20);
  uint64_t total = 0;
  std::string why;
  while (true) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) why = std::strerror(errno);
    if (n <= 0) break;
    h.update(buf.data(), size_t(n));
    total += uint64_t(n);
  }
  TESSERA_CHECK(why.empty(), "cannot read ", path, " to compute its SHA-256: ", why);
  if (size) *size = total;
  return h.hex();
}

std::string sha256_range(int fd, uint64_t offset, uint64_t n, const std::string& path) {
  Sha256 h;
  std::vector<uint8_t> buf(size_t(std::min<uint64_t>(n, uint64_t(1) << 20)));
  for (uint64_t done = 0; done < n;) {
    const size_t want = size_t(std::min<uint64_t>(n - done, buf.size()));
    const ssize_t got = ::pread(fd, buf.data(), want, off_t(offset + done));
    if (got < 0 && errno == EINTR) continue;
    TESSERA_CHECK(got >= 0, "cannot read ", path,
                  " to compute its SHA-256: ", std::strerror(errno));
    TESSERA_CHECK(got > 0, "cannot read ", path, " to compute its SHA-256: it ends at byte ",
                  offset + done, ", before byte ", offset + n);
    h.update(buf.data(), size_t(got));
    done += uint64_t(got);
  }
  return h.hex();
}

// ---- CRC-32C ----

namespace {

// Slicing-by-8 (Kounavis and Berry, "A Systematic Approach to Building High Performance
// Software-Based CRC Generators", 2005): table[k][b] is the CRC of byte b followed by k zero bytes,
// so eight bytes are folded per step with eight lookups instead of one byte per lookup.
struct Crc32cTables {
  uint32_t t[8][256];
  Crc32cTables() {
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t c = b;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (c & 1 ? 0x82F63B78u : 0u);
      t[0][b] = c;
    }
    for (int k = 1; k < 8; ++k)
      for (int b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xff];
  }
};

uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc) {
  static const Crc32cTables tables;
  const auto& t = tables.t;
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    // The low four bytes absorb the running CRC (the stream is processed least significant first).
    const uint32_t lo = crc ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
                               uint32_t(p[3]) << 24);
    crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
          t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
  }
  for (; n; ++p, --n) crc = t[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__)
// SSE4.2's crc32 instruction computes this very CRC (the Castagnoli polynomial, reflected, without
// the inversions): eight bytes an instruction. One instruction waits for the one before (3 cycles
// of latency, one issued a cycle), so long buffers run three streams side by side, each over its
// own kStream bytes, and join them. The CRC register is linear over GF(2) in (register, data):
// the register after A then B is reg(B from 0) ^ shift(reg(A), |B|), where shift(r, m) is the
// register r after m zero bytes. So three streams s0 s1 s2 (s1 and s2 started from 0) give
// shift(shift(s0) ^ s1) ^ s2, with shift over kStream bytes a fixed linear map: four tables of
// 256 entries, one per byte of the register (Intel, "Fast CRC Computation for iSCSI Polynomial
// Using CRC32 Instruction", 2011, describes the same split).
constexpr size_t kStream = 4096;

__attribute__((target("sse4.2"))) uint64_t crc32c_words(uint64_t c, const uint8_t* p, size_t n) {
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
  }
  return c;
}

struct Crc32cShift {  // shift(r, kStream) = t[0][r & 0xff] ^ t[1][r >> 8 & 0xff] ^ ...
  uint32_t t[4][256];
  __attribute__((target("sse4.2"))) Crc32cShift() {
    static const uint8_t zeros[kStream] = {};
    uint32_t bit[32];  // shift of each single-bit register
    for (int b = 0; b < 32; ++b) bit[b] = uint32_t(crc32c_words(uint64_t(1) << b, zeros, kStream));
    for (int k = 0; k < 4; ++k)
      for (uint32_t v = 0; v < 256; ++v) {
        uint32_t r = 0;
        for (int b = 0; b < 8; ++b)
          if (v >> b & 1) r ^= bit[8 * k + b];
        t[k][v] = r;
      }
  }
  uint32_t operator()(uint32_t r) const {
    return t[0][r & 0xff] ^ t[1][r >> 8 & 0xff] ^ t[2][r >> 16 & 0xff] ^ t[3][r >> 24];
  }
};

__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const void* data, size_t n, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t c = uint32_t(~crc);
  if (n >= 3 * kStream) {
    static const Crc32cShift shift;
    for (; n >= 3 * kStream; p += 3 * kStream, n -= 3 * kStream) {
      uint64_t c1 = 0, c2 = 0;
      for (size_t i = 0; i < kStream; i += 8) {
        uint64_t w0, w1, w2;
        std::memcpy(&w0, p + i, 8);
        std::memcpy(&w1, p + kStream + i, 8);
        std::memcpy(&w2, p + 2 * kStream + i, 8);
        c = _mm_crc32_u64(c, w0);
        c1 = _mm_crc32_u64(c1, w1);
        c2 = _mm_crc32_u64(c2, w2);
      }
      c = shift(shift(uint32_t(c)) ^ uint32_t(c1)) ^ uint32_t(c2);
    }
  }
  c = crc32c_words(c, p, n);
  p += n / 8 * 8, n %= 8;
  uint32_t c32 = uint32_t(c);
  for (; n; ++p, --n) c32 = _mm_crc32_u8(c32, *p);
  return ~c32;
}
#endif

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc, DigestCode code) {
#if defined(__x86_64__)
  if (code == DigestCode::best && instructions_allowed() && cpu_has_crc32c())
    return crc32c_sse42(data, n, crc);
#else
  (void)code;
#endif
  return crc32c_portable(data, n, crc);
}

}  // namespace tessera
