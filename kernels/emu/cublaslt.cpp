// The CUDA emulator's cuBLASLt: the part of its API kernels/blas.cu calls, over host memory, so
// that blas.cu itself (its row-major to column-major mapping, layouts, batch strides, epilogues,
// plan cache and fallbacks) runs in the GPU tests on a machine without a GPU. Semantics from
// cublasLt.h's documentation (CUDA 13):
//   D = alpha op(A) op(B) + beta C, every matrix column-major (element (r, c) at r + c ld), op(A)
//   (m, k), op(B) (k, n), C and D (m, n); with BATCH_COUNT > 1, batch i of each at i times its
//   STRIDED_BATCH_OFFSET (elements). beta == 0 leaves C unread.
//   CUBLASLT_EPILOGUE_BIAS adds bias[r] (length m, the rows of D) to every column; GELU_AUX_BIAS
//   writes that sum to the aux matrix (leading dimension EPILOGUE_AUX_LD, divisible by 8, at least
//   m) and GELU of it to D. DGELU (no bias) multiplies alpha op(A) op(B) + beta C by GELU's
//   derivative at the aux matrix, an input laid out the same way (the pre-activation GELU_AUX_BIAS
//   wrote). The GELU here is the tanh form (tessera's CPU one): which form cuBLAS computes is not
//   documented, and the GPU test of the epilogue prints which it is. BGRADB writes the sums of
//   op(B) over k (length n, the columns of D) to the bias pointer, an output of D's type, summed
//   in double and rounded once; its scaling by alpha is not documented, and tessera passes alpha
//   1. The emulator refuses it batched (BATCH_COUNT > 1), where the header is silent too.
// Checked, returning the status cuBLASLt documents (blas.cu's CUBLAS_CHECK then names the call):
// each attribute's size against its documented type; layouts whose shapes do not fit op(A),
// op(B) and D; a leading dimension under the rows; batch counts that differ; a compute, scale and
// data type combination outside cuBLASLt's table for these types; an epilogue pointer or aux
// leading dimension missing; and an algorithm used with pointers less aligned than the ones the
// heuristic was given (its MIN_ALIGNMENT preferences and the epilogue pointers it read), the
// contract of a cached plan. Products accumulate in double and round once to D's type.
// Out-of-place results (C != D): an algorithm records whether it writes D apart from C
// (CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT), and cublasLtMatmul refuses C != D with one that
// does not. The heuristic sees layouts, not pointers, so, as the hardware's may, it ranks first an
// algorithm that works in place only, then one that writes D apart (TESSERA_EMU_CUBLASLT_OUT_OF_PLACE:
// "second", the default; "yes": every algorithm writes D apart; "no": none does).
// How many algorithms the heuristic offers: TESSERA_EMU_CUBLASLT_ALGOS (1 to 16; default 2 under
// "second", else 1), at most the number requested; they compute alike. For tests of algorithm
// timing (kernels/blas.cu's TESSERA_GEMM_TUNE), TESSERA_EMU_CUBLASLT_FAST=i makes the products of
// every result but the heuristic's i-th take 20 ms longer on the stream.
// TESSERA_EMU_CUBLASLT_BATCHED=no: no algorithm for a batched layout (BATCH_COUNT > 1), as the
// hardware's heuristic may answer for some strides (CUBLAS_STATUS_NOT_SUPPORTED, none returned),
// so that blas.cu's one-gemm-per-batch fallback runs in the tests.
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cuda_emu.h"

namespace {

struct Layout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
  int32_t batch = 1;
  int64_t stride = 0;  // elements between batches
};

struct Desc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  int32_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  void* aux = nullptr;
  int64_t aux_ld = 0;
  int32_t bias_type = -1, aux_type = -1;  // -1: D's type
};

struct Preference {
  uint64_t workspace = 0;
  uint32_t align[4] = {256, 256, 256, 256};  // A, B, C, D: cuBLASLt's default assumption
  // The split-k reduction schemes allowed; the emulator never splits k, so any mask is met.
  uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_MASK;
};

// What an algorithm (cublasLtMatmulAlgo_t::data) records: the alignments it was chosen for.
constexpr uint64_t kAlgoMagic = 0x7465737365726131ull;
// kPlace: bit 0 whether it writes D apart from C, the bits from 8 its rank in the heuristic's list.
enum AlgoWord { kMagic, kAlignA, kAlignB, kAlignC, kAlignD, kAlignBias, kAlignAux, kPlace };

// Which heuristic results write D apart from C (the header's TESSERA_EMU_CUBLASLT_OUT_OF_PLACE),
// read at each query so that a test can change it.
enum class OutOfPlace { Second, Yes, No };
OutOfPlace out_of_place_mode() {
  const char* e = std::getenv("TESSERA_EMU_CUBLASLT_OUT_OF_PLACE");
  if (!e || !*e || std::strcmp(e, "second") == 0) return OutOfPlace::Second;
  return std::strcmp(e, "no") == 0 ? OutOfPlace::No : OutOfPlace::Yes;
}

// TESSERA_EMU_CUBLASLT_ALGOS and _FAST (the header): read at each query and product.
int env_int(const char* name, int fallback) {
  const char* e = std::getenv(name);
  return e && *e ? std::atoi(e) : fallback;
}

Layout* L(cublasLtMatrixLayout_t l) { return reinterpret_cast<Layout*>(l); }
Desc* D(cublasLtMatmulDesc_t d) { return reinterpret_cast<Desc*>(d); }
Preference* P(cublasLtMatmulPreference_t p) { return reinterpret_cast<Preference*>(p); }

// Copies an attribute of documented type T, or reports a size that is not T's.
template <class T>
cublasStatus_t take(T& dst, const void* buf, size_t bytes) {
  if (!buf || bytes != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(&dst, buf, sizeof(T));
  return CUBLAS_STATUS_SUCCESS;
}

size_t type_size(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_16BF: return 2;
    case CUDA_R_32F: return 4;
    case CUDA_R_64F: return 8;
    default: return 0;
  }
}

double load(cudaDataType_t t, const void* p, int64_t i) {
  switch (t) {
    case CUDA_R_16BF: return double(__bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]));
    case CUDA_R_32F: return double(static_cast<const float*>(p)[i]);
    default: return static_cast<const double*>(p)[i];
  }
}

void store(cudaDataType_t t, void* p, int64_t i, double v) {
  switch (t) {
    case CUDA_R_16BF:  // f32 first, as a kernel with f32 compute rounds its result
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(float(v));
      break;
    case CUDA_R_32F: static_cast<float*>(p)[i] = float(v); break;
    default: static_cast<double*>(p)[i] = v;
  }
}

// cuBLASLt's table for these types (cublasLtMatmul's supported combinations), ab being A's and
// B's type and cd C's and D's: bf16 or f32 data with f32 compute and scale (TF32 for f32 only),
// f64 data with f64 compute and scale, all four of one type; or bf16 A and B with f32 C and D.
bool supported(const Desc& d, cudaDataType_t ab, cudaDataType_t cd) {
  if (d.compute == CUBLAS_COMPUTE_64F) return ab == CUDA_R_64F && cd == ab && d.scale == CUDA_R_64F;
  if (d.compute == CUBLAS_COMPUTE_32F_FAST_TF32)
    return ab == CUDA_R_32F && cd == ab && d.scale == CUDA_R_32F;
  if (d.compute == CUBLAS_COMPUTE_32F)
    return d.scale == CUDA_R_32F && ((cd == ab && (ab == CUDA_R_16BF || ab == CUDA_R_32F)) ||
                                     (ab == CUDA_R_16BF && cd == CUDA_R_32F));
  return false;
}

bool has_bias(uint32_t e) { return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }
// The bias pointer is read (a bias added) or written (BGRADB, the bias gradient).
bool uses_bias(uint32_t e) { return has_bias(e) || e == CUBLASLT_EPILOGUE_BGRADB; }
bool has_aux(uint32_t e) { return e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_DGELU; }

// The problem's consistency, as both the heuristic and the matmul check it.
cublasStatus_t check(const Desc& d, const Layout& a, const Layout& b, const Layout& c, const Layout& o) {
  if (a.type != b.type || c.type != o.type || !supported(d, a.type, o.type))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  const uint64_t m = o.rows, n = o.cols;
  const uint64_t am = d.trans_a == CUBLAS_OP_N ? a.rows : a.cols, k = d.trans_a == CUBLAS_OP_N ? a.cols : a.rows;
  const uint64_t bk = d.trans_b == CUBLAS_OP_N ? b.rows : b.cols, bn = d.trans_b == CUBLAS_OP_N ? b.cols : b.rows;
  if (am != m || bk != k || bn != n || c.rows != m || c.cols != n) return CUBLAS_STATUS_INVALID_VALUE;
  for (const Layout* l : {&a, &b, &c, &o})
    if (l->ld < int64_t(std::max<uint64_t>(l->rows, 1)) || l->batch != o.batch)
      return CUBLAS_STATUS_INVALID_VALUE;
  if (d.epilogue != CUBLASLT_EPILOGUE_DEFAULT && !uses_bias(d.epilogue) && !has_aux(d.epilogue))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (uses_bias(d.epilogue) && d.bias_type != -1 && d.bias_type != int32_t(o.type))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (d.epilogue == CUBLASLT_EPILOGUE_BGRADB && o.batch > 1) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (has_aux(d.epilogue) &&
      ((d.aux_type != -1 && d.aux_type != int32_t(o.type)) || d.aux_ld < int64_t(m) || d.aux_ld % 8))
    return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

uint32_t alignment(const void* p, int64_t stride_bytes = 0) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p) | uintptr_t(stride_bytes);
  uint32_t a = 256;
  while (a > 1 && u % a) a /= 2;
  return a;
}

double gelu_tanh(double x) {  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  const double k = 0.7978845608028654;
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

double gelu_tanh_grad(double x) {  // d/dx of gelu_tanh
  const double k = 0.7978845608028654, a = 0.044715;
  const double t = std::tanh(k * (x + a * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * a * x * x);
}

// D = alpha op(A) op(B) + beta C, then the epilogue, in f64 (f32 compute rounds as the kernels
// do); runs on the stream the product was queued on.
void product(const Desc& x, const Layout& a, const Layout& b, const Layout& c, const Layout& d,
             double al, double be, const void* A, const void* B, const void* C, void* Dp) {
  const bool f64 = x.scale == CUDA_R_64F;
  const int64_t m = int64_t(d.rows), n = int64_t(d.cols);
  const int64_t k = int64_t(x.trans_a == CUBLAS_OP_N ? a.cols : a.rows);
  const cudaDataType_t t = d.type;
  std::vector<double> opa(size_t(m * k)), opb(size_t(n * k)), out(size_t(m * n));
  for (int32_t batch = 0; batch < d.batch; ++batch) {
    const int64_t oa = batch * a.stride, ob = batch * b.stride, oc = batch * c.stride, od = batch * d.stride;
    // op(A) as rows of k and op(B) as columns of k, so each product is a contiguous dot product.
    for (int64_t r = 0; r < m; ++r)
      for (int64_t i = 0; i < k; ++i)
        opa[size_t(r * k + i)] = load(a.type, A, oa + (x.trans_a == CUBLAS_OP_N ? r + i * a.ld : i + r * a.ld));
    for (int64_t col = 0; col < n; ++col)
      for (int64_t i = 0; i < k; ++i)
        opb[size_t(col * k + i)] = load(b.type, B, ob + (x.trans_b == CUBLAS_OP_N ? i + col * b.ld : col + i * b.ld));
    for (int64_t col = 0; col < n; ++col)
      for (int64_t r = 0; r < m; ++r) {
        double s = 0;
        for (int64_t i = 0; i < k; ++i) s += opa[size_t(r * k + i)] * opb[size_t(col * k + i)];
        // f32 compute: the accumulator and the scaling in f32, as the kernels keep them.
        double v = f64 ? al * s : double(float(al) * float(s));
        if (be != 0) {
          const double cv = load(c.type, C, oc + r + col * c.ld);
          v = f64 ? v + be * cv : double(float(v) + float(be) * float(cv));
        }
        if (has_bias(x.epilogue)) v = f64 ? v + load(t, x.bias, r) : double(float(v) + float(load(t, x.bias, r)));
        out[size_t(r + col * m)] = v;
      }
    if (x.epilogue == CUBLASLT_EPILOGUE_BGRADB)  // op(B)'s sums over k, one per column of D
      for (int64_t col = 0; col < n; ++col) {
        double s = 0;
        for (int64_t i = 0; i < k; ++i) s += opb[size_t(col * k + i)];
        store(t, const_cast<void*>(x.bias), col, s);
      }
    // D is written after C is read in full (blas.cu passes C == D).
    for (int64_t col = 0; col < n; ++col)
      for (int64_t r = 0; r < m; ++r) {
        const double v = out[size_t(r + col * m)];
        if (x.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
          store(t, x.aux, r + col * x.aux_ld, v);
          store(t, Dp, od + r + col * d.ld, f64 ? gelu_tanh(v) : double(float(gelu_tanh(v))));
        } else if (x.epilogue == CUBLASLT_EPILOGUE_DGELU) {
          const double g = gelu_tanh_grad(load(t, x.aux, r + col * x.aux_ld));
          store(t, Dp, od + r + col * d.ld, f64 ? v * g : double(float(v) * float(g)));
        } else {
          store(t, Dp, od + r + col * d.ld, v);
        }
      }
  }
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  static int the_context;  // one emulated device: every handle is the same
  *handle = reinterpret_cast<cublasLtHandle_t>(&the_context);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }

const char* cublasLtGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    default: return "CUBLAS_STATUS_(other)";
  }
}
const char* cublasLtGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid value or parameter (emulated cuBLASLt)";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported (emulated cuBLASLt)";
    default: return "an error (emulated cuBLASLt)";
  }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (type_size(type) == 0) return CUBLAS_STATUS_NOT_SUPPORTED;
  *l = reinterpret_cast<cublasLtMatrixLayout_t>(new Layout{type, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete L(l);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t bytes) {
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return take(L(l)->batch, buf, bytes);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: return take(L(l)->stride, buf, bytes);
    default: return CUBLAS_STATUS_NOT_SUPPORTED;  // not emulated
  }
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  *d = reinterpret_cast<cublasLtMatmulDesc_t>(new Desc{compute, scale});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete D(d);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes) {
  Desc& x = *D(d);
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return take(x.trans_a, buf, bytes);
    case CUBLASLT_MATMUL_DESC_TRANSB: return take(x.trans_b, buf, bytes);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return take(x.epilogue, buf, bytes);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return take(x.bias, buf, bytes);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return take(x.bias_type, buf, bytes);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return take(x.aux, buf, bytes);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return take(x.aux_ld, buf, bytes);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE: return take(x.aux_type, buf, bytes);
    default: return CUBLAS_STATUS_NOT_SUPPORTED;  // not emulated
  }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = reinterpret_cast<cublasLtMatmulPreference_t>(new Preference{});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete P(p);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t bytes) {
  Preference& x = *P(p);
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return take(x.workspace, buf, bytes);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: return take(x.align[0], buf, bytes);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: return take(x.align[1], buf, bytes);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: return take(x.align[2], buf, bytes);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return take(x.align[3], buf, bytes);
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK: return take(x.reduction, buf, bytes);
    default: return CUBLAS_STATUS_NOT_SUPPORTED;  // not emulated
  }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* returned) {
  if (requested < 1 || !results || !returned) return CUBLAS_STATUS_INVALID_VALUE;
  *returned = 0;
  const Desc& x = *D(desc);
  const cublasStatus_t st = check(x, *L(a), *L(b), *L(c), *L(d));
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  // An algorithm needs the alignments it was asked for (at most 16 bytes, what a vectorised
  // kernel needs) and those of the epilogue pointers set now. The header says how many are
  // offered and which write D apart from C; they compute alike.
  const char* batched = std::getenv("TESSERA_EMU_CUBLASLT_BATCHED");
  if (batched && std::string(batched) == "no" && L(a)->batch > 1) return CUBLAS_STATUS_NOT_SUPPORTED;
  const OutOfPlace mode = out_of_place_mode();
  const int algos = std::clamp(
      env_int("TESSERA_EMU_CUBLASLT_ALGOS", mode == OutOfPlace::Second ? 2 : 1), 1, 16);
  const int offered = std::min(requested, algos);
  cublasLtMatmulHeuristicResult_t& r = results[0];
  r = {};
  const Preference& p = *P(pref);
  r.algo.data[kMagic] = kAlgoMagic;
  for (int i = 0; i < 4; ++i) r.algo.data[kAlignA + i] = std::min<uint32_t>(p.align[i], 16);
  if (uses_bias(x.epilogue)) {
    if (!x.bias) return CUBLAS_STATUS_INVALID_VALUE;
    r.algo.data[kAlignBias] = std::min<uint32_t>(alignment(x.bias), 16);
  }
  if (has_aux(x.epilogue)) {
    if (!x.aux) return CUBLAS_STATUS_INVALID_VALUE;
    r.algo.data[kAlignAux] = std::min<uint32_t>(alignment(x.aux), 16);
  }
  r.workspaceSize = 0;
  r.state = CUBLAS_STATUS_SUCCESS;
  r.wavesCount = 1.0f;
  for (int i = offered - 1; i >= 0; --i) {  // results[0] (r) last: the others copy it
    results[i] = r;
    const bool apart = mode == OutOfPlace::Yes || (mode == OutOfPlace::Second && i > 0);
    results[i].algo.data[kPlace] = uint64_t(apart) | (uint64_t(i) << 8);
  }
  *returned = offered;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoCapGetAttribute(const cublasLtMatmulAlgo_t* algo,
                                                 cublasLtMatmulAlgoCapAttributes_t attr, void* buf,
                                                 size_t bytes, size_t* written) {
  if (!algo || algo->data[kMagic] != kAlgoMagic || !written) return CUBLAS_STATUS_INVALID_VALUE;
  if (attr != CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT) return CUBLAS_STATUS_NOT_SUPPORTED;
  const int32_t v = int32_t(algo->data[kPlace] & 1);
  *written = sizeof v;
  if (bytes == 0) return CUBLAS_STATUS_SUCCESS;  // a query of the size alone
  if (!buf || bytes != sizeof v) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(buf, &v, sizeof v);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha,
                              const void* A, cublasLtMatrixLayout_t adesc, const void* B,
                              cublasLtMatrixLayout_t bdesc, const void* beta, const void* C,
                              cublasLtMatrixLayout_t cdesc, void* Dp, cublasLtMatrixLayout_t ddesc,
                              const cublasLtMatmulAlgo_t* algo, void*, size_t, cudaStream_t stream) {
  // Copies: the descriptors' attributes and the scalars are read at the call, as cuBLASLt's are
  // (host pointer mode), so the caller may change them before the product runs on the stream.
  const Desc x = *D(desc);
  const Layout a = *L(adesc), b = *L(bdesc), c = *L(cdesc), d = *L(ddesc);
  if (const cublasStatus_t st = check(x, a, b, c, d); st != CUBLAS_STATUS_SUCCESS) return st;
  if (!algo || algo->data[kMagic] != kAlgoMagic) return CUBLAS_STATUS_INVALID_VALUE;
  if (C != Dp && !(algo->data[kPlace] & 1)) return CUBLAS_STATUS_NOT_SUPPORTED;  // in place only
  const void* ptrs[4] = {A, B, C, Dp};
  const Layout* lays[4] = {&a, &b, &c, &d};
  for (int i = 0; i < 4; ++i)
    if (alignment(ptrs[i], lays[i]->batch > 1 ? lays[i]->stride * int64_t(type_size(lays[i]->type)) : 0) <
        algo->data[kAlignA + i])
      return CUBLAS_STATUS_INVALID_VALUE;  // a plan chosen for better-aligned pointers
  if (uses_bias(x.epilogue) && (!x.bias || alignment(x.bias) < algo->data[kAlignBias]))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (has_aux(x.epilogue) && (!x.aux || alignment(x.aux) < algo->data[kAlignAux]))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (tessera::emu::skip_kernels()) return CUBLAS_STATUS_SUCCESS;

  const bool f64 = x.scale == CUDA_R_64F;
  const double al = f64 ? *static_cast<const double*>(alpha) : *static_cast<const float*>(alpha);
  const double be = f64 ? *static_cast<const double*>(beta) : *static_cast<const float*>(beta);
  const int fast = env_int("TESSERA_EMU_CUBLASLT_FAST", -1);
  const bool slow = fast >= 0 && int(algo->data[kPlace] >> 8) != fast;
  tessera::emu::enqueue_compute(stream, [=] {
    if (slow) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    product(x, a, b, c, d, al, be, A, B, C, Dp);
  });
  return tessera::emu::fault() ? CUBLAS_STATUS_EXECUTION_FAILED : CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"

namespace tessera::cuda {
// backend/cuda.h: on a GPU build, the file kernels/cublaslt_loader.cpp opened.
std::string cublaslt_library() { return "the CUDA emulator's cuBLASLt (kernels/emu/cublaslt.cpp)"; }
}  // namespace tessera::cuda
