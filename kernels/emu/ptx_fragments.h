// Where the warp matrix instructions of kernels/flash_mma.h put each element, written down from the
// PTX ISA documentation (NVIDIA, "Parallel Thread Execution ISA"; section numbers differ between
// releases, the names do not), not from any kernel in this repository:
//   * "Matrix Fragments for mma.m16n8k16 with floating point type" (A, B and C/D of .bf16/.f32):
//     groupID = %laneid >> 2, threadID_in_group = %laneid % 4; element i of a thread's fragment
//     lives in register i / 2, low 16 bits for even i ("Elements (low to high)");
//   * "Warp-level matrix load instruction: ldmatrix" (Figure "ldmatrix fragment layout for one 8x8
//     Matrix with 16-bit elements"; .trans = "the matrix is loaded in column-major format").
// Shared by the two emulators that run those bodies on a CPU: tests/kernels/warp_emulator.h (one
// std::thread a lane) and kernels/emu/ptx.cpp (the CUDA emulator's PTX interpreter). A layout bug
// here passes both, so the GPU parity tests remain the final word.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

namespace tessera::ptx {

// mma.m16n8k16: (row, column) of element i of lane `lane`'s A (16x16), B (16x8), C/D (16x8).
inline int a_row(int lane, int i) {
  return (i < 2 || (i >= 4 && i < 6)) ? lane >> 2 : (lane >> 2) + 8;
}
inline int a_col(int lane, int i) { return (lane % 4) * 2 + (i & 1) + (i >= 4 ? 8 : 0); }
inline int b_row(int lane, int i) { return (lane % 4) * 2 + (i & 1) + (i >= 2 ? 8 : 0); }
inline int b_col(int lane, int) { return lane >> 2; }
inline int c_row(int lane, int i) { return (lane >> 2) + (i >= 2 ? 8 : 0); }
inline int c_col(int lane, int i) { return (lane % 4) * 2 + (i & 1); }

inline float bf16_half(uint32_t r, int hi) {  // element hi of a .bf16x2 register
  return std::bit_cast<float>((hi ? r >> 16 : r & 0xffffu) << 16);
}

// ldmatrix.x4: lane l gives the address of row l % 8 of matrix l / 8 (16 bytes); lane `lane`
// receives elements (g, c) and (g, c + 1) of each matrix, g = lane / 4, c = 2 (lane % 4), the lower
// column in the low bits; .trans: stored elements (c, g) and (c + 1, g). row(l) = lane l's address.
template <class Row>
void ldmatrix_x4(uint32_t (&r)[4], int lane, bool trans, Row row) {
  const int g = lane / 4, c = 2 * (lane % 4);
  for (int i = 0; i < 4; ++i) {
    auto at = [&](int rr, int cc) { return uint32_t(row(8 * i + rr)[cc]); };
    r[i] = trans ? (at(c, g) | (at(c + 1, g) << 16)) : (at(g, c) | (at(g, c + 1) << 16));
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: A (16x16) and B (16x8) rebuilt from every
// lane's registers, a(l) the 4 A registers of lane l and b(l) its 2 B registers.
template <class ARegs, class BRegs>
void mma_operands(float (&A)[16][16], float (&B)[16][8], ARegs a, BRegs b) {
  for (int l = 0; l < 32; ++l) {
    const uint32_t* ar = a(l);
    const uint32_t* br = b(l);
    for (int i = 0; i < 8; ++i) A[a_row(l, i)][a_col(l, i)] = bf16_half(ar[i / 2], i % 2);
    for (int i = 0; i < 4; ++i) B[b_row(l, i)][b_col(l, i)] = bf16_half(br[i / 2], i % 2);
  }
}

// One output: c + sum_k A[m][k] B[k][n] accumulated in double and rounded once to f32. The PTX ISA
// leaves accumulation order and rounding unspecified ("at least single precision"), so a GPU may
// differ in the last f32 bits; bf16 products are exact in double.
inline float mma_output(const float (&A)[16][16], const float (&B)[16][8], int m, int n, float c) {
  double acc = c;
  for (int k = 0; k < 16; ++k) acc += double(A[m][k]) * double(B[k][n]);
  return float(acc);
}

// d = A B + d for lane `lane`.
template <class ARegs, class BRegs>
void mma_bf16_16816(float (&d)[4], int lane, ARegs a, BRegs b) {
  float A[16][16], B[16][8];
  mma_operands(A, B, a, b);
  for (int i = 0; i < 4; ++i) d[i] = mma_output(A, B, c_row(lane, i), c_col(lane, i), d[i]);
}

// The whole warp's D (16x8) = A B + C at once, c(l) lane l's 4 accumulators.
template <class ARegs, class BRegs, class CRegs>
void mma_bf16_16816_warp(float (&D)[16][8], ARegs a, BRegs b, CRegs c) {
  float A[16][16], B[16][8];
  mma_operands(A, B, a, b);
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const int m = c_row(l, i), n = c_col(l, i);
      D[m][n] = mma_output(A, B, m, n, c(l)[i]);
    }
}

// One thread's cp.async copies ("Data Movement and Conversion Instructions: cp.async"): each of
// `bytes` bytes, the first `src_bytes` from src and the rest zero-filled (a null source is src-size
// 0). The hardware may complete a copy at any moment from its issue to the first wait that covers
// the group a commit closed it in (cp.async.wait_group n: all but the newest n groups). A copy
// lands at that wait, the latest moment, so a missing commit or wait shows up as data that never
// arrived; or, with `early` set, at its issue, the earliest, so a copy issued into a buffer that
// another thread still reads (a missing barrier before a refill) shows up as that read's data
// changing under it.
class CpAsyncQueue {
 public:
  bool early = false;

  void push(void* dst, const void* src, size_t src_bytes = 16, size_t bytes = 16) {
    Copy c{static_cast<unsigned char*>(dst), src, src ? src_bytes : 0, bytes, -1, early};
    if (early) land(c);
    pending_.push_back(c);  // landed or not, until a wait covers it
  }
  void commit() {  // closes the open group (an empty one too, as the instruction does)
    for (Copy& c : pending_)
      if (c.group < 0) c.group = groups_;
    ++groups_;
  }
  // waited(dst) for each copy the wait covers (SmemRaces::waited).
  template <class Waited>
  void wait_group(int newest_left, Waited&& waited) {
    const int64_t last = groups_ - newest_left;  // groups below this one land
    size_t kept = 0;
    for (const Copy& c : pending_) {
      if (c.group >= 0 && c.group < last) {
        if (!c.landed) land(c);
        waited(static_cast<const void*>(c.dst));
      } else {
        pending_[kept++] = c;
      }
    }
    pending_.resize(kept);
  }
  void wait_group(int newest_left) {
    wait_group(newest_left, [](const void*) {});
  }
  void wait_all() { wait_group(0); }

 private:
  struct Copy {
    unsigned char* dst;
    const void* src;
    size_t src_bytes, bytes;
    int64_t group;  // -1: not yet committed
    bool landed;
  };
  static void land(const Copy& c) {
    if (c.src_bytes) std::memcpy(c.dst, c.src, c.src_bytes);
    std::memset(c.dst + c.src_bytes, 0, c.bytes - c.src_bytes);
  }
  std::vector<Copy> pending_;
  int64_t groups_ = 0;
};

// Shared-memory races between cp.async and the reads an emulator sees (ldmatrix; in the CUDA
// emulator also wgmma's shared operands), whatever order its threads happen to run in: per 16
// bytes of a block's shared memory, the cp.async that last wrote them and the warps that read
// them, in generations of the block's barrier (__syncthreads completions). A race is
//  - a cp.async into bytes another warp read in this generation: the copy may land at its issue,
//    before that read (a stage refilled before the barrier that follows its last reads);
//  - a read of bytes a cp.async wrote, unless its thread waited for the copy and a barrier came
//    after that wait (a tile read before the barrier that publishes it).
// Each call returns "" or what is wrong; plain loads and stores are not seen.
class SmemRaces {
 public:
  void reset(size_t bytes) { chunks_.assign((bytes + 15) / 16, Chunk{}); }
  std::string copy(size_t offset, int thread, int warp, int64_t gen) {
    Chunk& ch = chunks_[offset / 16];
    const uint64_t others = ch.readers & ~bit(warp);
    std::string error;
    if (ch.read == gen && others)
      error = join({"shared-memory race: cp.async into bytes ", range(offset), " that warp ",
                    std::to_string(__builtin_ctzll(others)),
                    " read since the last barrier (the copy may land before that read)"});
    ch.writer = thread;
    ch.waited = -1;
    return error;
  }
  void waited(size_t offset, int thread, int64_t gen) {
    Chunk& ch = chunks_[offset / 16];
    if (ch.writer == thread) ch.waited = gen;
  }
  std::string read(size_t offset, int warp, int64_t gen) {
    Chunk& ch = chunks_[offset / 16];
    std::string error;
    if (ch.writer >= 0 && (ch.waited < 0 || ch.waited >= gen))
      error = join({"shared-memory race: a read of bytes ", range(offset), " that thread ",
                    std::to_string(ch.writer), "'s cp.async wrote with no ",
                    ch.waited < 0 ? "cp.async wait" : "barrier after its wait", " between"});
    if (ch.read != gen) {
      ch.read = gen;
      ch.readers = 0;
    }
    ch.readers |= bit(warp);
    return error;
  }

 private:
  struct Chunk {
    int writer = -1;                 // the thread whose cp.async wrote the bytes last
    int64_t waited = -1, read = -1;  // generations: its wait (-1 before it), the reads'
    uint64_t readers = 0;            // bit w: warp w read them in generation `read`
  };
  static uint64_t bit(int warp) { return uint64_t(1) << warp; }
  static std::string range(size_t offset) {
    return join({"[", std::to_string(offset / 16 * 16), ", +16)"});
  }
  static std::string join(std::initializer_list<std::string> parts) {
    std::string out;
    for (const std::string& p : parts) out += p;
    return out;
  }
  std::vector<Chunk> chunks_;
};

}  // namespace tessera::ptx
