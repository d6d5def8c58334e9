// safetensors files (the format Hugging Face loads weights from), written and read exactly as its
// specification says (huggingface/safetensors README, "Format"):
//
//   [8 bytes]  N, the header size, unsigned 64-bit little-endian
//   [N bytes]  UTF-8 JSON: {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]},
//              ..., "__metadata__": {"<key>": "<string>", ...}}, padded with spaces so that the
//              data starts at an 8-byte-aligned file offset
//   [rest]     the byte buffer: each tensor row-major little-endian at [b, e) relative to the start
//              of the buffer; the tensors tile the buffer, no holes, no overlaps
//
//   write_safetensors("out/model.safetensors", {{"lm_head.weight", w}}, {{"format", "pt"}});
//   SafetensorsFile f = read_safetensors("out/model.safetensors");   // CPU tensors, file order
//
// The reader trusts nothing: the header length against the file size, the JSON (strict, no
// duplicate names), every dtype, shape and offset pair, and that the tensors cover the buffer
// exactly. Every error names the file and, where one is at fault, the tensor. F16 tensors (common
// in published models; tessera has no f16) are widened to f32, which is exact. Other valid
// safetensors dtypes that tessera lacks (I64, F8_E4M3, ...) are errors naming the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tessera {

struct SafetensorsFile {
  std::vector<std::pair<std::string, Tensor>> tensors;  // in data-offset order
  std::map<std::string, std::string> metadata;          // __metadata__
  std::map<std::string, std::string> stored_dtype;      // name -> "F32", "BF16", "F16", ...
};

// Writes the tensors (any device, any strides) in the given order, their dtypes kept (f32 -> F32,
// bf16 -> BF16, f64 -> F64, i32 -> I32, u8 -> U8). Names must be unique, non-empty and not
// "__metadata__". The file is written to <path>.tmp and renamed over path once complete.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

SafetensorsFile read_safetensors(const std::string& path);

// The same from bytes in memory; `what` names them in errors (the file name, for read_safetensors).
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& what);

}  // namespace tessera
