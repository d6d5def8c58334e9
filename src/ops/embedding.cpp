// embedding: out[s, :] = table[ids[s], :]. Gradient: dtable[v] += dout[s] for every s with
// ids[s] == v (a scatter-add into the table's gradient; a token seen twice gets both). The ids are
// the only thing saved: the backward does not need the table's values. gather_rows is the same op
// on an index list the host built; scatter_add_rows its adjoint.
#include "ops/embedding.h"

#include <vector>

#include "ops/util.h"

namespace tessera::ops {
namespace {

// table (V, C), I (N) i32 on table's device, checked -> (N, C) viewed as out_shape.
Tensor gather(const char* op, const Tensor& table, const Tensor& I, const Shape& out_shape) {
  const int64_t N = I.numel(), C = table.size(1);
  Tensor out = Tensor::empty(out_shape, table.options());
  TESSERA_KERNEL(table, embedding_forward)(out.view({N, C}), detail::dense(table), I);
  return record(op, out, {table}, [I, N, C](const Tensor& dy, GradSink& g) {
    // Scatter-added straight into the table's gradient: no (V, C) temporary. For a tied
    // embedding that gradient already holds the output head's contribution. bf16 rows go straight
    // into an f32 gradient buffer (a bf16 model's flat gradients), summed in f32.
    Tensor rows = dy.view({N, C});
    g.add_into(0, dy.dtype(),
               [I, rows](Tensor& dtable, bool) {
                 TESSERA_KERNEL(rows, embedding_backward)(dtable, rows, I);
               },
               {.also = detail::f32_buffer_of(dy.dtype())});
  });
}

// rows checked against [0, n) and uploaded to device as (M) i32.
Tensor index_tensor(const char* op, const std::vector<int32_t>& rows, int64_t n, Device device) {
  for (size_t m = 0; m < rows.size(); ++m)
    TESSERA_CHECK(rows[m] >= 0 && rows[m] < n, op, ": row ", rows[m], " at position ", m,
                  " is outside [0, ", n, ")");
  return from_vector(rows, {int64_t(rows.size())}).to(device);
}

}  // namespace

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
  return gather("embedding", table, detail::dense(ids).view({N}), out_shape);
}

Tensor gather_rows(const Tensor& x, const std::vector<int32_t>& rows) {
  TESSERA_CHECK(x.dim() == 2, "gather_rows: x must be (N, C), got ", shape_str(x.shape()));
  const Tensor I = index_tensor("gather_rows", rows, x.size(0), x.device());
  return gather("gather_rows", x, I, {int64_t(rows.size()), x.size(1)});
}

Tensor scatter_add_rows(const Tensor& src, const std::vector<int32_t>& rows, int64_t n) {
  TESSERA_CHECK(src.dim() == 2 && src.size(0) == int64_t(rows.size()),
                "scatter_add_rows: src must be (M, C) for M = ", rows.size(), " rows, got ",
                shape_str(src.shape()));
  const int64_t M = src.size(0), C = src.size(1);
  const Tensor I = index_tensor("scatter_add_rows", rows, n, src.device());
  Tensor out = zeros({n, C}, src.options());
  TESSERA_KERNEL(src, embedding_backward)(out, detail::dense(src), I);
  return record("scatter_add_rows", out, {src}, [I, M, C](const Tensor& dy, GradSink& g) {
    Tensor dsrc = Tensor::empty({M, C}, dy.options());
    TESSERA_KERNEL(dy, embedding_forward)(dsrc, detail::dense(dy), I);
    g.add(0, dsrc);
  });
}

}  // namespace tessera::ops
