// embedding: out[s, :] = table[ids[s], :]. Gradient: dtable[v] += dout[s] for every s with
// ids[s] == v (a scatter-add into the table's gradient; a token seen twice gets both). The ids are
// the only thing saved: the backward does not need the table's values.
#include "ops/embedding.h"

#include <vector>

#include "ops/util.h"

namespace tessera::ops {

Tensor embedding(const Tensor& table, const Tensor& ids, const Tensor& host_ids) {
  TESSERA_CHECK(table.dim() == 2, "embedding: table must be (V, C), got ",
                shape_str(table.shape()));
  TESSERA_CHECK(ids.dtype() == DType::I32, "embedding: ids must be i32, got ", ids.str());
  check_same_device("embedding", {&table, &ids});
  const int64_t V = table.size(0), C = table.size(1), N = ids.numel();

  // Validated on the host so a bad id is a clear error here rather than an out-of-bounds read in a
  // device kernel.
  const std::vector<int32_t> host = detail::host_indices("embedding", "ids", ids, host_ids);
  for (int64_t n = 0; n < N; ++n) {
    const int32_t id = host[size_t(n)];
    TESSERA_CHECK(id >= 0 && id < V, "embedding: id ", id, " at position ", n, " (of ids ",
                  shape_str(ids.shape()), ", flattened) is outside [0, ", V, ") for table ",
                  shape_str(table.shape()));
  }

  Shape out_shape = ids.shape();
  out_shape.push_back(C);
  Tensor out = Tensor::empty(out_shape, table.options());
  Tensor I = detail::dense(ids).view({N});
  TESSERA_KERNEL(table, embedding_forward)(out.view({N, C}), detail::dense(table), I);

  return record("embedding", out, {table}, [I, N, C](const Tensor& dy, GradSink& g) {
    // Scatter-added straight into the table's gradient: no (V, C) temporary. For a tied
    // embedding that gradient already holds the output head's contribution. bf16 rows go straight
    // into an f32 gradient buffer (a bf16 model's flat gradients), summed in f32.
    Tensor rows = dy.view({N, C});
    g.add_into(
        0, dy.dtype(),
        [I, rows](Tensor& dtable, bool) { TESSERA_KERNEL(rows, embedding_backward)(dtable, rows, I); },
        {.also = detail::f32_buffer_of(dy.dtype())});
  });
}

}  // namespace tessera::ops
