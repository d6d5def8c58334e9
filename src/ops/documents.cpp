// Documents: see ops/documents.h.
#include "ops/documents.h"

#include "core/error.h"

namespace tessera::ops {

Documents Documents::at_token(const int32_t* ids, int64_t B, int64_t T, int32_t mark) {
  TESSERA_CHECK(B > 0 && T > 0, "Documents: expected a (B, T) batch with B, T > 0, got (", B, ", ",
                T, ")");
  Documents d;
  d.B_ = B, d.T_ = T;
  d.row_first_.reserve(size_t(B + 1));
  for (int64_t b = 0; b < B; ++b) {
    d.row_first_.push_back(d.count());
    d.starts_.push_back(0);
    const int32_t* row = ids + b * T;
    for (int64_t t = 1; t < T; ++t)
      if (row[t] == mark) d.starts_.push_back(t);
  }
  d.row_first_.push_back(d.count());
  return d;
}

void Documents::for_each(const std::function<void(int64_t, int64_t, int64_t)>& fn) const {
  for (int64_t b = 0; b < B_; ++b)
    for (int64_t i = row_first_[size_t(b)]; i < row_first_[size_t(b + 1)]; ++i) {
      const int64_t start = starts_[size_t(i)];
      const int64_t next = i + 1 < row_first_[size_t(b + 1)] ? starts_[size_t(i + 1)] : T_;
      fn(b, start, next - start);
    }
}

std::vector<int32_t> Documents::positions() const {
  std::vector<int32_t> pos(size_t(B_ * T_));
  for_each([&](int64_t b, int64_t start, int64_t length) {
    for (int64_t t = 0; t < length; ++t) pos[size_t(b * T_ + start + t)] = int32_t(t);
  });
  return pos;
}

}  // namespace tessera::ops
