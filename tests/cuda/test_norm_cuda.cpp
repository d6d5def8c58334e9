// GPU parity of the LayerNorm and RMSNorm kernels (kernels/norm.cu) against the CPU reference, in
// the manner of test_kernels_cuda.cpp (its header): f32 and bf16, norm-wise against kF32 / kBf16,
// and bit for bit where the accumulating launches must equal a separate add.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core_kernels_fixture.h"
#include "test_util.h"

namespace tessera {
namespace {

using namespace kernel_tests;
using testing::bytes;
using testing::error_of;

class NormCuda : public CoreKernelsCuda {
 protected:
  // dx accumulated into a residual stream's gradient held (values like dx's, so the sum is not
  // dominated by either): adx on the GPU, acdx on the CPU; gdx and cdx, dx written alone.
  void expect_dx_accumulated(const Tensor& adx, const Tensor& acdx, const Tensor& cdx,
                             const Tensor& held, const Tensor& gdx, const std::string& what) const {
    // Two roundings to bf16 (dx, then the sum), on each side: dx's may land one ulp apart when
    // the GPU's f32 dx and the CPU's double one straddle a rounding boundary, so twice one
    // rounding's bound.
    EXPECT_LE(rel_err(adx, acdx), dt() == DType::F32 ? kF32 : 2 * kBf16) << what;
    EXPECT_GT(rel_err(adx, cdx), 0.1) << "the held gradient must count";
    // The bits of the separate add it replaces (kernels.h): dx alone, then axpby onto held.
    Tensor sum = to_gpu(held, dt());
    TESSERA_KERNEL(sum, axpby)(sum, 1.0, sum, 1.0, gdx);
    EXPECT_EQ(bytes(adx.to(Device::cpu())), bytes(sum.to(Device::cpu()))) << what;
  }
};

INSTANTIATE_TEST_SUITE_P(Dtypes, NormCuda, ::testing::Values(DType::F32, DType::BF16), param_name);

// ---- normalisation ----------------------------------------------------------------------------

// A norm backward's weight gradients (run(dw, db, acc) runs the kernel; db undefined without
// with_db) in x's dtype and, under bf16 x, in f32 (a bf16 weight's f32 gradient buffer): added onto
// held ones they are the bits of the sums written alone, then axpby in the output's dtype; the f32
// sums rounded to bf16 are the bf16 outputs' bits (one f32 sum, one rounding either way).
void expect_weight_grads_accumulate(
    DType dt, int64_t C,
    const std::function<void(const Tensor&, const Tensor&, NormAccumulate)>& run, Generator& g,
    bool with_db = true) {
  auto bits = [](const Tensor& t) { return bytes(t.to(Device::cpu())); };
  auto added = [](const Tensor& held, const Tensor& d) {
    Tensor sum = held.clone();
    TESSERA_KERNEL(sum, axpby)(sum, 1.0, sum, 1.0, d);
    return sum;
  };
  std::vector<Tensor> written;  // dw per output dtype
  for (DType out :
       dt == DType::BF16 ? std::vector<DType>{DType::BF16, DType::F32} : std::vector<DType>{dt}) {
    SCOPED_TRACE(std::string("weight gradients in ") + dtype_name(out));
    Tensor dw = gpu_empty({C}, out), db = with_db ? gpu_empty({C}, out) : Tensor();
    run(dw, db, {});
    const Tensor held_w = to_gpu(random({C}, out, g), out),
                 held_b = to_gpu(random({C}, out, g), out);
    Tensor aw = held_w.clone(), ab = with_db ? held_b.clone() : Tensor();
    run(aw, ab, {.dw = true, .db = true});
    EXPECT_EQ(bits(aw), bits(added(held_w, dw))) << "dw accumulated";
    EXPECT_NE(bits(aw), bits(dw)) << "the held dw must count";
    if (with_db) {
      EXPECT_EQ(bits(ab), bits(added(held_b, db))) << "db accumulated";
    }
    written.push_back(dw);
  }
  if (written.size() == 2) {
    EXPECT_EQ(bits(written[1].to(DType::BF16)), bits(written[0])) << "f32 dw rounded to bf16";
  }
}

// N = 700 rows: eleven 64-row chunks for the separate kernels' dw / db sums (the last 60 rows),
// 44 of 16 rows for the one-pass kernel's (the last 12), which the final sums' 32 warps take one
// and two at a time (11 and 22 warps, the rest none). C = 300:
// beyond one block of threads, ten 32-column blocks of the final sums (the last partial), and rows
// of single elements in bf16; C = 296: rows of 16-byte groups in both dtypes (37 bf16 groups: two
// column tiles of the dw / db partial sums, the second partial). x has mean 3: the two-pass
// variance must not cancel. The backward runs as one kernel where a row's groups fit a warp 4 a
// lane (kernels/norm.cu: a chunk's 16 rows 4 a warp, the last chunk's 12 rows 3 a warp): bf16
// C 296 (2 a lane) and 100 (single elements, 4 a lane, the last lanes idle in the fourth), f32 C
// 300, 296 and 100 (3, 3 and 1); bf16 C 300 runs the separate kernels, and TESSERA_NORM_FUSED=off
// puts those back for every C.
const std::pair<const char*, int64_t> kNormCases[] = {{"on", 300},  {"on", 296},  {"on", 100},
                                                      {"off", 300}, {"off", 296}, {"off", 100}};

TEST_P(NormCuda, layernorm_forward_and_backward_match_the_cpu) {
  Generator g(7);
  const int64_t N = 700;
  for (const auto& [fused, C] : kNormCases) {
    SCOPED_TRACE("C " + std::to_string(C) + ", TESSERA_NORM_FUSED=" + fused);
    testing::ScopedEnv env({{"TESSERA_NORM_FUSED", fused}});
    Tensor x = random({N, C}, dt(), g, 1.0, 3.0), w = random({C}, dt(), g, 0.5, 1.0),
           b = random({C}, dt(), g), dy = random({N, C}, dt(), g);
    Tensor gx = to_gpu(x, dt()), gw = to_gpu(w, dt());
    Tensor gy = gpu_empty({N, C}, dt()), gm = gpu_empty({N}, dt()), gr = gpu_empty({N}, dt());
    Tensor cy = cpu_empty({N, C}), cm = cpu_empty({N}), cr = cpu_empty({N});
    TESSERA_KERNEL(gx, layernorm_forward)(gy, gm, gr, gx, gw, to_gpu(b, dt()), 1e-5);
    cpu_k().layernorm_forward(cy, cm, cr, x, w, b, 1e-5);
    expect_close(gy, cy, "layernorm y");
    expect_close(gm, cm, "layernorm mean");
    expect_close(gr, cr, "layernorm rstd");
    if (dt() == DType::BF16) {  // statistics saved in f32 for bf16 activations
      Tensor gm32 = gpu_empty({N}, DType::F32), gr32 = gpu_empty({N}, DType::F32);
      TESSERA_KERNEL(gx, layernorm_forward)(gy, gm32, gr32, gx, gw, to_gpu(b, dt()), 1e-5);
      EXPECT_LE(rel_err(gm32, cm), kF32) << "f32 mean";
      EXPECT_LE(rel_err(gr32, cr), kF32) << "f32 rstd";
    }

    // The backward reads the CPU's statistics, rounded to the dtype on both sides.
    const Tensor m = cm.to(dt()).to(DType::F32), r = cr.to(dt()).to(DType::F32);
    Tensor gdx = gpu_empty({N, C}, dt()), gdw = gpu_empty({C}, dt()), gdb = gpu_empty({C}, dt());
    Tensor cdx = cpu_empty({N, C}), cdw = cpu_empty({C}), cdb = cpu_empty({C});
    TESSERA_KERNEL(gx, layernorm_backward)
    (gdx, gdw, gdb, to_gpu(dy, dt()), gx, gw, to_gpu(m, dt()), to_gpu(r, dt()), {});
    cpu_k().layernorm_backward(cdx, cdw, cdb, dy, x, w, m, r, {});
    expect_close(gdx, cdx, "layernorm dx");
    expect_close(gdw, cdw, "layernorm dw");
    expect_close(gdb, cdb, "layernorm db");

    // Accumulating into a residual stream's gradient (values like dx's, so the sum is not dominated
    // by either): dx = held + this one.
    const Tensor held = random({N, C}, dt(), g);
    Tensor adx = to_gpu(held, dt()), acdx = held.clone();
    Tensor sdw = gpu_empty({C}, dt()), sdb = gpu_empty({C}, dt());
    TESSERA_KERNEL(gx, layernorm_backward)
    (adx, sdw, sdb, to_gpu(dy, dt()), gx, gw, to_gpu(m, dt()), to_gpu(r, dt()), {.dx = true});
    cpu_k().layernorm_backward(acdx, cdw, cdb, dy, x, w, m, r, {.dx = true});
    EXPECT_EQ(bytes(sdw.to(Device::cpu())), bytes(gdw.to(Device::cpu()))) << "dw written";
    EXPECT_EQ(bytes(sdb.to(Device::cpu())), bytes(gdb.to(Device::cpu()))) << "db written";
    expect_dx_accumulated(adx, acdx, cdx, held, gdx, "layernorm dx accumulated");

    // dw and db added onto held ones, in the dtype and (bf16 x) into f32: the bits of the sums
    // written alone, then axpby. The f32 sums rounded to bf16 are the bf16 outputs' bits (one f32
    // sum, one rounding).
    expect_weight_grads_accumulate(
        dt(), C,
        [&](const Tensor& ddw, const Tensor& ddb, NormAccumulate acc) {
          Tensor scratch = gpu_empty({N, C}, dt());
          TESSERA_KERNEL(gx, layernorm_backward)
          (scratch, ddw, ddb, to_gpu(dy, dt()), gx, gw, to_gpu(m, dt()), to_gpu(r, dt()), acc);
        },
        g);
  }
}

// A TESSERA_NORM_FUSED that is neither on nor off is an error that names it, not a silent choice.
TEST_P(NormCuda, norm_backward_refuses_an_unknown_fused_switch) {
  Generator g(9);
  const int64_t N = 4, C = 64;
  const Tensor x = to_gpu(random({N, C}, dt(), g), dt()), w = to_gpu(random({C}, dt(), g), dt());
  const Tensor dy = to_gpu(random({N, C}, dt(), g), dt()), r = to_gpu(random({N}, dt(), g), dt());
  Tensor dx = gpu_empty({N, C}, dt()), dw = gpu_empty({C}, dt());
  testing::ScopedEnv env({{"TESSERA_NORM_FUSED", "maybe"}});
  const std::string e = error_of([&] {
    TESSERA_KERNEL(x, rmsnorm_backward)
    (dx, dw, dy, x, w, r, {});
  });
  EXPECT_NE(e.find("TESSERA_NORM_FUSED='maybe'"), std::string::npos) << e;
}

// The layernorm's shapes, in one kernel and in the separate ones (kNormCases).
TEST_P(NormCuda, rmsnorm_forward_and_backward_match_the_cpu) {
  Generator g(8);
  const int64_t N = 600;
  for (const auto& [fused, C] : kNormCases) {
    SCOPED_TRACE("C " + std::to_string(C) + ", TESSERA_NORM_FUSED=" + fused);
    testing::ScopedEnv env({{"TESSERA_NORM_FUSED", fused}});
    Tensor x = random({N, C}, dt(), g, 2.0), w = random({C}, dt(), g, 0.5, 1.0),
           dy = random({N, C}, dt(), g);
    Tensor gx = to_gpu(x, dt()), gw = to_gpu(w, dt());
    Tensor gy = gpu_empty({N, C}, dt()), gr = gpu_empty({N}, dt());
    Tensor cy = cpu_empty({N, C}), cr = cpu_empty({N});
    TESSERA_KERNEL(gx, rmsnorm_forward)(gy, gr, gx, gw, 1e-6);
    cpu_k().rmsnorm_forward(cy, cr, x, w, 1e-6);
    expect_close(gy, cy, "rmsnorm y");
    expect_close(gr, cr, "rmsnorm rstd");

    const Tensor r = cr.to(dt()).to(DType::F32);
    Tensor gdx = gpu_empty({N, C}, dt()), gdw = gpu_empty({C}, dt());
    Tensor cdx = cpu_empty({N, C}), cdw = cpu_empty({C});
    TESSERA_KERNEL(gx, rmsnorm_backward)(gdx, gdw, to_gpu(dy, dt()), gx, gw, to_gpu(r, dt()), {});
    cpu_k().rmsnorm_backward(cdx, cdw, dy, x, w, r, {});
    expect_close(gdx, cdx, "rmsnorm dx");
    expect_close(gdw, cdw, "rmsnorm dw");

    const Tensor held = random({N, C}, dt(), g);
    Tensor adx = to_gpu(held, dt()), acdx = held.clone();
    TESSERA_KERNEL(gx, rmsnorm_backward)
    (adx, gdw, to_gpu(dy, dt()), gx, gw, to_gpu(r, dt()), {.dx = true});
    cpu_k().rmsnorm_backward(acdx, cdw, dy, x, w, r, {.dx = true});
    expect_dx_accumulated(adx, acdx, cdx, held, gdx, "rmsnorm dx accumulated");
    expect_weight_grads_accumulate(
        dt(), C,
        [&](const Tensor& ddw, const Tensor&, NormAccumulate acc) {
          Tensor scratch = gpu_empty({N, C}, dt());
          TESSERA_KERNEL(gx, rmsnorm_backward)
          (scratch, ddw, to_gpu(dy, dt()), gx, gw, to_gpu(r, dt()), acc);
        },
        g, /*with_db=*/false);
  }
}

}  // namespace
}  // namespace tessera
