// kernels/doc_tiles.h: the table a documents launch maps its blocks with, and the spans check
// (backend/attention_shapes.h) that guards it. The GPU tests check that the launch gives a launch
// a document's bits (tests/cuda/test_document_launch_cuda.cpp); these check the table itself:
// every document's every tile once, each row's most keys first, the rest of a row empty.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "backend/attention_shapes.h"
#include "kernels/doc_tiles.h"

using tessera::DocumentSpan;
using tessera::cuda::attn::doc_key_tile;
using tessera::cuda::attn::doc_tile;
using tessera::cuda::attn::doc_tile_table;
using tessera::cuda::attn::DocTile;
using tessera::cuda::attn::DocTiles;

namespace {

// Row 0 of T 160: documents of 1, 69, 64 and 26 rows (1 + 2 + 1 + 1 tiles of 64); row 1: one of
// 160 (3 tiles).
const std::vector<DocumentSpan> kSpans = {
    {0, 0, 1}, {0, 1, 69}, {0, 70, 64}, {0, 134, 26}, {1, 0, 160}};

std::string error_of(const std::vector<DocumentSpan>& spans, int64_t B, int64_t T) {
  try {
    tessera::check_document_spans("k", spans, B, T);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(DocTiles, every_tile_of_every_document_once_the_most_keys_first) {
  int64_t per_row = 0, units = 0;
  const std::vector<DocTile> table = doc_tile_table(kSpans, 2, 64, per_row, units);
  ASSERT_EQ(per_row, 5);
  // Checkpoints, tiles x length a document, one after another: 1, 2 x 69, 64, 26, then 3 x 160.
  EXPECT_EQ(units, 1 + 138 + 64 + 26 + 480);
  ASSERT_EQ(table.size(), 10u);
  const DocTiles d{table.data(), per_row};
  for (int64_t b = 0; b < 2; ++b) {
    std::set<std::pair<int32_t, int32_t>> query_tiles, key_tiles;  // (start, tile)
    int32_t last = 1 << 30;
    bool ended = false;  // past the row's last entry: only empty ones follow
    for (int64_t r = 0; r < per_row; ++r) {
      const DocTile e = doc_tile(d, b, r);
      if (e.length == 0) {
        ended = true;
        continue;
      }
      EXPECT_FALSE(ended) << "row " << b << ": an entry after an empty one, rank " << r;
      EXPECT_LE(e.tile, last) << "row " << b << ", rank " << r << ": more keys after fewer";
      last = e.tile;
      EXPECT_LT(int64_t(e.tile) * 64, e.length);
      EXPECT_TRUE(query_tiles.insert({e.start, e.tile}).second) << "row " << b << " rank " << r;
      const std::map<int32_t, int32_t> ckpt = {{0, 0}, {1, 1}, {70, 139}, {134, 203}};
      EXPECT_EQ(e.ckpt, b == 0 ? ckpt.at(e.start) : 229) << "row " << b << " rank " << r;
      const int64_t kt = doc_key_tile(e, 64);
      ASSERT_GE(kt, 0);
      ASSERT_LT(kt * 64, e.length);
      EXPECT_TRUE(key_tiles.insert({e.start, int32_t(kt)}).second) << "row " << b << " rank " << r;
    }
    // Every document of the row, each of its tiles, once as a query tile and once as a key tile.
    std::set<std::pair<int32_t, int32_t>> expect;
    for (const DocumentSpan& s : kSpans)
      if (s.b == b)
        for (int32_t t = 0; t * 64 < s.length; ++t) expect.insert({int32_t(s.start), t});
    EXPECT_EQ(query_tiles, expect) << "row " << b;
    EXPECT_EQ(key_tiles, expect) << "row " << b;
  }
  // Row 0: the 69-row document's second tile (two key tiles to see) first; row 1's three tiles
  // then two empty entries.
  EXPECT_EQ(doc_tile(d, 0, 0).start, 1);
  EXPECT_EQ(doc_tile(d, 0, 0).tile, 1);
  EXPECT_EQ(doc_tile(d, 1, 0).tile, 2);
  EXPECT_EQ(doc_tile(d, 1, 3).length, 0);
  EXPECT_EQ(doc_tile(d, 1, 4).length, 0);
}

TEST(DocTiles, the_spans_check_names_the_first_out_of_place) {
  EXPECT_EQ(error_of(kSpans, 2, 160), "");
  EXPECT_EQ(error_of({}, 0, 160), "");
  std::vector<DocumentSpan> v = kSpans;
  v[2].start = 71;  // a gap after [1, 70)
  EXPECT_NE(error_of(v, 2, 160).find("document 2 (row 0, start 71, length 64)"), std::string::npos)
      << error_of(v, 2, 160);
  v = kSpans;
  v[1].length = 0;  // empty
  EXPECT_NE(error_of(v, 2, 160).find("document 1 (row 0, start 1, length 0)"), std::string::npos);
  v = kSpans;
  v[3].length = 30;  // past the row's end
  EXPECT_NE(error_of(v, 2, 160).find("document 3 (row 0, start 134, length 30) does not follow"),
            std::string::npos);
  EXPECT_NE(error_of(v, 2, 160).find("a length of 1 to 26"), std::string::npos);
  EXPECT_NE(error_of({}, 2, 160).find("0 documents cover 0 of the 320"), std::string::npos);
  v = kSpans;
  v.pop_back();  // row 1 uncovered
  EXPECT_NE(error_of(v, 2, 160).find("4 documents cover 160 of the 320 positions of a (2, 160)"),
            std::string::npos)
      << error_of(v, 2, 160);
  v = kSpans;
  v[4].b = 0;  // row 1's document given to row 0 again
  EXPECT_NE(error_of(v, 2, 160).find("expected row 1, start 0"), std::string::npos)
      << error_of(v, 2, 160);
}
