// gemm through cuBLASLt: c (Bc, M, N) = alpha * op(a) @ op(b) + beta * c, row-major, batched, a
// batch of 1 broadcast; the contract is src/backend/kernels.h's and the CPU twin's
// (src/backend/cpu/matmul.cpp).
//
// Row-major onto column-major: a row-major (R, C) matrix read column-major is its transpose (C, R)
// with leading dimension C. So cuBLASLt computes C^T = op(b)^T op(a)^T: its operand "A" is our b,
// its "B" is our a, and its (N, M) column-major output is our (M, N) row-major c. Our trans flags
// carry over unchanged: b stored (K, N) reads column-major as (N, K) = op(b)^T, no transpose
// needed.
//
// Precision (the mixed-precision policy's matmuls):
//   bf16 operands and output, f32 accumulation: CUBLAS_COMPUTE_32F, f32 alpha and beta;
//   bf16 operands, f32 output (a bf16 weight's gradient written or added straight into its f32
//        gradient buffer): the same, C and D f32 (a combination cublasLtMatmul's table lists);
//   f32: CUBLAS_COMPUTE_32F, true f32 products. TESSERA_TF32=1 in the environment opts into TF32
//        tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32: 10-bit mantissa products, ~1e-3 relative);
//   f64: CUBLAS_COMPUTE_64F (the CPU backend's gradient-check dtype; slow on GPUs, for tests).
//
// Batches. When b is shared (batch 1) and a is not transposed -- every Linear, x (B, T, C) @ W^T --
// a's batches are consecutive rows, so the batch folds into M and one plain gemm runs. Otherwise a
// strided-batched gemm, a broadcast operand given batch stride 0; should the heuristic offer no
// algorithm for that, the batches run one by one.
//
// linear_forward (a Linear with a bias) runs the same plan with cuBLASLt's bias epilogue
// (CUBLASLT_EPILOGUE_BIAS: the bias vector, one value per row of cuBLASLt's column-major D, which
// are our columns, added as the gemm writes c), so c is written once instead of written, then read
// and written again by an add. Where the epilogue is not offered (no algorithm, f64, a batched
// layout) or the bias is not 16-byte aligned, the bias is copied into c and the gemm adds onto it.
// A residual (a transformer block's stream, y = residual + x w^T + bias) is the gemm's C matrix,
// read where it lies (beta 1, C apart from D, by an algorithm that can write D out of place), so
// the add's pass over y goes too.
// linear_gelu_forward adds GELU the same way (CUBLASLT_EPILOGUE_GELU_AUX_BIAS: D = GELU(x w^T +
// bias), and the pre-activation, which GELU's backward needs, written to the aux buffer as D is),
// so the GELU kernel's pass over the (R, 4C) activation in a GPT-2 MLP goes; its fallback is
// linear_forward and the GELU kernel. cuBLAS does not document which GELU its epilogue computes
// (tanh form, as tessera's, or erf form: within 4.7e-4 of each other); GemmCuda's
// linear_gelu_forward test prints which.
// linear_param_backward, a Linear's weight and bias gradients, sums the bias gradient in the weight
// gradient's gemm (CUBLASLT_EPILOGUE_BGRADB: the sums of dy's rows, which that gemm reads anyway),
// so sum_dim's pass over dy goes; its fallback is sum_dim.
//
// TESSERA_GEMM_EPILOGUES: which of these fusions the gemms may use, "all" (unset: the default),
// "none", or a comma-separated list of bias, gelu, dgelu, bgrad and residual (a residual with a
// bias needs bias too: they ride one gemm). A fusion left out runs its fallback, the values it
// gives where cuBLASLt offers no algorithm: a switch for a GPU on which one of them comes out
// wrong or slow, so a run without it is the check, no rebuild needed.
//
// One cuBLASLt handle and one workspace per device, created on first use. The plan for each
// distinct problem (descriptors plus the heuristic's algorithm) is cached, so a training step makes
// no heuristic queries after its first. The heuristic is told the operands' real alignment (views
// at an offset are not 256-byte aligned, which the heuristic otherwise assumes).
//
// Algorithm timing (TESSERA_GEMM_TUNE=N, 2 to 16; unset, 0 or 1: off). The heuristic ranks
// algorithms by a model of the GPU, and its first is what runs by default (as in PyTorch and
// llm.c). With N set, a new plan keeps the heuristic's first N usable results, and its first
// call times each on the call's own operands (a warm-up run, then two rounds of kTimedRuns runs
// between CUDA events) and keeps the fastest for the rest of the process, as the auto-tuning
// example of NVIDIA's cuBLASLt samples does. D is written by every run and last by the chosen
// algorithm; a gemm that adds into D (C is D, beta != 0) is timed on a scratch buffer of D's
// extent instead, so its sum is added once. The choice can differ between runs (timing noise),
// so runs are reproducible bit for bit only without it; bench_gpu prints how many plans were
// timed and how many chose another algorithm.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "backend/cuda.h"
#include "backend/gemm_shapes.h"
#include "backend/kernels.h"
#include "backend/linear_shapes.h"
#include "blas.cuh"
#include "common.cuh"
#include "core/text.h"

namespace tessera::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // cuBLAS's recommendation for Hopper

BlasStats g_stats;  // counted on the one host thread that issues kernels (see run_gemm)
constexpr int kMaxDevices = 64;

struct DeviceBlas {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

DeviceBlas& device_blas(int device) {
  static std::mutex mu;
  static DeviceBlas* per_device = new DeviceBlas[kMaxDevices];  // never destroyed: see allocator.cu
  TESSERA_CHECK(device >= 0 && device < kMaxDevices, "gemm: device index ", device);
  std::lock_guard<std::mutex> lock(mu);
  DeviceBlas& d = per_device[device];
  if (!d.handle) {
    CUBLAS_CHECK(cublasLtCreate(&d.handle));
    d.workspace = device_malloc(kWorkspaceBytes, device);
  }
  return d;
}

// TESSERA_GEMM_TUNE: how many of the heuristic's results a new plan times (0 or 1: none). Read at
// each plan's making (rare), so a test may change it.
int tune_candidates() {
  const char* e = std::getenv("TESSERA_GEMM_TUNE");
  if (!e || !*e) return 0;
  char* end = nullptr;
  const long n = std::strtol(e, &end, 10);
  TESSERA_CHECK(*end == '\0' && n >= 0 && n <= 16, "TESSERA_GEMM_TUNE='", e,
                "': expected the number of cuBLASLt algorithms to time, 2 to 16 (0 or 1: off)");
  return int(n);
}

bool tf32_allowed() {
  static const bool on = [] {
    const char* e = std::getenv("TESSERA_TF32");
    return e && std::strcmp(e, "1") == 0;
  }();
  return on;
}

// The largest power of two (<= 256) dividing the address and, for a batched operand, the byte
// stride between batches: what every batch's start is aligned to.
uint32_t alignment(const void* p, int64_t stride_bytes) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p) | uintptr_t(stride_bytes);
  uint32_t a = 256;
  while (a > 1 && (u % a) != 0) a /= 2;
  return a;
}

// What the gemm's epilogue adds: nothing; the bias (CUBLASLT_EPILOGUE_BIAS); the bias, then
// GELU, with the pre-activation written to aux as well (CUBLASLT_EPILOGUE_GELU_AUX_BIAS); with
// no bias, the product times GELU's derivative at aux, an input (CUBLASLT_EPILOGUE_DGELU); or
// the sums of cuBLASLt's B (our a) over the product's k, written to the bias vector, an output
// (CUBLASLT_EPILOGUE_BGRADB). The bias is one value per row of cuBLASLt's column-major D (our
// columns), the bias gradient one per column of D (our rows), of D's type; aux is laid out as D.
struct Epilogue {
  enum Kind : uint8_t { None, Bias, GeluAuxBias, DGelu, BGradB };
  Kind kind = None;
  const Tensor* bias = nullptr;
  const Tensor* aux = nullptr;
};

// The fusions TESSERA_GEMM_EPILOGUES allows: a bit per Epilogue::Kind, and kResidual for a C read
// apart from D. Read at each gemm (a test may change it), parsed again only when it changed. Blanks
// around a name are ignored ("bias, gelu").
constexpr unsigned kResidual = 1u << 7;
unsigned allowed_fusions() {
  thread_local std::string last;
  thread_local unsigned mask = ~0u;
  const char* e = std::getenv("TESSERA_GEMM_EPILOGUES");
  const std::string s = e ? e : "";
  if (s == last) return mask;
  unsigned m = 0;
  const std::string word = trim(s);
  if (word.empty() || word == "all") {
    m = ~0u;
  } else if (word != "none") {
    static const std::pair<const char*, unsigned> names[] = {{"bias", 1u << Epilogue::Bias},
                                                             {"gelu", 1u << Epilogue::GeluAuxBias},
                                                             {"dgelu", 1u << Epilogue::DGelu},
                                                             {"bgrad", 1u << Epilogue::BGradB},
                                                             {"residual", kResidual}};
    for (const std::string& name : split_trimmed(s)) {
      const auto it = std::find_if(std::begin(names), std::end(names),
                                   [&](const auto& n) { return name == n.first; });
      TESSERA_CHECK(it != std::end(names), "TESSERA_GEMM_EPILOGUES='", s, "': unknown fusion '",
                    name,
                    "' (expected all, none, or a comma-separated list of bias, gelu, dgelu, "
                    "bgrad and residual)");
      m |= it->second;
    }
  }
  last = s, mask = m;
  return m;
}

void set_epilogue_pointers(cublasLtMatmulDesc_t desc, const Epilogue& ep) {
  if (ep.kind == Epilogue::None) return;
  if (ep.bias) {
    const void* bp = ep.bias->data_ptr();
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp));
  }
  if (ep.aux) {
    void* ap = ep.aux->data_ptr();
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                                &ap, sizeof ap));
  }
}

// One problem as cuBLASLt sees it, in our row-major terms.
struct Key {
  int device;
  DType dtype;      // a's and b's
  DType out;        // c's: dtype, or f32 under bf16 operands
  bool trans_a, trans_b, tf32;
  int64_t M, N, K;
  int32_t batch;
  int64_t stride_a, stride_b, stride_c;  // in elements; 0 = broadcast (or batch 1)
  int64_t ld_a, ld_b, ld_c;              // row strides in elements (gemm_shapes.h)
  uint32_t align_a, align_b, align_c;
  uint32_t align_c_in;            // C's alignment when C is apart from D (0: C is D)
  uint8_t epilogue;               // Epilogue::Kind
  uint32_t align_bias, align_aux;  // the epilogue's vectors' alignment (0: none)
  bool operator==(const Key&) const = default;
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 0;
    auto mix = [&h](uint64_t v) {
      h ^= std::hash<uint64_t>{}(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    };
    mix(uint64_t(k.device)), mix(uint64_t(k.dtype)), mix(uint64_t(k.out)), mix(k.trans_a);
    mix(k.trans_b), mix(k.tf32);
    mix(uint64_t(k.M)), mix(uint64_t(k.N)), mix(uint64_t(k.K)), mix(uint64_t(k.batch));
    mix(uint64_t(k.stride_a)), mix(uint64_t(k.stride_b)), mix(uint64_t(k.stride_c));
    mix(uint64_t(k.ld_a)), mix(uint64_t(k.ld_b)), mix(uint64_t(k.ld_c));
    mix(k.align_a), mix(k.align_b), mix(k.align_c), mix(k.align_c_in), mix(k.epilogue);
    mix(k.align_bias);
    mix(k.align_aux);
    return h;
  }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t lt_a = nullptr, lt_b = nullptr, lt_c = nullptr;  // cuBLASLt's A, B, C=D
  cublasLtMatmulAlgo_t algo{};
  // With TESSERA_GEMM_TUNE: the usable heuristic results in its order (algo is the first until
  // the plan's first call has timed them: timed). Wrapped: nvcc 13.0's front end fails on a
  // std::vector of the header's unnamed struct.
  struct Candidate {
    cublasLtMatmulAlgo_t algo;
  };
  std::vector<Candidate> candidates;
  bool timed = false;
  bool found = false;  // false: the heuristic offered nothing for this problem (see status)
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;  // the heuristic query's
  bool f64 = false;                               // alpha and beta are doubles (else floats)
};

cudaDataType_t data_type(DType t) {
  switch (t) {
    case DType::BF16:
      return CUDA_R_16BF;
    case DType::F32:
      return CUDA_R_32F;
    case DType::F64:
      return CUDA_R_64F;
    default:
      TESSERA_FAIL("gemm: dtype ", dtype_name(t), " is not supported on CUDA");
  }
}

// A column-major (rows, cols) layout with leading dimension ld (our row-major matrix's row stride).
cublasLtMatrixLayout_t layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld,
                              int32_t batch, int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, uint64_t(rows), uint64_t(cols), ld));
  if (batch > 1) {
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch,
                                                  sizeof batch));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                  &stride, sizeof stride));
  }
  return l;
}

// ep: the call the plan is made for. The heuristic reads the epilogue's pointers for their
// alignment (cublasLt.h), so they are set before it runs; the key holds that alignment, and later
// calls with the same key set their own pointers (run_gemm).
Plan make_plan(const Key& k, cublasLtHandle_t handle, const Epilogue& ep) {
  Plan p;
  // The preference is the call's; the plan's objects are destroyed if a check below throws (a
  // made plan lives as long as the process).
  cublasLtMatmulPreference_t pref = nullptr;
  struct Unmade {
    Plan& p;
    cublasLtMatmulPreference_t& pref;
    bool made = false;
    ~Unmade() {
      if (pref) cublasLtMatmulPreferenceDestroy(pref);
      if (made) return;
      for (cublasLtMatrixLayout_t l : {p.lt_a, p.lt_b, p.lt_c})
        if (l) cublasLtMatrixLayoutDestroy(l);
      if (p.desc) cublasLtMatmulDescDestroy(p.desc);
    }
  } unmade{p, pref};
  const cudaDataType_t type = data_type(k.dtype);
  p.f64 = k.dtype == DType::F64;
  const cublasComputeType_t compute = p.f64 ? CUBLAS_COMPUTE_64F
                                      : (k.dtype == DType::F32 && k.tf32)
                                          ? CUBLAS_COMPUTE_32F_FAST_TF32
                                          : CUBLAS_COMPUTE_32F;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, compute, p.f64 ? CUDA_R_64F : CUDA_R_32F));
  const cublasOperation_t op_a = k.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's A is our b
  const cublasOperation_t op_b = k.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's B is our a
  CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
  CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
  if (k.epilogue != Epilogue::None) {
    const cublasLtEpilogue_t epilogue = k.epilogue == Epilogue::Bias ? CUBLASLT_EPILOGUE_BIAS
                                        : k.epilogue == Epilogue::GeluAuxBias
                                            ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
                                        : k.epilogue == Epilogue::DGelu ? CUBLASLT_EPILOGUE_DGELU
                                                                        : CUBLASLT_EPILOGUE_BGRADB;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                                sizeof epilogue));
    if (k.epilogue != Epilogue::DGelu) {  // the bias (gradient) vector is D's type
      const cudaDataType_t bias_type = data_type(k.out);
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                  &bias_type, sizeof bias_type));
    }
    set_epilogue_pointers(p.desc, ep);
  }
  if (k.epilogue == Epilogue::GeluAuxBias || k.epilogue == Epilogue::DGelu) {
    // aux: D's type (the default) and D's layout
    const int64_t ld = k.N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld,
                                                sizeof ld));
  }
  // Stored shapes, column-major: b is (N, K) or, when trans_b, (K, N); a is (K, M) or (M, K).
  p.lt_a = k.trans_b ? layout(type, k.K, k.N, k.ld_b, k.batch, k.stride_b)
                     : layout(type, k.N, k.K, k.ld_b, k.batch, k.stride_b);
  p.lt_b = k.trans_a ? layout(type, k.M, k.K, k.ld_a, k.batch, k.stride_a)
                     : layout(type, k.K, k.M, k.ld_a, k.batch, k.stride_a);
  p.lt_c = layout(data_type(k.out), k.N, k.M, k.ld_c, k.batch, k.stride_c);

  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &ws, sizeof ws));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &k.align_b, sizeof k.align_b));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &k.align_a, sizeof k.align_a));
  const uint32_t align_c_in = k.align_c_in ? k.align_c_in : k.align_c;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c_in, sizeof align_c_in));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &k.align_c, sizeof k.align_c));
  // A product split over k adds its parts in the compute type (f32) only: cuBLASLt's INPLACE and
  // OUTPUT_TYPE schemes add them in D's type, which for a bf16 D is a rounding per part. An
  // algorithm that does not split k passes any mask. (On the H200, 2026-12-04, this changed
  // neither the step's time nor the bf16 GemmCuda tests' counts: docs/gpu-notes.md.)
  const uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction, sizeof reduction));
  // The heuristic sees layouts, not pointers: with C apart from D it may rank first an algorithm
  // that writes D in place only (CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT 0), which
  // cublasLtMatmul would then refuse. So it is asked for several, and the best that writes D
  // apart from C is taken.
  // With tuning on, the first `tune` usable results are kept to be timed (run_gemm).
  constexpr int kCandidates = 8, kMaxResults = 16;
  const int tune = tune_candidates();
  const bool out_of_place = k.align_c_in != 0;
  const int requested = std::max({out_of_place ? kCandidates : 1, tune});
  cublasLtMatmulHeuristicResult_t results[kMaxResults]{};
  int returned = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      handle, p.desc, p.lt_a, p.lt_b, p.lt_c, p.lt_c, pref, requested, results, &returned);
  const size_t keep = size_t(std::max(tune, 1));
  for (int i = 0; st == CUBLAS_STATUS_SUCCESS && i < returned && p.candidates.size() < keep; ++i) {
    int32_t apart = 0;
    size_t written = 0;
    if (out_of_place && (cublasLtMatmulAlgoCapGetAttribute(
                             &results[i].algo, CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT,
                             &apart, sizeof apart, &written) != CUBLAS_STATUS_SUCCESS ||
                         apart == 0))
      continue;
    p.candidates.push_back({results[i].algo});
  }
  p.found = !p.candidates.empty();
  if (p.found) p.algo = p.candidates[0].algo;
  p.timed = p.candidates.size() < 2;
  // Not an error yet: a batched problem falls back to one gemm per batch, a C apart from D to C
  // copied into D, and only a problem that no algorithm takes even then is reported (with this
  // status).
  p.status = st == CUBLAS_STATUS_SUCCESS && !p.found ? CUBLAS_STATUS_NOT_SUPPORTED : st;
  unmade.made = true;
  return p;
}

// The cached plan of a problem (made on first sight, for the call `ep`; plans live as long as the
// process).
Plan& plan_for(const Key& k, cublasLtHandle_t handle, const Epilogue& ep = {}) {
  static std::mutex mu;
  static auto* plans = new std::unordered_map<Key, Plan, KeyHash>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans->find(k);
  if (it == plans->end()) it = plans->emplace(k, make_plan(k, handle, ep)).first;
  return it->second;  // node-based map: the reference survives later insertions
}

// Times plan.candidates (TESSERA_GEMM_TUNE) and keeps the fastest in p.algo. run(algo, d) runs the
// call's product with that algorithm, D written at d: the call's own D, or, when scratch_bytes is
// not 0 (the call adds into D), a scratch buffer of that size whose values do not matter to the
// time. A candidate whose warm-up run fails is passed over; without memory for the scratch, the
// heuristic's first stays.
constexpr int kTimedRuns = 5, kRounds = 2;
template <class Run>
void time_candidates(Plan& p, void* d, size_t scratch_bytes, Run&& run) {
  const auto t0 = std::chrono::steady_clock::now();
  p.timed = true;
  void* target = d;
  if (scratch_bytes != 0 && cudaMalloc(&target, scratch_bytes) != cudaSuccess) {
    (void)cudaGetLastError();  // out of memory is not sticky: clear it and run untimed
    ++g_stats.tune_skipped;
    return;
  }
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  // Two rounds over the candidates, each one's best time kept, so that none is judged only by
  // a moment when the clocks were still rising.
  const size_t n = p.candidates.size();
  std::vector<float> best(n, INFINITY);  // stays infinite for a candidate whose warm-up failed
  for (int round = 0; round < kRounds; ++round) {
    for (size_t i = 0; i < n; ++i) {
      const bool usable = round == 0 ? run(p.candidates[i].algo, target) == CUBLAS_STATUS_SUCCESS
                                     : std::isfinite(best[i]);
      if (!usable) continue;
      CUDA_CHECK(cudaEventRecord(start, 0));
      for (int r = 0; r < kTimedRuns; ++r) CUBLAS_CHECK(run(p.candidates[i].algo, target));
      CUDA_CHECK(cudaEventRecord(stop, 0));
      CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0.0f;
      CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      best[i] = std::min(best[i], ms);
    }
  }
  const size_t chosen = size_t(std::min_element(best.begin(), best.end()) - best.begin());
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  if (scratch_bytes != 0) CUDA_CHECK(cudaFree(target));
  p.algo = p.candidates[chosen].algo;
  ++g_stats.tuned_plans;
  if (chosen != 0) ++g_stats.tuned_not_first;
  g_stats.tune_ms +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// c = beta * c (c = 0 when beta == 0, NaNs included): the whole gemm when K == 0.
template <typename T>
__global__ void scale_kernel(T* c, int64_t n, double beta) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) c[i] = beta == 0 ? T(0) : T(beta * double(c[i]));
}
__global__ void scale_bf16_kernel(uint16_t* c, int64_t n, float beta) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  if (beta == 0.0f) {
    c[i] = 0;
    return;
  }
  const float v = __uint_as_float(uint32_t(c[i]) << 16) * beta;
  const uint32_t u = __float_as_uint(v);
  c[i] = ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
             ? uint16_t((u >> 16) | 0x0040u)
             : uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

void scale_c(const Tensor& c, double beta) {
  const int64_t n = c.numel();
  const unsigned blocks = unsigned((n + 255) / 256);
  switch (c.dtype()) {
    case DType::F32:
      scale_kernel<<<blocks, 256>>>(static_cast<float*>(c.data_ptr()), n, beta);
      break;
    case DType::F64:
      scale_kernel<<<blocks, 256>>>(static_cast<double*>(c.data_ptr()), n, beta);
      break;
    default:
      scale_bf16_kernel<<<blocks, 256>>>(static_cast<uint16_t*>(c.data_ptr()), n, float(beta));
  }
  CUDA_CHECK_LAUNCH();
}

// c = alpha op(a) op(b) + beta c_in, and the epilogue `ep` on top; c_in is c itself unless given
// (a contiguous tensor like c, apart from it: cuBLASLt's C, read, beside its D, written). Returns
// false, having done nothing, when the epilogue cannot run here or no algorithm writes D apart
// from a given c_in (the caller then does its work with other kernels).
bool run_gemm(const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b,
              double alpha, double beta, const Epilogue& ep = {}, const Tensor* c_in = nullptr) {
  const GemmOperand mc = gemm_operand("cuda gemm", c, "c"), ma = gemm_operand("cuda gemm", a, "a"),
                    mb = gemm_operand("cuda gemm", b, "b");
  const int64_t M = mc.rows, N = mc.cols;
  const int64_t K = trans_a ? ma.rows : ma.cols;
  const int64_t am = trans_a ? ma.cols : ma.rows;
  const int64_t bk = trans_b ? mb.cols : mb.rows, bn = trans_b ? mb.rows : mb.cols;
  TESSERA_CHECK(am == M && bk == K && bn == N, "cuda gemm: shapes do not agree: c ",
                shape_str(c.shape()), " = a ", shape_str(a.shape()), (trans_a ? "^T" : ""), " @ b ",
                shape_str(b.shape()), (trans_b ? "^T" : ""));
  TESSERA_CHECK((ma.batch == 1 || ma.batch == mc.batch) && (mb.batch == 1 || mb.batch == mc.batch),
                "cuda gemm: batch sizes do not agree: c ", shape_str(c.shape()), ", a ",
                shape_str(a.shape()), ", b ", shape_str(b.shape()));
  const bool widened = a.dtype() == DType::BF16 && c.dtype() == DType::F32;
  TESSERA_CHECK(a.dtype() == b.dtype() && (a.dtype() == c.dtype() || widened),
                "cuda gemm: dtypes differ: c ", dtype_name(c.dtype()), ", a ",
                dtype_name(a.dtype()), ", b ", dtype_name(b.dtype()),
                " (one dtype, or an f32 c under bf16 a and b)");
  check_same_device("cuda gemm", {&c, &a, &b});
  TESSERA_CHECK(!c_in || (c_in->shape() == c.shape() && c_in->dtype() == c.dtype() &&
                          c_in->is_contiguous() && c_in->device() == c.device() &&
                          mc.batch == 1 && mc.dense()),
                "cuda gemm: the matrix added must be contiguous and like c ", c.str(), " (one "
                "batch), got ", c_in ? c_in->str() : std::string());
  TESSERA_CHECK(c.device().is_cuda(), "cuda gemm: c must be a CUDA tensor, got ", c.str());
  auto aligned16 = [](const Tensor* t) {
    return reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 == 0;
  };
  // A fusion switched off (TESSERA_GEMM_EPILOGUES): the caller's fallback runs.
  const unsigned allowed = allowed_fusions();
  if ((ep.kind != Epilogue::None && !(allowed & (1u << ep.kind))) ||
      (c_in && !(allowed & kResidual)))
    return false;
  // The widened gemm takes the bias gradient alone (into an f32 vector, D's type).
  if (ep.kind != Epilogue::None &&
      (K == 0 || c.dtype() == DType::F64 || (widened && ep.kind != Epilogue::BGradB) ||
       (ep.bias && (!aligned16(ep.bias) || ep.bias->dtype() != c.dtype())) ||
       (ep.aux && (!aligned16(ep.aux) || N % 8 != 0 || !mc.dense()))))
    return false;
  if (M == 0 || N == 0 || mc.batch == 0) return true;
  const int device = c.device().index;
  DeviceGuard guard(device);
  if (K == 0) {  // no products: c = beta * c, which cuBLASLt would not do for us
    if (c_in) TESSERA_KERNEL(c, copy)(c, *c_in);
    if (mc.dense()) {
      scale_c(c, beta);
    } else {  // rows apart: scaled as one dense block, then put back
      Tensor dense = c.contiguous();
      scale_c(dense, beta);
      TESSERA_KERNEL(c, copy)(c, dense);
    }
    return true;
  }

  Key k{};
  k.device = device, k.dtype = a.dtype(), k.out = c.dtype(), k.trans_a = trans_a;
  k.trans_b = trans_b;
  k.tf32 = a.dtype() == DType::F32 && tf32_allowed();
  k.M = M, k.N = N, k.K = K;
  int64_t batch = mc.batch;
  int64_t sa = ma.batch == 1 ? 0 : ma.rows * ma.cols, sb = mb.batch == 1 ? 0 : mb.rows * mb.cols;
  int64_t sc = M * N;
  if (batch > 1 && mb.batch == 1 && ma.batch == batch && !trans_a) {
    k.M = M * batch;  // a (batch, M, K) is one (batch M, K) matrix; c likewise (batch M, N)
    batch = 1, sa = sb = sc = 0;
  }
  if (batch == 1) sa = sb = sc = 0;
  k.ld_a = ma.ld, k.ld_b = mb.ld, k.ld_c = mc.ld;
  if (ep.kind != Epilogue::None && batch != 1) return false;
  k.epilogue = ep.kind;
  k.align_bias = ep.bias ? alignment(ep.bias->data_ptr(), 0) : 0;
  k.align_aux = ep.aux ? alignment(ep.aux->data_ptr(), 0) : 0;
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  TESSERA_CHECK(k.M <= kMax && N <= kMax && K <= kMax && batch <= kMax,
                "cuda gemm: dimensions beyond 2^31 - 1: c ", shape_str(c.shape()), " = a ",
                shape_str(a.shape()), " @ b ", shape_str(b.shape()));
  k.batch = int32_t(batch);
  k.stride_a = sa, k.stride_b = sb, k.stride_c = sc;
  const int64_t es = int64_t(dtype_size(a.dtype())), es_c = int64_t(dtype_size(c.dtype()));
  k.align_a = alignment(a.data_ptr(), sa * es);
  k.align_b = alignment(b.data_ptr(), sb * es);
  k.align_c = alignment(c.data_ptr(), sc * es_c);
  k.align_c_in = c_in ? alignment(c_in->data_ptr(), 0) : 0;

  DeviceBlas& blas = device_blas(device);
  const float alpha_f = float(alpha), beta_f = float(beta);
  // The product with algorithm `algo`, D at pc and C at pc_in.
  auto matmul = [&](const Plan& p, const cublasLtMatmulAlgo_t& algo, const void* pa,
                    const void* pb, void* pc, const void* pc_in) {
    const void* al = p.f64 ? static_cast<const void*>(&alpha) : &alpha_f;
    const void* be = p.f64 ? static_cast<const void*>(&beta) : &beta_f;
    return cublasLtMatmul(blas.handle, p.desc, al, pb, p.lt_a, pa, p.lt_b, be, pc_in, p.lt_c, pc,
                          p.lt_c, &algo, blas.workspace, kWorkspaceBytes, 0);
  };
  auto run = [&](const Plan& p, const void* pa, const void* pb, void* pc) {
    CUBLAS_CHECK(matmul(p, p.algo, pa, pb, pc, c_in ? c_in->data_ptr() : pc));
  };
  auto need = [&](const Plan& p) {
    TESSERA_CHECK(p.found, "cuda gemm: cuBLASLt has no algorithm for c ", shape_str(c.shape()),
                  " = a ", shape_str(a.shape()), (trans_a ? "^T" : ""), " @ b ",
                  shape_str(b.shape()), (trans_b ? "^T" : ""), " in ", dtype_name(c.dtype()),
                  " (alignments ", k.align_a, "/", k.align_b, "/", k.align_c, " bytes; ",
                  cublasLtGetStatusName(p.status), ")");
  };
  Plan& plan = plan_for(k, blas.handle, ep);
  if (ep.kind != Epilogue::None) {
    if (!plan.found) return false;
    // On the plan's shared descriptor: sound while one host thread issues the gemms (every
    // kernel runs on the one default stream, and cublasLtMatmul reads the attributes as it
    // launches).
    set_epilogue_pointers(plan.desc, ep);
  }
  if (c_in && !plan.found) return false;  // the caller adds C another way (linear_forward)
  if (plan.found || batch == 1) {
    need(plan);
    if (!plan.timed) {
      // A gemm that adds into D (C is D, beta != 0) is timed on a scratch D of c's extent.
      const bool adds = !c_in && beta != 0.0;
      const int64_t extent = (k.batch - 1) * k.stride_c + (k.M - 1) * k.ld_c + N;
      time_candidates(plan, c.data_ptr(), adds ? size_t(extent * es_c) : 0,
                      [&](const cublasLtMatmulAlgo_t& algo, void* d) {
                        return matmul(plan, algo, a.data_ptr(), b.data_ptr(), d,
                                      c_in ? c_in->data_ptr() : d);
                      });
    }
    run(plan, a.data_ptr(), b.data_ptr(), c.data_ptr());
    return true;
  }
  // No batched algorithm for this layout (a broadcast stride, say): one gemm per batch.
  ++g_stats.per_batch_gemms;
  Key one = k;
  one.batch = 1, one.stride_a = one.stride_b = one.stride_c = 0;
  const Plan& single = plan_for(one, blas.handle);
  need(single);
  const char* pa = static_cast<const char*>(a.data_ptr());
  const char* pb = static_cast<const char*>(b.data_ptr());
  char* pc = static_cast<char*>(c.data_ptr());
  for (int64_t i = 0; i < batch; ++i)
    run(single, pa + i * sa * es, pb + i * sb * es, pc + i * sc * es_c);
  return true;
}

void gemm(const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b,
          double alpha, double beta) {
  run_gemm(c, a, b, trans_a, trans_b, alpha, beta);
}

// y = x w^T + bias + residual. The residual is the gemm's C, read where it lies (beta 1, D apart
// from C) and the bias the epilogue's: one rounding. Where no algorithm writes D apart from C (or
// the epilogue is not offered), the residual is copied into y first and the gemm adds onto it in
// place. Without the bias epilogue, the bias is broadcast into y (onto the residual there: a rank-1
// gemm, ones (R, 1) @ bias (1, N), exact products) and the gemm adds the product onto it (beta 1):
// one rounding without a residual, two with; f64 (which no elementwise CUDA kernel takes) works as
// the gemm does.
void linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& bias,
                    const Tensor& residual) {
  check_linear_forward("cuda linear_forward", y, x, w, bias, residual);
  check_same_device("cuda linear_forward", {&y, &x, &w, &bias, &residual});
  const Epilogue ep = bias.defined() ? Epilogue{Epilogue::Bias, &bias} : Epilogue{};
  if (residual.defined()) {
    if (run_gemm(y, x, w, false, true, 1.0, 1.0, ep, &residual)) {
      ++g_stats.residual_in_gemm;
      if (bias.defined()) ++g_stats.bias_epilogue;
      return;
    }
    ++g_stats.residual_fallback;
    TESSERA_KERNEL(y, copy)(y, residual);
  }
  const double beta = residual.defined() ? 1.0 : 0.0;
  if (!bias.defined()) {
    run_gemm(y, x, w, false, true, 1.0, beta);
    return;
  }
  if (run_gemm(y, x, w, false, true, 1.0, beta, ep)) {
    ++g_stats.bias_epilogue;
    return;
  }
  ++g_stats.bias_fallback;
  if (residual.defined()) {
    Tensor ones = Tensor::empty({y.size(0), 1}, y.options());
    ones.fill_(1.0);
    run_gemm(y, ones, bias.view({1, bias.size(0)}), false, false, 1.0, 1.0);
  } else {
    TESSERA_KERNEL(y, copy)(y, make_view(bias, y.shape(), {0, 1}, bias.offset()));
  }
  run_gemm(y, x, w, false, true, 1.0, 1.0);
}

void linear_gelu_forward(const Tensor& y, const Tensor& pre, const Tensor& x, const Tensor& w,
                         const Tensor& bias) {
  check_linear_gelu_forward("cuda linear_gelu_forward", y, pre, x, w, bias);
  check_same_device("cuda linear_gelu_forward", {&y, &pre, &x, &w, &bias});
  TESSERA_CHECK(y.dtype() != DType::F64, "cuda linear_gelu_forward: dtype f64 is not supported "
                "(the GELU of its fallback is a CUDA kernel, which takes f32 or bf16; f64 runs on "
                "the CPU only), got y ", y.str());
  if (run_gemm(y, x, w, false, true, 1.0, 0.0, {Epilogue::GeluAuxBias, &bias, &pre})) {
    ++g_stats.gelu_epilogue;
    return;
  }
  ++g_stats.gelu_fallback;
  linear_forward(pre, x, w, bias, Tensor());
  TESSERA_KERNEL(y, gelu_forward)(y, pre);
}

// dpre = (dy @ w) * gelu'(pre): one gemm with the DGELU epilogue (pre its aux input), or the gemm
// then the GELU backward kernel on its result.
void linear_dgelu_backward(const Tensor& dpre, const Tensor& dy, const Tensor& w,
                           const Tensor& pre) {
  check_linear_dgelu_backward("cuda linear_dgelu_backward", dpre, dy, w, pre);
  check_same_device("cuda linear_dgelu_backward", {&dpre, &dy, &w, &pre});
  TESSERA_CHECK(dpre.dtype() != DType::F64, "cuda linear_dgelu_backward: dtype f64 is not "
                "supported (the GELU backward of its fallback is a CUDA kernel, which takes f32 or "
                "bf16; f64 runs on the CPU only), got dpre ", dpre.str());
  if (run_gemm(dpre, dy, w, false, false, 1.0, 0.0, {Epilogue::DGelu, nullptr, &pre})) {
    ++g_stats.dgelu_epilogue;
    return;
  }
  ++g_stats.dgelu_fallback;
  run_gemm(dpre, dy, w, false, false, 1.0, 0.0);
  TESSERA_KERNEL(dpre, gelu_backward)(dpre, dpre, pre);
}

// dw = dy^T x and db = the sum of dy's rows: one gemm with the BGRADB epilogue (cuBLASLt's B is
// dy, summed over the product's k, its rows), so dy is read once, or the gemm then sum_dim. The
// epilogue writes db, never adds to it: a db that accumulates takes the sum in a scratch vector,
// then an add (N elements, where sum_dim reads R N).
void linear_param_backward(const Tensor& dw, const Tensor& db, const Tensor& dy, const Tensor& x,
                           bool accumulate_w, bool accumulate_b) {
  check_linear_param_backward("cuda linear_param_backward", dw, db, dy, x);
  check_same_device("cuda linear_param_backward", {&dw, &db, &dy, &x});
  const double beta = accumulate_w ? 1.0 : 0.0;
  if (dw.defined() && db.defined()) {
    const Tensor sum = accumulate_b ? Tensor::empty(db.shape(), db.options()) : db;
    if (run_gemm(dw, dy, x, true, false, 1.0, beta, {Epilogue::BGradB, &sum})) {
      if (accumulate_b) TESSERA_KERNEL(db, axpby)(db, 1.0, db, 1.0, sum);
      ++g_stats.bgrad_epilogue;
      return;
    }
    ++g_stats.bgrad_fallback;
  }
  if (dw.defined()) run_gemm(dw, dy, x, true, false, 1.0, beta);
  if (db.defined()) TESSERA_KERNEL(db, sum_dim)(db, dy, 1, dy.size(0), dy.size(1), accumulate_b);
}

}  // namespace

BlasStats blas_stats() { return g_stats; }

void add_blas_kernels(Kernels& k) {
  k.gemm = gemm;
  k.linear_forward = linear_forward;
  k.linear_gelu_forward = linear_gelu_forward;
  k.linear_dgelu_backward = linear_dgelu_backward;
  k.linear_param_backward = linear_param_backward;
}

}  // namespace tessera::cuda
