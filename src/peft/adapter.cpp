#include "peft/adapter.h"

#include <cstdio>
#include <cstring>

namespace tessera::peft {

namespace {

struct Fnv1a {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64 offset basis and prime (Fowler/Noll/Vo)
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  }
};

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

std::string fingerprint(const std::vector<nn::NamedTensor>& params) {
  Fnv1a f;
  for (const auto& [name, t] : params) {
    f.add(name.data(), name.size() + 1);  // with the terminating NUL: names cannot run together
    const char* dt = dtype_name(t.dtype());
    f.add(dt, std::strlen(dt) + 1);
    for (int64_t d : t.shape()) f.add(&d, sizeof d);
    const Tensor host = t.detach().to(Device::cpu()).contiguous();
    f.add(host.data_ptr(), host.nbytes());
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(f.h));
  return buf;
}

std::map<std::string, std::string> adapter_attrs(const Lora& lora, const std::string& base_path,
                                                 const std::string& base_fingerprint) {
  const LoraOptions& o = lora.options();
  return {{"format", "tessera-lora"},
          {"rank", std::to_string(o.rank)},
          {"alpha", number(o.alpha)},
          {"scaling", number(o.scaling())},
          {"dropout", number(o.dropout)},
          {"targets", targets_string(o.targets)},
          {"rslora", o.rslora ? "true" : "false"},
          {"quantize", o.quantize},
          {"base_checkpoint", base_path},
          {"base_fingerprint", base_fingerprint},
          {"base_parameters", std::to_string(lora.base_parameters())}};
}

void check_base(const std::map<std::string, std::string>& attrs, const std::string& adapter_path,
                const std::string& base_path, const std::string& base_fingerprint) {
  auto it = attrs.find("base_fingerprint");
  TESSERA_CHECK(it != attrs.end(), "checkpoint ", adapter_path,
                " is not a LoRA checkpoint (no /adapter base_fingerprint)");
  if (it->second == base_fingerprint) return;
  auto from = attrs.find("base_checkpoint");
  TESSERA_FAIL("LoRA checkpoint ", adapter_path, " was trained on base ",
               from != attrs.end() ? from->second : "?", " (fingerprint ", it->second, "), but ",
               base_path, " has fingerprint ", base_fingerprint,
               ": a different model; pass the base the adapters were trained on");
}

}  // namespace tessera::peft
