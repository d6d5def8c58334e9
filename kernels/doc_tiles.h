// Attention within documents in one launch: the table that maps a flash kernel's blocks to the
// 64-row tiles of the documents packed in a batch's rows (data.windows: documents,
// ops/documents.h). FlashAttention's variable-length batches (Dao 2023, the cu_seqlens of
// flash_attn_varlen_func) take the same idea over a flat token list; here the documents stay in
// their (B, T) rows, so the kernels' strided contract is unchanged and a block works exactly as
// a launch on its document's (1, H, length, D) view would: the same loads, loop and bits.
//
// Row b of the table lists every (document, tile) of batch row b, the tiles that see the most
// keys first (the block orders' longest-processing-time-first, block_order.h), padded with empty
// entries to the longest row. Block (head of row b, rank r) takes entry r of row b: its query
// tile (forward, dQ) or, counted from the document's end, its key tile (dK dV), which has as many
// query tiles to visit as the query tile has key tiles. Plain C++: the table is built on the host,
// read on the device and by the kernels' CPU tests.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "backend/attention_shapes.h"
#include "block_order.h"

namespace tessera::cuda::attn {

// One entry: the document at rows [start, start + length) of its batch row, and the tile of it
// a block takes. length 0: no work (a row with fewer tiles than the longest). ckpt: where the
// document's stick-breaking checkpoints start (stick_mma.h: (H, tiles, length, 4) of them a
// document, documents one after another in spans' order), in units of 4 H.
struct DocTile {
  int32_t start = 0, length = 0, tile = 0, ckpt = 0;  // 16 bytes: one load
};

// The table as the kernels see it (FlashParams::docs): at == nullptr in a plain launch.
struct DocTiles {
  const DocTile* at = nullptr;
  int64_t per_row = 0;  // entries a batch row: the blocks a head of the grid
};

// The entry of block `rank` of a head in batch row b.
TESSERA_BLOCK_ORDER_FN DocTile doc_tile(const DocTiles& d, int64_t b, int64_t rank) {
  return d.at[b * d.per_row + rank];
}

// The key tile of a dK dV block whose entry is e: a document of n tiles has its key tile n - 1 - t
// seen by t + 1 query tiles, as many as query tile t sees key tiles.
TESSERA_BLOCK_ORDER_FN int64_t doc_key_tile(const DocTile& e, int64_t rows) {
  return (e.length + rows - 1) / rows - 1 - e.tile;
}

// The checkpoints of a document of `length` rows, in DocTile::ckpt's units: tiles x length.
TESSERA_BLOCK_ORDER_FN int64_t doc_ckpt_units(int64_t length, int64_t rows) {
  return (length + rows - 1) / rows * length;
}

// The table for tiles of `rows` rows over a (B, T) batch that spans covers
// (check_document_spans): B rows of per_row entries each, row-major. ckpt_units: the checkpoints
// of them all (doc_ckpt_units summed).
inline std::vector<DocTile> doc_tile_table(const std::vector<DocumentSpan>& spans, int64_t B,
                                           int64_t rows, int64_t& per_row, int64_t& ckpt_units) {
  std::vector<std::vector<DocTile>> by_row(size_t(B > 0 ? B : 0));
  ckpt_units = 0;
  for (const DocumentSpan& s : spans) {
    TESSERA_CHECK(ckpt_units <= INT32_MAX, "documents: checkpoints past 2^31 units at document (",
                  s.b, ", ", s.start, ", ", s.length, ")");
    for (int64_t t = 0; t * rows < s.length; ++t)
      by_row[size_t(s.b)].push_back(
          {int32_t(s.start), int32_t(s.length), int32_t(t), int32_t(ckpt_units)});
    ckpt_units += doc_ckpt_units(s.length, rows);
  }
  per_row = 0;
  for (auto& r : by_row) {
    // The most keys first: a query tile sees tile + 1 key tiles, whatever its document's length.
    std::stable_sort(r.begin(), r.end(),
                     [](const DocTile& x, const DocTile& y) { return x.tile > y.tile; });
    per_row = std::max(per_row, int64_t(r.size()));
  }
  std::vector<DocTile> table(size_t(B * per_row));
  for (size_t b = 0; b < by_row.size(); ++b)
    std::copy(by_row[b].begin(), by_row[b].end(), table.begin() + int64_t(b) * per_row);
  return table;
}

}  // namespace tessera::cuda::attn
