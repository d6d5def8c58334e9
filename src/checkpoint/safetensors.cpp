// safetensors writer and validating reader (safetensors.h).
#include "checkpoint/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "checkpoint/json.h"

namespace tessera {

// The buffer is copied as is: the host must store numbers little-endian, as the format does.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes little-endian");

namespace {

const char* st_dtype(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
  }
  return "?";
}

// The dtypes of the specification (safetensors' Dtype enum) and their sizes in bytes; sub-byte
// types (F4) are listed as 0 and refused.
int64_t spec_dtype_size(const std::string& d) {
  static const std::map<std::string, int64_t> sizes = {
      {"BOOL", 1}, {"U8", 1},      {"I8", 1},      {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"F8_E8M0", 1}, {"I16", 2},  {"U16", 2},     {"F16", 2},     {"BF16", 2},
      {"I32", 4},  {"U32", 4},     {"F32", 4},     {"F64", 8},     {"I64", 8},
      {"U64", 8},  {"F4", 0},      {"F6_E2M3", 0}, {"F6_E3M2", 0}};
  auto it = sizes.find(d);
  return it == sizes.end() ? -1 : it->second;
}

bool tessera_dtype(const std::string& d, DType* out) {
  if (d == "F32" || d == "F16") *out = DType::F32;  // F16 widened on read
  else if (d == "BF16") *out = DType::BF16;
  else if (d == "F64") *out = DType::F64;
  else if (d == "I32") *out = DType::I32;
  else if (d == "U8") *out = DType::U8;
  else return false;
  return true;
}

// IEEE binary16 -> binary32, exact (subnormals, infinities and NaN included).
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do ++e, mant <<= 1; while (!(mant & 0x400u));
    bits = sign | (uint32_t(112 - e) << 23) | ((mant & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::set<std::string> names;
  std::vector<Tensor> host;
  std::ostringstream json;
  json << "{";
  if (!metadata.empty()) {
    json << "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      json << (first ? "" : ",") << "\"" << json_escape(k) << "\":\"" << json_escape(v) << "\"";
      first = false;
    }
    json << "}";
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    TESSERA_CHECK(!name.empty() && name != "__metadata__", path, ": invalid tensor name '", name,
                  "'");
    TESSERA_CHECK(names.insert(name).second, path, ": tensor '", name, "' given twice");
    TESSERA_CHECK(t.defined(), path, ": tensor '", name, "' is undefined");
    host.push_back(t.detach().to(Device::cpu()).contiguous());
    json << (json.tellp() > 1 ? "," : "") << "\"" << json_escape(name) << "\":{\"dtype\":\""
         << st_dtype(t.dtype()) << "\",\"shape\":[";
    for (size_t d = 0; d < t.shape().size(); ++d) json << (d ? "," : "") << t.shape()[d];
    const uint64_t end = offset + host.back().nbytes();
    json << "],\"data_offsets\":[" << offset << "," << end << "]}";
    offset = end;
  }
  json << "}";
  std::string header = json.str();
  header.append((8 - header.size() % 8) % 8, ' ');  // data starts at 8 + N, a multiple of 8

  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    TESSERA_CHECK(f, path, ": cannot create ", tmp);
    uint64_t n = header.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    f.write(reinterpret_cast<const char*>(len), 8);
    f.write(header.data(), std::streamsize(header.size()));
    for (const Tensor& t : host)
      f.write(static_cast<const char*>(t.data_ptr()), std::streamsize(t.nbytes()));
    f.flush();
    if (!f) {
      f.close();
      std::remove(tmp.c_str());
      TESSERA_FAIL(path, ": write failed (disk full?)");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    TESSERA_FAIL(path, ": cannot rename ", tmp, " into place: ", ec.message());
  }
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::error_code ec;
  // An ifstream opens a directory and reads it as empty: "0 bytes is too short" would mislead.
  TESSERA_CHECK(!std::filesystem::is_directory(path, ec), path,
                ": is a directory, not a safetensors file");
  std::ifstream f(path, std::ios::binary);
  TESSERA_CHECK(f, path, ": cannot open");
  std::ostringstream all;
  all << f.rdbuf();
  TESSERA_CHECK(!f.bad(), path, ": read failed");
  return parse_safetensors(all.str(), path);
}

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& what) {
  const uint64_t size = bytes.size();
  TESSERA_CHECK(size >= 8, what, ": ", size, " bytes is too short for a safetensors file (the "
                "header length alone is 8)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<unsigned char>(bytes[size_t(i)])) << (8 * i);
  TESSERA_CHECK(n >= 2 && n <= size - 8, what, ": header length ", n, " does not fit the file of ",
                size, " bytes");
  const std::string header = bytes.substr(8, size_t(n));
  const Json root = parse_json(header, what + " header");
  TESSERA_CHECK(root.is(Json::Kind::Object), what, ": the header is ", root.kind_name(),
                ", not a JSON object");
  const uint64_t buffer = size - 8 - n;
  const char* data = bytes.data() + 8 + n;

  SafetensorsFile out;
  struct Entry {
    std::string name, dtype;
    Shape shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto& [name, v] : root.members()) {
    if (name == "__metadata__") {
      TESSERA_CHECK(v.is(Json::Kind::Object), what, ": __metadata__ is ", v.kind_name(),
                    ", not an object of strings");
      for (const auto& [k, s] : v.members()) {
        TESSERA_CHECK(s.is(Json::Kind::String), what, ": __metadata__ \"", k, "\" is ",
                      s.kind_name(), ", not a string");
        out.metadata[k] = s.str();
      }
      continue;
    }
    const std::string at = what + ": tensor '" + name + "'";
    TESSERA_CHECK(v.is(Json::Kind::Object), at, " is described by ", v.kind_name());
    for (const auto& [k, unused] : v.members())
      TESSERA_CHECK(k == "dtype" || k == "shape" || k == "data_offsets", at, ": unknown field \"",
                    k, "\"");
    TESSERA_CHECK(v.get("dtype") && v.get("shape") && v.get("data_offsets"), at,
                  " needs dtype, shape and data_offsets");
    Entry e;
    e.name = name;
    e.dtype = v.at("dtype").str(at + " dtype");
    const int64_t esize = spec_dtype_size(e.dtype);
    TESSERA_CHECK(esize >= 0, at, ": unknown dtype \"", e.dtype, "\"");
    DType dt;
    TESSERA_CHECK(esize > 0 && tessera_dtype(e.dtype, &dt), at, ": dtype ", e.dtype,
                  " has no tessera counterpart (f32, f16 -> f32, bf16, f64, i32, u8)");
    uint64_t numel = 1, span = 1;  // span: the product of the non-zero dimensions
    for (const Json& d : v.at("shape").items(at + " shape")) {
      const int64_t x = d.as_int(at + " shape");
      TESSERA_CHECK(x >= 0, at, ": negative dimension ", x);
      // numel * esize must stay below the file size, which bounds every product on the way; span
      // too, which bounds the strides of a tensor with a zero dimension ([0, 2^62, 4]).
      const uint64_t nz = uint64_t(std::max<int64_t>(x, 1));
      TESSERA_CHECK(span <= size / nz, at, ": shape is larger than the file");
      span *= nz;
      numel *= uint64_t(x);
      e.shape.push_back(x);
    }
    const std::vector<Json>& off = v.at("data_offsets").items(at + " data_offsets");
    TESSERA_CHECK(off.size() == 2, at, ": data_offsets needs [begin, end], got ", off.size(),
                  " numbers");
    const int64_t b = off[0].as_int(at + " data_offsets"), en = off[1].as_int(at + " data_offsets");
    TESSERA_CHECK(b >= 0 && en >= b, at, ": data_offsets [", b, ", ", en, "] are not ordered");
    e.begin = uint64_t(b), e.end = uint64_t(en);
    TESSERA_CHECK(e.end <= buffer, at, ": data_offsets [", b, ", ", en, "] run past the ", buffer,
                  "-byte data buffer");
    TESSERA_CHECK(numel * uint64_t(esize) == e.end - e.begin, at, ": shape ", shape_str(e.shape),
                  " of ", e.dtype, " needs ", numel * uint64_t(esize), " bytes, data_offsets give ",
                  e.end - e.begin);
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) {
              return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
            });
  uint64_t covered = 0;
  for (const Entry& e : entries) {
    TESSERA_CHECK(e.begin >= covered, what, ": tensor '", e.name, "' at [", e.begin, ", ", e.end,
                  ") overlaps the tensor before it (which ends at ", covered, ")");
    TESSERA_CHECK(e.begin == covered, what, ": a hole of ", e.begin - covered,
                  " bytes before tensor '", e.name, "' at ", e.begin);
    covered = e.end;
  }
  TESSERA_CHECK(covered == buffer, what, ": the tensors cover ", covered, " of the ", buffer,
                " data bytes (trailing bytes)");

  for (const Entry& e : entries) {
    DType dt = DType::F32;
    tessera_dtype(e.dtype, &dt);
    Tensor t = Tensor::empty(e.shape, dt);
    const char* src = data + e.begin;
    if (e.dtype == "F16") {
      float* dst = static_cast<float*>(t.data_ptr());
      for (int64_t i = 0; i < t.numel(); ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = half_to_float(h);
      }
    } else if (e.end > e.begin) {
      std::memcpy(t.data_ptr(), src, size_t(e.end - e.begin));
    }
    out.stored_dtype[e.name] = e.dtype;
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

}  // namespace tessera
