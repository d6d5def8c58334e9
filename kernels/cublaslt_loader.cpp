// cuBLASLt, loaded on first use. Linking libcublasLt makes every process run its static
// constructors at start: on a 2-core x86 machine, 0.6-0.8 s and 210 MB resident before main(),
// measured with a program whose main is empty (perf: 80% of it in the library's initialisers).
// A CPU run, `train --help` and every test process paid that for a library they never call.
// tessera links cudart and NCCL (cheap to load), and defines here the cuBLASLt functions
// kernels/blas.cu calls, each forwarding to the library opened with dlopen on the first call.
//
// Where the library cannot be opened, every function returns CUBLAS_STATUS_NOT_INITIALIZED and
// cublasLtGetStatusString says which file failed and why (blas.cuh's CUBLAS_CHECK prints it).
// A function blas.cu starts calling must be added here: the link fails until it is.
#include <cublasLt.h>
#include <dlfcn.h>

#include <string>

#include "backend/cuda.h"

namespace {

// The soname of the cuBLASLt these headers declare; then, if the loader's search path (the
// executable's RUNPATH, LD_LIBRARY_PATH, ld.so.cache) lacks it, the toolkit's library folder that
// the build was configured with.
const std::string kSoname = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);

struct Library {
  void* handle = nullptr;
  std::string path;   // what was opened
  std::string error;  // why nothing was, when handle is null
};

const Library& library() {
  static const Library lib = [] {
    Library l;
    std::string tried;
    for (const std::string& path :
         {kSoname, std::string(TESSERA_CUDA_LIBRARY_DIR) + "/" + kSoname}) {
      l.handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (l.handle) {
        l.path = path;
        return l;
      }
      const char* why = dlerror();  // names the file
      tried += (tried.empty() ? "" : "; ") + (why ? std::string(why) : path + ": not found");
    }
    l.error = "cuBLASLt could not be loaded (" + tried + ")";
    return l;
  }();
  return lib;
}

template <class Fn>
Fn symbol(const char* name) {
  const Library& lib = library();
  return lib.handle ? reinterpret_cast<Fn>(dlsym(lib.handle, name)) : nullptr;
}

}  // namespace

namespace tessera::cuda {

std::string cublaslt_library() { return library().handle ? library().path : library().error; }

}  // namespace tessera::cuda

// Each definition has the header's signature (a mismatch does not compile: the header declares
// it extern "C"); a symbol the opened library lacks reads as a library that did not load.
#define TESSERA_LT_FORWARD(name, ...)                                     \
  static const auto fn = symbol<decltype(&name)>(#name);                  \
  return fn ? fn(__VA_ARGS__) : CUBLAS_STATUS_NOT_INITIALIZED

extern "C" {

const char* CUBLASWINAPI cublasLtGetStatusName(cublasStatus_t status) {
  static const auto fn = symbol<decltype(&cublasLtGetStatusName)>("cublasLtGetStatusName");
  return fn ? fn(status) : "CUBLAS_STATUS_NOT_INITIALIZED";
}

const char* CUBLASWINAPI cublasLtGetStatusString(cublasStatus_t status) {
  static const auto fn = symbol<decltype(&cublasLtGetStatusString)>("cublasLtGetStatusString");
  if (fn) return fn(status);
  return library().handle ? "cuBLASLt lacks cublasLtGetStatusString" : library().error.c_str();
}

cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t* handle) {
  TESSERA_LT_FORWARD(cublasLtCreate, handle);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc,
                                                     cublasComputeType_t compute,
                                                     cudaDataType_t scale) {
  TESSERA_LT_FORWARD(cublasLtMatmulDescCreate, desc, compute, scale);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                                           cublasLtMatmulDescAttributes_t attr,
                                                           const void* buf, size_t bytes) {
  TESSERA_LT_FORWARD(cublasLtMatmulDescSetAttribute, desc, attr, buf, bytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  TESSERA_LT_FORWARD(cublasLtMatmulDescDestroy, desc);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout,
                                                       cudaDataType type, uint64_t rows,
                                                       uint64_t cols, int64_t ld) {
  TESSERA_LT_FORWARD(cublasLtMatrixLayoutCreate, layout, type, rows, cols, ld);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                             cublasLtMatrixLayoutAttribute_t attr,
                                                             const void* buf, size_t bytes) {
  TESSERA_LT_FORWARD(cublasLtMatrixLayoutSetAttribute, layout, attr, buf, bytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  TESSERA_LT_FORWARD(cublasLtMatrixLayoutDestroy, layout);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  TESSERA_LT_FORWARD(cublasLtMatmulPreferenceCreate, pref);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(
    cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
    size_t bytes) {
  TESSERA_LT_FORWARD(cublasLtMatmulPreferenceSetAttribute, pref, attr, buf, bytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  TESSERA_LT_FORWARD(cublasLtMatmulPreferenceDestroy, pref);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
    cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
    cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t results[],
    int* returned) {
  TESSERA_LT_FORWARD(cublasLtMatmulAlgoGetHeuristic, handle, op, a, b, c, d, pref, requested,
                     results, returned);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoCapGetAttribute(
    const cublasLtMatmulAlgo_t* algo, cublasLtMatmulAlgoCapAttributes_t attr, void* buf,
    size_t bytes, size_t* written) {
  TESSERA_LT_FORWARD(cublasLtMatmulAlgoCapGetAttribute, algo, attr, buf, bytes, written);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                           const void* alpha, const void* a,
                                           cublasLtMatrixLayout_t a_layout, const void* b,
                                           cublasLtMatrixLayout_t b_layout, const void* beta,
                                           const void* c, cublasLtMatrixLayout_t c_layout,
                                           void* d, cublasLtMatrixLayout_t d_layout,
                                           const cublasLtMatmulAlgo_t* algo, void* workspace,
                                           size_t workspace_bytes, cudaStream_t stream) {
  TESSERA_LT_FORWARD(cublasLtMatmul, handle, desc, alpha, a, a_layout, b, b_layout, beta, c,
                     c_layout, d, d_layout, algo, workspace, workspace_bytes, stream);
}

}  // extern "C"
