// The CUDA emulator's cuBLASLt (kernels/emu/cublaslt.cpp): that it computes what cublasLt.h
// documents (column-major D = alpha op(A) op(B) + beta C, the bias and GELU-aux epilogues) and
// refuses what a GPU's cuBLASLt refuses, so kernels/blas.cu's use of it is checked by the GPU
// tests (tests/cuda/test_blas_cuda.cpp, test_linear_epilogues_cuda.cpp and every model test) on a
// machine without a GPU.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace tessera {
namespace {

struct Problem {  // one f32 problem: layouts, descriptor and the heuristic's algorithm
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  cublasStatus_t heuristic = CUBLAS_STATUS_SUCCESS;
  int returned = 0;

  Problem() = default;
  Problem(Problem&& o) noexcept : desc(o.desc), a(o.a), b(o.b), d(o.d), algo(o.algo),
                                   heuristic(o.heuristic), returned(o.returned) {
    o.desc = nullptr, o.a = o.b = o.d = nullptr;
  }
  ~Problem() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    for (cublasLtMatrixLayout_t l : {a, b, d})
      if (l) cublasLtMatrixLayoutDestroy(l);
  }
};

template <class T>
cublasStatus_t set(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, T v) {
  return cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof v);
}

// D (m, n) = op(A) op(B), A stored (ar, ac), B stored (br, bc), column-major, leading dimension =
// rows; alignment: the MIN_ALIGNMENT the heuristic is told for every matrix.
Problem make(int64_t m, int64_t n, uint64_t ar, uint64_t ac, uint64_t br, uint64_t bc, bool ta,
             bool tb, uint32_t alignment = 16, cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_DEFAULT,
             const void* bias = nullptr, void* aux = nullptr) {
  Problem p;
  EXPECT_EQ(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(ta ? CUBLAS_OP_T : CUBLAS_OP_N)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(tb ? CUBLAS_OP_T : CUBLAS_OP_N)), CUBLAS_STATUS_SUCCESS);
  if (ep != CUBLASLT_EPILOGUE_DEFAULT) {
    EXPECT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(ep)), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias), CUBLAS_STATUS_SUCCESS);
  }
  if (ep == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
    EXPECT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(8)), CUBLAS_STATUS_SUCCESS);
  }
  EXPECT_EQ(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_32F, ar, ac, int64_t(ar)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_32F, br, bc, int64_t(br)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtMatrixLayoutCreate(&p.d, CUDA_R_32F, uint64_t(m), uint64_t(n), m), CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulPreference_t pref = nullptr;
  EXPECT_EQ(cublasLtMatmulPreferenceCreate(&pref), CUBLAS_STATUS_SUCCESS);
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, attr, &alignment, sizeof alignment),
              CUBLAS_STATUS_SUCCESS);
  cublasLtHandle_t h = nullptr;
  EXPECT_EQ(cublasLtCreate(&h), CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulHeuristicResult_t r{};
  p.heuristic = cublasLtMatmulAlgoGetHeuristic(h, p.desc, p.a, p.b, p.d, p.d, pref, 1, &r, &p.returned);
  p.algo = r.algo;
  cublasLtMatmulPreferenceDestroy(pref);
  return p;
}

cublasStatus_t run(const Problem& p, const float* A, const float* B, float* D) {
  cublasLtHandle_t h = nullptr;
  cublasLtCreate(&h);
  const float one = 1, zero = 0;
  return cublasLtMatmul(h, p.desc, &one, A, p.a, B, p.b, &zero, D, p.d, D, p.d, &p.algo, nullptr, 0, nullptr);
}

// Device buffers (host memory under the emulator) of n floats, 256-byte aligned as cudaMalloc's.
struct Buf {
  float* p = nullptr;
  explicit Buf(size_t n, float fill = 0) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float)), cudaSuccess);
    for (size_t i = 0; i < n; ++i) p[i] = fill;
  }
  ~Buf() { cudaFree(p); }
};

TEST(CublasLtEmu, a_transposed_product_with_bias_and_gelu_aux_is_the_documented_one) {
  // op(A) = A^T with A stored (k=3, m=8); op(B) = B with B stored (k=3, n=2); D (8, 2).
  const int64_t m = 8, n = 2, k = 3;
  Buf A{size_t(k * m)}, B{size_t(k * n)}, D{size_t(m * n)}, bias{size_t(m)}, aux{size_t(m * n)};
  for (int64_t i = 0; i < k * m; ++i) A.p[i] = float(i % 5) - 2;
  for (int64_t i = 0; i < k * n; ++i) B.p[i] = float(i) / 4;
  for (int64_t i = 0; i < m; ++i) bias.p[i] = float(i) / 8;
  const Problem p = make(m, n, uint64_t(k), uint64_t(m), uint64_t(k), uint64_t(n), true, false, 16,
                         CUBLASLT_EPILOGUE_GELU_AUX_BIAS, bias.p, aux.p);
  ASSERT_EQ(p.heuristic, CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(p.returned, 1);
  ASSERT_EQ(run(p, A.p, B.p, D.p), CUBLAS_STATUS_SUCCESS);
  for (int64_t c = 0; c < n; ++c)
    for (int64_t r = 0; r < m; ++r) {
      double pre = bias.p[r];
      for (int64_t i = 0; i < k; ++i) pre += double(A.p[i + r * k]) * double(B.p[i + c * k]);
      const double gelu = 0.5 * pre * (1 + std::tanh(0.7978845608028654 * (pre + 0.044715 * pre * pre * pre)));
      EXPECT_FLOAT_EQ(aux.p[r + c * 8], float(pre)) << r << ", " << c;
      EXPECT_NEAR(D.p[r + c * m], gelu, 1e-6) << r << ", " << c;
    }
}

TEST(CublasLtEmu, refuses_what_cublaslt_refuses) {
  Buf A(64), B(64), D(64);
  // Shapes that do not fit: op(A) (4, 3) but op(B) (2, 4).
  EXPECT_EQ(make(4, 4, 4, 3, 2, 4, false, false).heuristic, CUBLAS_STATUS_INVALID_VALUE);
  // An attribute of the wrong size: BATCH_COUNT is int32_t, STRIDED_BATCH_OFFSET int64_t.
  cublasLtMatrixLayout_t l = nullptr;
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&l, CUDA_R_32F, 4, 4, 4), CUBLAS_STATUS_SUCCESS);
  const int64_t batch = 2;
  const int32_t stride = 16;
  EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                             sizeof stride),
            CUBLAS_STATUS_INVALID_VALUE);
  cublasLtMatrixLayoutDestroy(l);
  // A plan the heuristic chose for 16-byte-aligned operands, run on one that is 4-byte aligned:
  // the contract a plan cache keyed without alignment would break.
  const Problem p = make(4, 4, 4, 4, 4, 4, false, false, 16);
  ASSERT_EQ(p.heuristic, CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(run(p, A.p, B.p, D.p), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(run(p, A.p + 1, B.p, D.p), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(run(make(4, 4, 4, 4, 4, 4, false, false, 4), A.p + 1, B.p, D.p), CUBLAS_STATUS_SUCCESS);
  // The bias epilogue without a bias pointer.
  EXPECT_EQ(make(4, 4, 4, 4, 4, 4, false, false, 16, CUBLASLT_EPILOGUE_BIAS).heuristic,
            CUBLAS_STATUS_INVALID_VALUE);
}

}  // namespace
}  // namespace tessera
