// Token shards on disk, in llm.c's format (REFERENCES.md):
//   header: 256 x int32 — [0] magic, [1] version, [2] token count; then the tokens.
//   uint16 tokens: magic 20240520, version 1 (vocabularies up to 65536, e.g. GPT-2, bytes).
//   uint32 tokens: magic 20240801, version 7 (llm.c's Llama-3 shards), for larger vocabularies.
// nanoGPT's raw headerless uint16 files are read when asked for explicitly (ShardFormat::RawU16).
//
//   write_shard("data/kjv/train_000.bin", tokens, 257);     // picks uint16 for 257 ids
//   Shard s("data/kjv/train_000.bin", 257);                  // mmap; validates header, size, ids
//   uint32_t t = s[42];
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::data {

constexpr int32_t kShardMagicU16 = 20240520, kShardVersionU16 = 1;
constexpr int32_t kShardMagicU32 = 20240801, kShardVersionU32 = 7;
constexpr int64_t kShardHeaderInts = 256;

enum class ShardFormat { Header, RawU16 };

// Writes tokens to path (through path + ".tmp", fsynced and renamed into place, so a crash never
// leaves a half-written shard under the final name), creating missing parent directories. uint16
// when vocab_size <= 65536, else uint32. Every token must be < vocab_size (error names the token,
// its position and the path); at most 2^31 - 1 tokens, the header's int32 count.
void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, int64_t vocab_size);

// A read-only memory-mapped shard. Opening checks the magic, version, that the file size equals
// header + count * token size, and that every token id is < vocab_size; each failure is an error
// naming the path and what disagrees.
class Shard {
 public:
  Shard(const std::string& path, int64_t vocab_size, ShardFormat format = ShardFormat::Header);
  ~Shard();
  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&& other) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  int64_t size() const { return count_; }  // number of tokens
  int token_bytes() const { return token_bytes_; }  // 2 (uint16) or 4 (uint32)
  uint32_t operator[](int64_t i) const {
    return token_bytes_ == 2 ? reinterpret_cast<const uint16_t*>(tokens_)[i]
                             : reinterpret_cast<const uint32_t*>(tokens_)[i];
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const void* tokens_ = nullptr;
  int64_t count_ = 0;
  int token_bytes_ = 2;
};

}  // namespace tessera::data
