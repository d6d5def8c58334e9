// The CUDA emulator's PTX interpreter (ptx.h): the instructions of an inline asm statement, parsed
// once per statement and carried out in the running emulated thread. Semantics from the PTX ISA
// (NVIDIA, "Parallel Thread Execution ISA": "Warp-level matrix load instruction: ldmatrix",
// "Matrix Fragments for mma.m16n8k16 with floating point type", "cp.async",
// "cp.async.commit_group", "cp.async.wait_group / cp.async.wait_all", "ex2", "rcp"); the fragment
// layouts are ptx_fragments.h's.
//
// Checked as nvcc and the hardware would not forgive: an operand's constraint against its C++ type
// ("r" a 32-bit integer, "f" a float, "l" 64 bits), an output-only ("=") operand read as a source,
// an input written, a register count that does not fit the instruction, a shared address outside
// the launch's dynamic shared memory, a misaligned address, a global source outside device memory,
// and lanes of one warp in different .sync.aligned instructions.
#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda_emu.h"
#include "ptx_fragments.h"
#include "wgmma.h"

namespace tessera::emu {

namespace {

struct Arg {
  enum class Kind { Reg, Imm, Vec, Addr, Name } kind;
  std::vector<int> regs;  // Reg and Addr: one operand number; Vec: the list
  int64_t imm = 0;        // Imm; Addr: the offset of [%n+imm]
  std::string name;       // Name: a predicate the statement declares (.reg .pred)
};

struct Instr {
  enum class Kind {
    Unknown,
    Ldmatrix,
    Mma,
    CpAsync,
    CommitGroup,
    WaitGroup,
    WaitAll,
    RegPred,
    Setp,
    ProxyFence,
    WgFence,
    WgCommit,
    WgWait,
    WgMma,
    Ex2,
    Rcp
  } kind{};
  std::string text;  // for errors: the instruction as written
  std::string op;    // "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
  std::vector<std::string> parts;  // op split at its dots (a "::" stays inside its part)
  std::vector<Arg> args;
  bool trans = false;  // ldmatrix .trans
  bool cg = false;     // cp.async .cg (else .ca)
  int n = 0;           // wgmma.mma_async: N of m64nNk16
  std::string error;   // a parse error, reported when the instruction runs

  bool has(const char* part) const {
    for (const std::string& p : parts)
      if (p == part) return true;
    return false;
  }
};

// The instruction's kind from its opcode, or an error naming what is not emulated.
void decode(Instr& in) {
  using K = Instr::Kind;
  const std::string& head = in.parts[0];
  const bool shared = in.has("shared") || in.has("shared::cta");
  if (head == "ldmatrix") {
    in.kind = K::Ldmatrix;
    in.trans = in.has("trans");
    if (!(in.has("sync") && in.has("aligned") && in.has("m8n8") && in.has("b16") && shared &&
          in.has("x4")))
      in.error = "only ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 is emulated";
  } else if (head == "mma") {
    in.kind = K::Mma;
    if (in.op != "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")
      in.error = "only mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 is emulated";
  } else if (in.op == "cp.async.commit_group") {
    in.kind = K::CommitGroup;
  } else if (in.op == "cp.async.wait_group") {
    in.kind = K::WaitGroup;
  } else if (in.op == "cp.async.wait_all") {
    in.kind = K::WaitAll;
  } else if (head == "cp" && in.parts.size() > 1 && in.parts[1] == "async") {
    in.kind = K::CpAsync;
    in.cg = in.has("cg");
    if (!(in.cg || in.has("ca")) || !in.has("global") || !shared || in.has("L2::cache_hint"))
      in.error = "only cp.async.{ca,cg}.shared.global [dst], [src], cp-size[, src-size] is emulated";
  } else if (in.op == ".reg") {
    in.kind = K::RegPred;  // ".reg .pred p": the operand list is ".pred p"
  } else if (head == "ex2") {
    in.kind = K::Ex2;
    if (in.op != "ex2.approx.ftz.f32") in.error = "only ex2.approx.ftz.f32 is emulated";
  } else if (head == "rcp") {
    in.kind = K::Rcp;
    if (in.op != "rcp.approx.ftz.f32") in.error = "only rcp.approx.ftz.f32 is emulated";
  } else if (in.op == "setp.ne.b32") {
    in.kind = K::Setp;
  } else if (in.op == "fence.proxy.async.shared::cta") {
    in.kind = K::ProxyFence;
  } else if (in.op == "wgmma.fence.sync.aligned") {
    in.kind = K::WgFence;
  } else if (in.op == "wgmma.commit_group.sync.aligned") {
    in.kind = K::WgCommit;
  } else if (in.op == "wgmma.wait_group.sync.aligned") {
    in.kind = K::WgWait;
  } else if (head == "wgmma") {
    in.kind = K::WgMma;
    const std::string& shape = in.parts.size() > 4 ? in.parts[4] : std::string();
    const size_t k = shape.find('k');
    if (shape.rfind("m64n", 0) == 0 && k != std::string::npos)
      in.n = std::atoi(shape.substr(4, k - 4).c_str());
    if (in.parts.size() != 8 || in.parts[1] != "mma_async" || in.parts[2] != "sync" ||
        in.parts[3] != "aligned" || shape.substr(k == std::string::npos ? 0 : k) != "k16" ||
        in.n < 8 || in.n > 256 || in.n % 8 || in.parts[5] != "f32" || in.parts[6] != "bf16" ||
        in.parts[7] != "bf16")
      in.error = "only wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16 is emulated";
  } else {
    in.error = "an instruction the emulator does not know";
  }
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\n\r"), e = s.find_last_not_of(" \t\n\r");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// Splits at `sep` outside {} and [].
std::vector<std::string> split_top(const std::string& s, char sep) {
  std::vector<std::string> out;
  int depth = 0;
  std::string cur;
  for (char c : s) {
    if (c == '{' || c == '[') ++depth;
    if (c == '}' || c == ']') --depth;
    if (c == sep && depth == 0) {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!trim(cur).empty() || !out.empty()) out.push_back(trim(cur));
  return out;
}

bool parse_reg(const std::string& s, int& n) {  // "%12"
  if (s.size() < 2 || s[0] != '%' || s.find_first_not_of("0123456789", 1) != std::string::npos)
    return false;
  n = std::atoi(s.c_str() + 1);
  return true;
}

bool parse_imm(const std::string& s, int64_t& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  v = std::strtoll(s.c_str(), &end, 0);
  return end && *end == '\0';
}

Instr parse_one(const std::string& text) {
  Instr in;
  in.text = text;
  const size_t space = text.find_first_of(" \t");
  in.op = text.substr(0, space);
  for (size_t b = 0; b <= in.op.size();) {  // "shared::cta" has no dot: it stays one part
    size_t e = in.op.find('.', b);
    if (e == std::string::npos) e = in.op.size();
    in.parts.push_back(in.op.substr(b, e - b));
    b = e + 1;
  }
  const std::string rest = space == std::string::npos ? "" : trim(text.substr(space));
  for (const std::string& a : rest.empty() ? std::vector<std::string>{} : split_top(rest, ',')) {
    Arg arg{};
    int n = 0;
    int64_t v = 0;
    if (a.size() >= 2 && a.front() == '{' && a.back() == '}') {
      arg.kind = Arg::Kind::Vec;
      for (const std::string& r : split_top(a.substr(1, a.size() - 2), ',')) {
        if (!parse_reg(r, n)) in.error = "a vector element '" + r + "' that is not an operand %n";
        arg.regs.push_back(n);
      }
    } else if (a.size() >= 2 && a.front() == '[' && a.back() == ']') {
      arg.kind = Arg::Kind::Addr;
      std::string inner = a.substr(1, a.size() - 2), off;
      const size_t plus = inner.find('+');
      if (plus != std::string::npos) off = trim(inner.substr(plus + 1)), inner = trim(inner.substr(0, plus));
      if (!parse_reg(trim(inner), n) || (!off.empty() && !parse_imm(off, arg.imm)))
        in.error = "an address '" + a + "' that is not [%n] or [%n+offset]";
      arg.regs.push_back(n);
    } else if (parse_reg(a, n)) {
      arg.kind = Arg::Kind::Reg;
      arg.regs.push_back(n);
    } else if (parse_imm(a, v)) {
      arg.kind = Arg::Kind::Imm;
      arg.imm = v;
    } else if (!a.empty() && (std::isalpha(static_cast<unsigned char>(a[0])) || a[0] == '_' ||
                              a.rfind(".pred ", 0) == 0)) {
      arg.kind = Arg::Kind::Name;  // a predicate, or ".pred p" in a declaration
      arg.name = a.rfind(".pred ", 0) == 0 ? trim(a.substr(6)) : a;
    } else {
      in.error = "an operand '" + a + "' the emulator does not parse (%%, %= and names are not emulated)";
    }
    in.args.push_back(arg);
  }
  if (in.error.empty()) decode(in);
  return in;
}

// What the static checks of a run depend on: each operand's use, C++ type and constraint, a byte
// each (at most 16 operands; more are never taken as checked). Identical asm texts may share one
// string literal, hence one Program, with different operands: each such set is checked once.
struct Signature {
  uint64_t word[2] = {0, 0};
  bool valid = true;
  bool operator==(const Signature&) const = default;
};

Signature signature(const PtxOperand* operands, size_t n) {
  Signature s;
  size_t i = 0;
  for (const PtxOperand& o : std::span(operands, n)) {
    if (i == 16) return {{0, 0}, false};
    const uint64_t byte = uint64_t(o.use) | uint64_t(o.type) << 2 |
                          uint64_t(o.constraint == 'r' ? 1 : o.constraint == 'f' ? 2 : o.constraint == 'l' ? 3 : 0) << 4;
    s.word[i / 8] |= (byte | 0x80) << (8 * (i % 8));
    ++i;
  }
  return s;
}

// One asm statement, parsed, with the operand signatures that have passed every check in a run
// (the checks of use, type and constraint depend on nothing else, so later runs skip them).
struct Program {
  std::vector<Instr> instrs;
  std::vector<Signature> checked;
};

Program& parse(const char* text) {
  thread_local std::unordered_map<const char*, Program> cache;  // per asm statement
  auto it = cache.find(text);
  if (it != cache.end()) return it->second;
  Program prog;
  std::string body = trim(text);
  if (body.size() >= 2 && body.front() == '{' && body.back() == '}')  // a scope for .reg names
    body = body.substr(1, body.size() - 2);
  for (const std::string& s : split_top(body, ';'))
    if (!s.empty()) prog.instrs.push_back(parse_one(s));
  return cache.emplace(text, std::move(prog)).first->second;
}

constexpr unsigned kFull = 0xffffffffu;

// One instruction with the statement's operands.
class Exec {
 public:
  Exec(const Instr& in, const PtxOperand* ops, size_t n, bool checked)
      : in_(in), ops_(ops), n_(n), checked_(checked) {}

  [[noreturn]] void bad(const std::string& why) const {
    const std::string msg = "PTX '" + in_.text + "': " + why;
    fail(msg.c_str());
  }
  const Arg& arg(size_t i, Arg::Kind kind, size_t regs = 1) const {
    static const char* names[] = {"an operand %n", "an immediate", "a vector {...}",
                                  "an address [...]", "a predicate name"};
    if (checked_) return in_.args[i];
    if (i >= in_.args.size()) bad("operand " + std::to_string(i + 1) + " is missing");
    const Arg& a = in_.args[i];
    if (a.kind != kind) bad("operand " + std::to_string(i + 1) + " must be " + names[int(kind)]);
    if (kind != Arg::Kind::Imm && kind != Arg::Kind::Name && a.regs.size() != regs)
      bad("operand " + std::to_string(i + 1) + " must have " + std::to_string(regs) + " registers, not " +
          std::to_string(a.regs.size()));
    return a;
  }
  void arity(size_t lo, size_t hi) const {
    if (!checked_ && (in_.args.size() < lo || in_.args.size() > hi))
      bad(std::to_string(in_.args.size()) + " operands, where it takes " + std::to_string(lo) +
          (lo == hi ? "" : " to " + std::to_string(hi)));
  }

  // Operand %n, whose constraint must be one of `constraints` ("r", "f", "l", or "rl" for a
  // .shared address: a 32- or 64-bit register).
  const PtxOperand& reg(int n, const char* constraints) const {
    if (checked_) return ops_[n];
    if (n < 0 || size_t(n) >= n_) bad("%" + std::to_string(n) + " names no operand (there are " + std::to_string(n_) + ")");
    const PtxOperand& o = ops_[n];
    if (!std::strchr(constraints, o.constraint))
      bad("%" + std::to_string(n) + " has constraint \"" + o.constraint + "\" where the instruction takes \"" +
          constraints + "\"");
    return o;
  }
  uint64_t read(int n, const char* constraint) const {
    const PtxOperand& o = reg(n, constraint);
    if (!checked_ && o.use == PtxOperand::Use::Out)
      bad("reads %" + std::to_string(n) + ", an output-only (\"=\") operand whose value is undefined");
    return o.bits;
  }
  void write_b32(int n, uint32_t v) const { *static_cast<uint32_t*>(writable(n, "r")) = v; }
  void* output(int n, const char* constraint) const { return writable(n, constraint); }
  void write_f32(int n, float v) const { *static_cast<float*>(writable(n, "f")) = v; }
  // A .shared address: a 32-bit ("r") or 64-bit ("l") register, plus the offset.
  unsigned char* shared(const Arg& a, size_t bytes) const {
    const uint64_t addr = read(a.regs[0], "rl") + uint64_t(a.imm);
    if (addr % bytes) bad("a shared address not aligned to " + std::to_string(bytes) + " bytes");
    return shared_pointer(addr, bytes);
  }

 private:
  const Instr& in_;
  const PtxOperand* ops_;
  size_t n_;
  bool checked_;  // the statement's operands passed every check in an earlier run

  void* writable(int n, const char* constraint) const {
    const PtxOperand& o = reg(n, constraint);
    if (!checked_ && o.use == PtxOperand::Use::In) bad("writes %" + std::to_string(n) + ", an input operand");
    return o.ref;
  }
};

// Every lane of the warp in one collective that must be the same instruction (.sync.aligned).
template <class Read>
void aligned_collective(const Exec& x, const Instr& in, const void* mine, size_t bytes, Read&& read) {
  struct Deposit {
    const Instr* in;
    unsigned char data[kMaxDeposit - sizeof(const Instr*)];
  } d{&in, {}};
  if (bytes > sizeof d.data) x.bad("a deposit too large for a warp collective");
  std::memcpy(d.data, mine, bytes);
  warp_collective(kFull, &d, sizeof(const Instr*) + bytes, [&](const Collective& c) {
    for (int l = 0; l < 32; ++l) {
      const Instr* other;
      std::memcpy(&other, c.slot[l], sizeof other);
      if (other != &in)
        x.bad("lane " + std::to_string(l) + " of the warp is in another .sync.aligned instruction");
    }
    read(c, [&](int l) { return c.slot[l] + sizeof(const Instr*); });
  });
}

void ldmatrix(const Exec& x, const Instr& in) {
  x.arity(2, 2);
  const Arg& d = x.arg(0, Arg::Kind::Vec, 4);
  const uint16_t* row = reinterpret_cast<const uint16_t*>(x.shared(x.arg(1, Arg::Kind::Addr), 16));
  smem_race_read(row);
  uint32_t r[4];
  aligned_collective(x, in, &row, sizeof row, [&](const Collective&, auto slot) {
    ptx::ldmatrix_x4(r, lane_id(), in.trans, [&](int l) {
      const uint16_t* p;
      std::memcpy(&p, slot(l), sizeof p);
      return p;
    });
  });
  for (int i = 0; i < 4; ++i) x.write_b32(d.regs[size_t(i)], r[i]);
}

void mma(const Exec& x, const Instr& in) {
  x.arity(4, 4);
  const Arg &d = x.arg(0, Arg::Kind::Vec, 4), &a = x.arg(1, Arg::Kind::Vec, 4),
            &b = x.arg(2, Arg::Kind::Vec, 2), &c = x.arg(3, Arg::Kind::Vec, 4);
  struct Regs {
    uint32_t a[4], b[2];
    float c[4];
  } mine{};
  for (int i = 0; i < 4; ++i) mine.a[i] = uint32_t(x.read(a.regs[size_t(i)], "r"));
  for (int i = 0; i < 2; ++i) mine.b[i] = uint32_t(x.read(b.regs[size_t(i)], "r"));
  for (int i = 0; i < 4; ++i) mine.c[i] = std::bit_cast<float>(uint32_t(x.read(c.regs[size_t(i)], "f")));
  static_assert(sizeof(float[16][8]) <= kScratch);
  float out[4];
  aligned_collective(x, in, &mine, sizeof mine, [&](const Collective& col, auto slot) {
    auto regs = [&](int l) {
      Regs r;
      std::memcpy(&r, slot(l), sizeof r);
      return r;
    };
    auto& D = *static_cast<float(*)[16][8]>(col.scratch);
    if (!*col.scratch_ready) {  // the first lane to read computes the warp's D for all
      Regs all[32];
      for (int l = 0; l < 32; ++l) all[l] = regs(l);
      ptx::mma_bf16_16816_warp(D, [&](int l) { return all[l].a; }, [&](int l) { return all[l].b; },
                               [&](int l) { return all[l].c; });
      *col.scratch_ready = true;
    }
    const int lane = lane_id();
    for (int i = 0; i < 4; ++i) out[i] = D[ptx::c_row(lane, i)][ptx::c_col(lane, i)];
  });
  for (int i = 0; i < 4; ++i) x.write_f32(d.regs[size_t(i)], out[i]);
}

void cp_async(const Exec& x, const Instr& in) {
  using K = Instr::Kind;
  if (in.kind == K::CommitGroup) {
    x.arity(0, 0);
    cp_async_queue().commit();
    return;
  }
  if (in.kind == K::WaitGroup) {
    x.arity(1, 1);
    const int64_t n = x.arg(0, Arg::Kind::Imm).imm;
    if (n < 0) x.bad("a negative group count");
    cp_async_queue().wait_group(int(n), smem_race_waited);
    return;
  }
  if (in.kind == K::WaitAll) {  // = commit_group; wait_group 0
    x.arity(0, 0);
    cp_async_queue().commit();
    cp_async_queue().wait_group(0, smem_race_waited);
    return;
  }
  const bool cg = in.cg;
  x.arity(3, 4);
  const int64_t bytes = x.arg(2, Arg::Kind::Imm).imm;
  if (cg ? bytes != 16 : !(bytes == 4 || bytes == 8 || bytes == 16))
    x.bad("cp-size " + std::to_string(bytes) + " (.cg takes 16; .ca 4, 8 or 16)");
  int64_t src_bytes = bytes;
  if (in.args.size() == 4) {
    const Arg& s = in.args[3];
    if (s.kind == Arg::Kind::Imm) {
      src_bytes = s.imm;
    } else {
      src_bytes = int64_t(uint32_t(x.read(x.arg(3, Arg::Kind::Reg).regs[0], "r")));
    }
    if (src_bytes < 0 || src_bytes > bytes)
      x.bad("src-size " + std::to_string(src_bytes) + " above cp-size " + std::to_string(bytes));
  }
  unsigned char* dst = x.shared(x.arg(0, Arg::Kind::Addr), size_t(bytes));
  const Arg& s = x.arg(1, Arg::Kind::Addr);
  const auto* src = reinterpret_cast<const unsigned char*>(uintptr_t(x.read(s.regs[0], "l"))) + s.imm;
  if (reinterpret_cast<uintptr_t>(src) % uint64_t(bytes))
    x.bad("a global source not aligned to cp-size " + std::to_string(bytes));
  if (src_bytes > 0 && !on_device(src, size_t(src_bytes)))
    x.bad("a global source outside device memory");
  smem_race_copy(dst);
  cp_async_queue().push(dst, src_bytes ? src : nullptr, size_t(src_bytes), size_t(bytes));
}

// The predicates an asm statement declares (".reg .pred p;") and sets ("setp.ne.b32 p, %n, imm;"),
// by name, for the run of that statement.
struct Predicates {
  std::vector<std::pair<std::string, int>> values;  // -1: declared, not yet set
  int* find(const std::string& name) {
    for (auto& [n, v] : values)
      if (n == name) return &v;
    return nullptr;
  }
};

void predicate(const Exec& x, const Instr& in, Predicates& preds) {
  if (in.kind == Instr::Kind::RegPred) {
    x.arity(1, 1);
    const Arg& a = x.arg(0, Arg::Kind::Name, 0);
    if (!preds.find(a.name)) preds.values.emplace_back(a.name, -1);
    return;
  }
  x.arity(3, 3);  // setp.ne.b32 p, %n, imm
  int* p = preds.find(x.arg(0, Arg::Kind::Name, 0).name);
  if (!p) x.bad("sets a predicate the statement did not declare (.reg .pred)");
  const uint32_t v = uint32_t(x.read(x.arg(1, Arg::Kind::Reg).regs[0], "r"));
  *p = v != uint32_t(x.arg(2, Arg::Kind::Imm).imm);
}

// ex2.approx.ftz.f32 d, a (2^a, within the ISA's 2 ulp over the whole range) and
// rcp.approx.ftz.f32 d, a (1 / a, within 1 ulp): subnormal operands and results flushed to zero
// (.ftz). Here the exact value rounded the wrong way (the other float beside it; one ulp from the
// rounded value where that is exact), within both bounds, so that a tolerance that holds only for
// an exact function fails here as it would on a GPU.
void approx(const Exec& x, const Instr& in) {
  x.arity(2, 2);
  const float a = ::emu::flush_subnormal(
      std::bit_cast<float>(uint32_t(x.read(x.arg(1, Arg::Kind::Reg).regs[0], "f"))));
  const double exact = in.kind == Instr::Kind::Ex2 ? std::exp2(double(a)) : 1.0 / double(a);
  float r = ::emu::flush_subnormal(float(exact));
  if (r != 0.0f && std::isfinite(r))
    r = ::emu::flush_subnormal(std::nextafter(r, double(r) <= exact ? INFINITY : -INFINITY));
  x.write_f32(x.arg(0, Arg::Kind::Reg).regs[0], r);
}

// The warp index of the running thread in its warpgroup; an error unless the block is made of
// whole warpgroups (4 consecutive warps, the first at a warp index divisible by 4).
int warp_in_group(const Exec& x) {
  const dim3& b = current->block_dim;
  if ((long long)b.x * b.y * b.z % 128)
    x.bad("a warpgroup instruction in a block of " + std::to_string((long long)b.x * b.y * b.z) +
          " threads, not whole warpgroups of 128");
  return warp_id() % 4;
}

void wgmma(const Exec& x, const Instr& in, Predicates& preds) {
  using K = Instr::Kind;
  const int warp = warp_in_group(x);
  auto bad = [&](const std::string& why) { x.bad(why); };
  auto smem = [&](uint64_t address, size_t bytes) -> const unsigned char* {
    if (address % bytes) x.bad("an operand element at a shared address not aligned to its size");
    return shared_pointer(address, bytes);
  };
  if (in.kind == K::WgFence || in.kind == K::WgCommit) {
    x.arity(0, 0);
    aligned_collective(x, in, &warp, 0, [](const Collective&, auto) {});
    if (in.kind == K::WgCommit) wgmma_queue().commit();
    if (in.kind == K::WgFence) wgmma_queue().fence();
    return;
  }
  if (in.kind == K::WgWait) {
    x.arity(1, 1);
    const int64_t n = x.arg(0, Arg::Kind::Imm).imm;
    if (n < 0) x.bad("a negative group count");
    aligned_collective(x, in, &warp, 0, [](const Collective&, auto) {});
    uint64_t noted = ~uint64_t(0);  // the 16 bytes last passed to the race check
    auto read = [&](uint64_t address, size_t bytes) {
      const unsigned char* p = smem(address, bytes);
      if (address / 16 != noted) smem_race_read(p);
      noted = address / 16;
      return p;
    };
    wgmma_queue().wait_group(int(n), read, bad);
    return;
  }
  // wgmma.mma_async: d, a (a descriptor, or four registers), b-desc, scale-d, imm-scale-a,
  // imm-scale-b[, imm-trans-a], imm-trans-b (imm-trans-a only with A in shared memory).
  const bool a_regs = in.args.size() > 1 && in.args[1].kind == Arg::Kind::Vec;
  x.arity(a_regs ? 7 : 8, a_regs ? 7 : 8);
  ptx::WgmmaQueue::Op op;
  op.n = in.n, op.warp = warp, op.lane = lane_id(), op.text = in.text;
  op.a_in_registers = a_regs;
  const Arg& d = x.arg(0, Arg::Kind::Vec, size_t(in.n / 2));
  uint32_t a[4] = {0, 0, 0, 0};
  if (a_regs) {
    const Arg& av = x.arg(1, Arg::Kind::Vec, 4);
    for (int i = 0; i < 4; ++i) a[i] = uint32_t(x.read(av.regs[size_t(i)], "r"));
  } else {
    op.desc_a = x.read(x.arg(1, Arg::Kind::Reg).regs[0], "l");
  }
  op.desc_b = x.read(x.arg(2, Arg::Kind::Reg).regs[0], "l");
  const int* scale = preds.find(x.arg(3, Arg::Kind::Name, 0).name);
  if (!scale || *scale < 0) x.bad("scale-d is a predicate the statement has not set");
  op.scale_d = *scale == 1;
  const size_t imm0 = 4;
  for (size_t i = imm0; i < in.args.size(); ++i) {
    const int64_t v = x.arg(i, Arg::Kind::Imm).imm;
    if (i < imm0 + 2 ? v != 1 : (v != 0 && v != 1))
      x.bad("operand " + std::to_string(i + 1) + " is " + std::to_string(v) +
            (i < imm0 + 2 ? " (only imm-scale 1 is emulated)" : " (a transpose flag is 0 or 1)"));
  }
  op.trans_a = !a_regs && in.args[6].imm == 1;
  op.trans_b = in.args.back().imm == 1;
  for (int i = 0; i < in.n / 2; ++i) {
    const int r = d.regs[size_t(i)];
    op.d_in.push_back(std::bit_cast<float>(uint32_t(x.read(r, "f"))));
    op.d.push_back(static_cast<float*>(x.output(r, "f")));
  }
  // Every lane of the warp deposits its A registers and both descriptors (which must agree).
  struct Deposit {
    uint32_t a[4];
    uint64_t desc_a, desc_b;
  } mine{{a[0], a[1], a[2], a[3]}, op.desc_a, op.desc_b};
  aligned_collective(x, in, &mine, sizeof mine, [&](const Collective&, auto slot) {
    for (int l = 0; l < 32; ++l) {
      Deposit o;
      std::memcpy(&o, slot(l), sizeof o);
      if (o.desc_a != mine.desc_a || o.desc_b != mine.desc_b)
        x.bad("lane " + std::to_string(l) + " gives other matrix descriptors than lane " +
              std::to_string(lane_id()));
      for (int e = 0; e < 8 && a_regs; ++e)
        op.a[ptx::a_row(l, e)][ptx::a_col(l, e)] = ptx::bf16_half(o.a[e / 2], e % 2);
    }
  });
  wgmma_queue().issue(std::move(op), bad);
}

}  // namespace

void ptx_asm(const char* text, const PtxOperand* ops, size_t n) {
  Program& prog = parse(text);
  const Signature sig = signature(ops, n);
  const bool checked =
      sig.valid && std::find(prog.checked.begin(), prog.checked.end(), sig) != prog.checked.end();
  Predicates preds;
  for (const Instr& in : prog.instrs) {
    const Exec x(in, ops, n, checked);
    if (!in.error.empty()) x.bad(in.error);
    for (size_t i = 0; !checked && i < n; ++i) {
      const PtxOperand& o = ops[i];
      const bool fits = (o.constraint == 'r' && o.type == PtxOperand::Type::B32) ||
                        (o.constraint == 'f' && o.type == PtxOperand::Type::F32) ||
                        (o.constraint == 'l' && o.type == PtxOperand::Type::B64);
      if (!fits)
        x.bad("operand %" + std::to_string(i) + ": constraint \"" + o.constraint +
              "\" does not fit its C++ type (\"r\": 32-bit integer, \"f\": float, \"l\": 64 bits)");
    }
    switch (in.kind) {
      case Instr::Kind::Ldmatrix: ldmatrix(x, in); break;
      case Instr::Kind::Mma: mma(x, in); break;
      case Instr::Kind::RegPred:
      case Instr::Kind::Setp: predicate(x, in, preds); break;
      case Instr::Kind::ProxyFence: x.arity(0, 0); break;  // writes are seen at once here
      case Instr::Kind::WgFence:
      case Instr::Kind::WgCommit:
      case Instr::Kind::WgWait:
      case Instr::Kind::WgMma: wgmma(x, in, preds); break;
      case Instr::Kind::Ex2:
      case Instr::Kind::Rcp:
        approx(x, in);
        break;
      default: cp_async(x, in); break;
    }
  }
  if (!checked && sig.valid) prog.checked.push_back(sig);  // every check of this run passed
}

}  // namespace tessera::emu
