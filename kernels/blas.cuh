// cuBLAS / cuBLASLt status checks with file:line, for kernels/blas.cu and anything else that calls
// cuBLAS.
#pragma once

#include <cublasLt.h>

#include "core/error.h"

// TESSERA_FAIL appends the file:line of the check.
#define CUBLAS_CHECK(call)                                             \
  do {                                                                 \
    cublasStatus_t st_ = (call);                                       \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                  \
      TESSERA_FAIL("cuBLAS error: ", cublasLtGetStatusName(st_), " (", \
                   cublasLtGetStatusString(st_), ") in ", #call);      \
  } while (0)
