// The block order of the attention kernels (kernels/flash_mma.cu, flash_attention.cu,
// stick_breaking.cu): plain C++ that runs on the device and, for its test, on the host.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TESSERA_BLOCK_ORDER_FN __host__ __device__ __forceinline__
#else
#define TESSERA_BLOCK_ORDER_FN inline
#endif

namespace tessera::cuda::attn {

// The order an attention kernel's blocks take their (head, tile) pairs, blocks numbered as they
// start (x-fastest: a 1-D grid). Heads go in groups whose K and V (or Q and dO) fit the L2 cache
// together; within a group every head's longest tile comes first, then every head's next one, and
// so on (longest-processing-time-first: the group ends on its shortest blocks, and the next
// group's longest start beside them), while the blocks running at once read a few heads' tiles,
// which they share through L2. Tile rank 0 is the longest (query_tile_block and key_tile_block
// map ranks to tiles).
struct BlockOrder {
  int64_t heads, tiles, group;  // group: heads per group, >= 1
};
struct BlockWork {
  int64_t head, rank;
};
// In 32-bit arithmetic: a grid has fewer than 2^31 blocks (block_order checks heads x tiles).
TESSERA_BLOCK_ORDER_FN BlockWork block_work(int64_t block, const BlockOrder& o) {
  const auto b = uint32_t(block), group = uint32_t(o.group);
  const uint32_t span = group * uint32_t(o.tiles);  // blocks of a full group
  const uint32_t first = b / span * group;
  const uint32_t rest = uint32_t(o.heads) - first;
  const uint32_t n = rest < group ? rest : group;  // heads in this group (the last may be short)
  const uint32_t in = b % span;
  return {int64_t(first + in % n), int64_t(in / n)};
}
// This block's (query head, query tile) and (kv head, key tile): under a causal mask the last query
// tiles see the most keys and the first key tiles are seen by the most queries, so those go first.
struct HeadTile {
  int64_t head, tile;
};
TESSERA_BLOCK_ORDER_FN HeadTile query_tile_block(int64_t block, const BlockOrder& o) {
  const BlockWork w = block_work(block, o);
  return {w.head, o.tiles - 1 - w.rank};
}
TESSERA_BLOCK_ORDER_FN HeadTile key_tile_block(int64_t block, const BlockOrder& o) {
  const BlockWork w = block_work(block, o);
  return {w.head, w.rank};
}
// Heads per group: as many as keep their shared operands (bytes_per_head each) within 16 MiB, a
// third of an H100's or H200's 50 MB L2 (what the rest of the traffic, Q, O and the block's own
// reads, leaves). A function of the shapes alone.
inline int64_t heads_per_group(int64_t heads, int64_t bytes_per_head) {
  const int64_t g = (int64_t(16) << 20) / (bytes_per_head > 0 ? bytes_per_head : 1);
  return g < 1 ? 1 : (g > heads ? heads : g);
}

}  // namespace tessera::cuda::attn
