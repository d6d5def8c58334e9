// The communicator, run as 1, 2 and 4 ranks of one mpirun (tests/CMakeLists.txt: comm.np1/2/4).
// Every rank runs every test and asserts; rank 0 prints gtest's report, the others print only their
// failures, and the exit code is nonzero when any rank failed. Collective tests use the MPI
// backend in a build with MPI (even as one rank), else the single-process one, or NCCL on CUDA
// tensors (TESSERA_TEST_COMM_BACKEND=nccl: comm.nccl.np2/np4 under the CUDA emulator).
//
// Values are exact: every input is a small integer, so every partial sum of up to 4 ranks is an
// integer of magnitude at most 32, exactly representable in bf16 (8 significant bits), f32, f64 and i32, and the
// order MPI adds in cannot matter. Average divides that exact sum once; the expected value is
// computed the same way, in the dtype under test, so results are compared with ==.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/build.h"
#include "distributed/backends.h"
#include "distributed/comm_under_test.h"
#include "distributed/communicator.h"
#include "distributed/grad_sync.h"
#include "optim/flat.h"
#include "test_util.h"
#include "train/rank_agreement.h"

#if __has_include(<mpi.h>)  // on the include path where tessera links MPI
#include <mpi.h>
#define TESSERA_TEST_MPI_H 1
#endif

namespace tessera::dist {
namespace {

using testing::error_of;
using testing::TempDir;
using testing::values;

Communicator* g_comm = nullptr;  // set by main for the whole run
Communicator& comm() { return *g_comm; }
// TESSERA_TEST_COMM_BACKEND=nccl runs the collective tests on CUDA tensors through NCCL (in a CUDA
// emulator build, kernels/emu/nccl.cpp between the processes), the unique id handed over through
// TESSERA_TEST_COMM_INIT (file:///dir) where the build has no MPI; else MPI or single.
std::string main_backend() {
  const char* b = std::getenv("TESSERA_TEST_COMM_BACKEND");
  return b && *b ? b : built_with::mpi() ? "mpi" : "single";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Rank r's input at element i: an integer in [-5, 8].
double input(int rank, int64_t i) { return double((i * 7 + rank * 3) % 11) - 5 + rank; }

// A flat tensor of n elements of dtype with f(i) (u8: f must be in [0, 255]), on the device the
// communicator reduces on.
template <typename F>
Tensor filled(DType dtype, int64_t n, F f) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = f(i);
  return from_vector<double>(v, {n}).to(dtype).to(comm().device());
}

// The reduction over ranks of input(., i), computed as the backend does: an exact sum (or max),
// then one division by world in the dtype (i32 truncates).
double reduced(ReduceOp op, DType dtype, int64_t i) {
  const int world = comm().world();
  double sum = 0, max = input(0, i);
  for (int r = 0; r < world; ++r) {
    sum += input(r, i);
    max = std::max(max, input(r, i));
  }
  if (op == ReduceOp::Sum) return sum;
  if (op == ReduceOp::Max) return max;
  switch (dtype) {
    case DType::F32: return double(float(sum) / float(world));
    case DType::BF16: return double(float(bf16(float(sum) / float(world))));
    case DType::I32: return double(int32_t(sum) / world);
    default: return sum / world;
  }
}

// Compares t[begin, end) with want(i); reports only the first mismatch (sizes reach 10^6).
template <typename F>
void expect_elements(const Tensor& t, int64_t begin, int64_t end, F want, const std::string& what) {
  const std::vector<double> got = values(t);
  for (int64_t i = begin; i < end; ++i) {
    if (got[size_t(i)] != want(i)) {
      ADD_FAILURE() << what << " on rank " << comm().rank() << " of " << comm().world()
                    << ": element " << i << " is " << got[size_t(i)] << ", expected " << want(i);
      return;
    }
  }
}

std::string name(DType d, int64_t n, ReduceOp op) {
  return std::string(dtype_name(d)) + " n=" + std::to_string(n) + " " + reduce_op_name(op);
}

const std::vector<DType> kReduceTypes = {DType::F32, DType::F64, DType::BF16, DType::I32};
const std::vector<ReduceOp> kOps = {ReduceOp::Sum, ReduceOp::Average, ReduceOp::Max};
// 0 and 1: empty and partly empty shards; 7 and 1003: not divisible by 2 or 4 (1000003, large
// and odd, runs for f32 and bf16 only, to keep the 4-rank run short); 1024: divisible by every
// world size, the case NCCL's reduce_scatter and all_gather run in place (kernels/nccl_comm.cu).
const std::vector<int64_t> kSizes = {0, 1, 7, 1003, 1024};

// ---- collectives ---------------------------------------------------------------------------

TEST(Collectives, all_reduce_is_exact_for_every_dtype_op_and_size) {
  for (DType d : kReduceTypes)
    for (int64_t n : kSizes)
      for (ReduceOp op : kOps) {
        Tensor t = filled(d, n, [](int64_t i) { return input(comm().rank(), i); });
        comm().all_reduce(t, op);
        expect_elements(t, 0, n, [&](int64_t i) { return reduced(op, d, i); },
                        "all_reduce " + name(d, n, op));
      }
  for (DType d : {DType::F32, DType::BF16})
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Average}) {
      const int64_t n = 1000003;
      Tensor t = filled(d, n, [](int64_t i) { return input(comm().rank(), i); }).view({1000003, 1});
      comm().all_reduce(t, op);  // any shape: treated as flat
      expect_elements(t, 0, n, [&](int64_t i) { return reduced(op, d, i); },
                      "all_reduce " + name(d, n, op));
    }
}

TEST(Collectives, reduce_scatter_leaves_each_rank_the_reduction_of_its_shard) {
  std::vector<std::pair<DType, int64_t>> cases;
  for (DType d : kReduceTypes)
    for (int64_t n : kSizes) cases.emplace_back(d, n);
  cases.emplace_back(DType::F32, 1000003);
  cases.emplace_back(DType::BF16, 1000003);
  for (auto [d, n] : cases)
    for (ReduceOp op : kOps) {
      Tensor t = filled(d, n, [](int64_t i) { return input(comm().rank(), i); });
      comm().reduce_scatter(t, op);
      const Range mine = shard_range(n, comm().world(), comm().rank());
      expect_elements(t, mine.begin, mine.end, [&](int64_t i) { return reduced(op, d, i); },
                      "reduce_scatter " + name(d, n, op));
    }
}

// GradSync::finish without arm (the path of a step whose backward ran unarmed, or of buckets
// whose parameters got no gradient): every bucket starts then, the first one included, and
// holds the mean over the ranks. Rank r's gradients are r + 1, so the mean is (world + 1) / 2,
// exact in f32 (a half at most).
// Zero f32 vectors of these sizes on the communicator's device, named "p5", "p7", ...
std::vector<NamedParam> vectors(std::initializer_list<int64_t> sizes) {
  std::vector<NamedParam> params;
  for (int64_t n : sizes) {
    std::string name = "p";  // appended: "p" + std::to_string(n) draws g++ 12's false -Wrestrict
    params.push_back({name.append(std::to_string(n)),
                      zeros({n}, {DType::F32, comm().device()}).requires_grad_()});
  }
  return params;
}

// Every gradient of this rank set to rank + 1, then finish(): the buffer as this rank holds it.
std::vector<double> synced(const FlatParams& flat, GradSync& sync) {
  Tensor g = flat.grads();
  g.fill_(double(comm().rank() + 1));
  sync.finish();
  return values(flat.grads().to(Device::cpu()));
}

TEST(GradSyncCheck, finish_without_arm_averages_every_bucket_over_the_ranks) {
  std::vector<NamedParam> params = vectors({5, 7, 3, 4});
  // 8-byte first bucket, 16-byte others: several buckets of a parameter or two.
  FlatParams flat(params, {.bucket_bytes = 16, .first_bucket_bytes = 8, .pad = 1});
  ASSERT_GT(flat.buckets().size(), 2u);
  for (bool shard : {false, true}) {
    SCOPED_TRACE(shard ? "reduce_scatter" : "all_reduce");
    GradSync sync(flat, comm(), shard);
    const std::vector<double> got = synced(flat, sync);
    const double want = double(comm().world() + 1) / 2;
    // Counted, not asserted: every rank goes on to the same collectives whatever it found.
    int64_t wrong = 0, first = -1;
    for (const FlatRange& r : GradSync::owned(flat, comm().world(), comm().rank(), shard))
      for (int64_t i = r.begin; i < r.end; ++i)
        if (got[size_t(i)] != want && wrong++ == 0) first = i;
    EXPECT_EQ(wrong, 0) << "first wrong: element " << first << " = " << got[size_t(first < 0 ? 0 : first)]
                        << " on rank " << comm().rank() << ", want " << want;
  }
}

// Per-bucket flags (ZeRO-1 beside Muon's matrices): a bucket flagged false is all-reduced, whole
// on every rank; one flagged true reduce-scattered, this rank's shard of it averaged.
TEST(GradSyncCheck, each_bucket_is_all_reduced_or_reduce_scattered_as_flagged) {
  std::vector<NamedParam> params = vectors({5, 7, 3, 4, 6});
  FlatParams flat(params, {.bucket_bytes = 16, .first_bucket_bytes = 8, .pad = 1});
  ASSERT_GT(flat.buckets().size(), 2u);
  std::vector<bool> shard;
  for (size_t b = 0; b < flat.buckets().size(); ++b) shard.push_back(b % 2 == 1);
  GradSync sync(flat, comm(), shard);
  const std::vector<double> got = synced(flat, sync);
  const double want = double(comm().world() + 1) / 2;
  int64_t wrong = 0;
  for (size_t b = 0; b < flat.buckets().size(); ++b) {
    const FlatRange r = flat.buckets()[b].range;
    const Range mine =
        shard[b] ? shard_range(r.size(), comm().world(), comm().rank()) : Range{0, r.size()};
    for (int64_t i = r.begin + mine.begin; i < r.begin + mine.end; ++i)
      wrong += got[size_t(i)] != want;
  }
  EXPECT_EQ(wrong, 0) << "rank " << comm().rank();
  EXPECT_NE(error_of([&] {
              GradSync bad(flat, comm(), std::vector<bool>{true});
            }).find("GradSync: 1 shard flags for"),
            std::string::npos);
}

TEST(Collectives, all_gather_assembles_every_ranks_shard) {
  const int world = comm().world();
  for (DType d : {DType::F32, DType::F64, DType::BF16, DType::I32, DType::U8})
    for (int64_t n : {int64_t(0), int64_t(1), int64_t(7), int64_t(1003), int64_t(1024),
                      int64_t(1000003)}) {
      if (n == 1000003 && d != DType::F32) continue;
      const int64_t c = (n + world - 1) / std::max<int64_t>(world, 1);
      auto owner_value = [&](int64_t i) { return double(((i / c) * 5 + i) % 100); };
      const Range mine = shard_range(n, world, comm().rank());
      // Elements outside the shard hold junk that must be overwritten.
      Tensor t = filled(d, n, [&](int64_t i) {
        return i >= mine.begin && i < mine.end ? owner_value(i) : 200.0;
      });
      comm().all_gather(t);
      expect_elements(t, 0, n, owner_value, "all_gather " + std::string(dtype_name(d)) +
                                                 " n=" + std::to_string(n));
    }
}

TEST(Collectives, broadcast_from_the_last_rank_overwrites_every_rank) {
  const int root = comm().world() - 1;  // not rank 0 whenever world > 1
  for (DType d : {DType::F32, DType::F64, DType::BF16, DType::I32, DType::U8})
    for (int64_t n : kSizes) {
      auto of = [](int rank) { return [rank](int64_t i) { return double((i + rank * 13) % 97); }; };
      Tensor t = filled(d, n, of(comm().rank()));
      comm().broadcast(t, root);
      expect_elements(t, 0, n, of(root), "broadcast " + std::string(dtype_name(d)) +
                                             " n=" + std::to_string(n));
    }
}

TEST(Collectives, barrier_and_host_reductions_agree_on_every_rank) {
  comm().barrier();
  const int world = comm().world(), rank = comm().rank();
  const double ranks_sum = world * (world - 1) / 2.0;
  EXPECT_EQ(comm().all_reduce_host({double(rank), 1.0, 0.25}, ReduceOp::Sum),
            (std::vector<double>{ranks_sum, double(world), 0.25 * world}));
  EXPECT_EQ(comm().all_reduce_host({double(rank), 3.0}, ReduceOp::Average),
            (std::vector<double>{ranks_sum / world, 3.0}));
  EXPECT_EQ(comm().all_reduce_host({double(rank), -double(rank)}, ReduceOp::Max),
            (std::vector<double>{double(world - 1), 0.0}));
  EXPECT_TRUE(comm().all_reduce_host({}, ReduceOp::Sum).empty());
  comm().barrier();
}

TEST(Collectives, overlapped_handles_complete_when_waited_in_reverse_order) {
  const int64_t n = 1003;
  Tensor a = filled(DType::F32, n, [](int64_t i) { return input(comm().rank(), i); });
  Tensor b = filled(DType::BF16, n, [](int64_t i) { return input(comm().rank(), i); });
  Tensor c = filled(DType::I32, n, [](int64_t i) { return double(comm().rank() * 1000 + i); });
  WorkHandle wa = comm().all_reduce_async(a, ReduceOp::Average);
  WorkHandle wb = comm().reduce_scatter_async(b, ReduceOp::Sum);
  WorkHandle wc = comm().broadcast_async(c, 0);
  wc->wait();
  wb->wait();
  while (!wa->test()) std::this_thread::yield();
  EXPECT_TRUE(wa->test());  // stays complete
  wa->wait();               // and waiting again is harmless
  expect_elements(a, 0, n, [](int64_t i) { return reduced(ReduceOp::Average, DType::F32, i); },
                  "a");
  const Range mine = shard_range(n, comm().world(), comm().rank());
  expect_elements(b, mine.begin, mine.end,
                  [](int64_t i) { return reduced(ReduceOp::Sum, DType::BF16, i); }, "b");
  expect_elements(c, 0, n, [](int64_t i) { return double(i); }, "c");
}

TEST(Collectives, a_collective_reads_its_tensor_after_the_kernels_that_made_it) {
  // On CUDA the tensor is made by a conversion kernel still running (or queued) on the compute
  // stream when the collective is called (under the emulator its thread takes far longer than the
  // collective stream's delay): NCCL must wait for it (nccl_comm.cu's `ready` event), or it reduces
  // a half-written buffer.
  const int64_t n = 1 << 18;
  Tensor t = filled(DType::F64, n, [](int64_t i) { return input(comm().rank(), i); }).to(DType::F32);
  comm().all_reduce(t, ReduceOp::Sum);
  expect_elements(t, 0, n, [](int64_t i) { return reduced(ReduceOp::Sum, DType::F32, i); }, "t");
}

TEST(Collectives, a_dropped_handle_keeps_its_buffer_and_later_collectives_still_work) {
  {
    Tensor dropped = filled(DType::F32, 1003, [](int64_t i) { return input(comm().rank(), i); });
    WorkHandle w = comm().all_reduce_async(dropped, ReduceOp::Sum);
  }  // handle and tensor gone before completion: the backend keeps the buffer
  Tensor t = filled(DType::F64, 7, [](int64_t i) { return input(comm().rank(), i); });
  comm().all_reduce(t, ReduceOp::Sum);
  comm().barrier();
  expect_elements(t, 0, 7, [](int64_t i) { return reduced(ReduceOp::Sum, DType::F64, i); }, "t");
}

TEST(Collectives, a_handle_that_outlives_its_tensor_keeps_the_buffer_from_reuse) {
  // The tensor goes while its collective may still be running: the handle keeps the buffer, so a
  // tensor of the same size made meanwhile gets other memory (NCCL: the caching allocator would
  // hand it the same block, and the queued all-reduce would read and overwrite it).
  WorkHandle w;
  {
    Tensor dropped = filled(DType::F32, 1003, [](int64_t i) { return input(comm().rank(), i); });
    w = comm().all_reduce_async(dropped, ReduceOp::Sum);
  }
  Tensor other = filled(DType::F32, 1003, [](int64_t i) { return -double(i); });
  w->wait();
  comm().barrier();
  expect_elements(other, 0, 1003, [](int64_t i) { return -double(i); }, "other");
}

TEST(Collectives, bad_arguments_are_errors_naming_the_collective) {
  Tensor strided = zeros({2, 3}).transpose(0, 1);
  EXPECT_TRUE(contains(error_of([&] { comm().all_reduce(strided, ReduceOp::Sum); }),
                       "not contiguous"));
  const std::string u8 = error_of([&] { comm().all_reduce(zeros({3}, DType::U8), ReduceOp::Sum); });
  EXPECT_TRUE(contains(u8, "all_reduce") && contains(u8, "u8")) << u8;
  const std::string root = error_of([&] { comm().broadcast(zeros({3}), comm().world()); });
  EXPECT_TRUE(contains(root, "root")) << root;
}

// A rank that does not join: rank 0's wait() throws after timeout_s (2 s) naming the collective,
// its size and the timeout, then the roll call's answers (1 s at most): the late ranks did not
// answer, and with 3 or more ranks rank 1, waiting in the same all_reduce, says so (its own wait
// times out too, and each answers the other's roll call). The late ranks join after 5 s (margin
// for a loaded CI machine), so the request that stayed in flight completes when the waiting ranks
// wait again, and the run goes on (and ends) normally. A rank that never joins at all means the
// job must end: MPI_Abort, or exit, which then skips MPI_Finalize.
TEST(Collectives, wait_throws_within_the_timeout_naming_the_ranks_that_did_not_join) {
  if (comm().world() < 2) GTEST_SKIP() << "needs 2 ranks";
  // NCCL aborts the communicator on a timeout (kernels/nccl_comm.cu), so waiting again cannot
  // complete the collective: what this test checks is the MPI backend's recovery.
  if (comm().backend() == "nccl") GTEST_SKIP() << "MPI's timeout semantics";
  CommOptions options;
  options.backend = main_backend();
  options.timeout_s = 2;
  auto c = make_communicator(options);
  Tensor t = filled(DType::F32, 5, [](int64_t i) { return input(comm().rank(), i); });
  c->barrier();
  const int world = c->world(), waiting = world >= 3 ? 2 : 1;  // ranks [0, waiting) wait
  std::vector<int> late;
  for (int r = waiting; r < world; ++r) late.push_back(r);
  if (c->rank() < waiting) {
    WorkHandle w = c->all_reduce_async(t, ReduceOp::Sum);
    EXPECT_FALSE(w->test());
    const auto start = std::chrono::steady_clock::now();
    const std::string message = error_of([&] { w->wait(); });
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_GE(took, 2.0);
    EXPECT_LT(took, 4.5);  // before the late ranks arrive at 5 s
    const std::string me = std::to_string(c->rank());
    EXPECT_TRUE(contains(message, "all_reduce (sum) of 5 f32 elements on rank " + me) &&
                contains(message, "timeout_s = 2 s"))
        << message;
    // The barrier was collective #1 on c, this all_reduce is #2.
    EXPECT_TRUE(contains(message, rank_list(late) + " did not answer within 1 s") &&
                contains(message, "Look at " + rank_list(late) + "."))
        << message;
    if (waiting == 2) {
      EXPECT_TRUE(contains(message, "rank " + std::to_string(1 - c->rank()) +
                                        " is waiting in this collective too (#2)"))
          << message;
    }
    if (c->rank() == 0) std::printf("rank 0's timeout error: %s\n", message.c_str());
    bool done = false;
    for (int tries = 0; tries < 3 && !done; ++tries) {
      try {
        w->wait();
        done = true;
      } catch (const Error&) {
      }
    }
    EXPECT_TRUE(done) << "the late ranks never completed the all_reduce";
  } else {
    std::this_thread::sleep_for(std::chrono::seconds(5));
    c->all_reduce(t, ReduceOp::Sum);
  }
  expect_elements(t, 0, 5, [](int64_t i) { return reduced(ReduceOp::Sum, DType::F32, i); }, "t");
  c->barrier();
}

// NCCL has no messages of its own between hosts: where mpirun started the ranks and the id came
// over MPI, that MPI communicator stays as the roll call's side channel, and each rank's watchdog
// answers for it. Rank 0 all-reduces alone; the others issue nothing for 5 s (busy on the host),
// so rank 0's timeout (2 s, then the roll call) names them as ranks that have not issued it.
TEST(Collectives, an_nccl_timeout_names_the_ranks_that_have_not_issued_the_collective) {
  if (comm().backend() != "nccl") GTEST_SKIP() << "NCCL's watchdog";
  // The id goes over MPI, so the ranks must have been started by mpirun (scripts/dp_check.sh
  // starts them as torchrun does, in builds with MPI too).
  const std::string launcher = detect_launch().launcher;
  if (!built_with::mpi() || comm().world() < 2 || (launcher != "mpirun" && launcher != "mpiexec"))
    GTEST_SKIP() << "needs 2 ranks started by mpirun, and MPI";
  CommOptions options;
  options.backend = "nccl";
  options.device = comm().device();
  options.timeout_s = 2;  // init "": the id goes over MPI
  auto c = make_communicator(options, detect_launch());
  if (c->rank() == 0) {
    Tensor t = filled(DType::F32, 5, [](int64_t i) { return input(0, i); });
    WorkHandle w = c->all_reduce_async(t, ReduceOp::Sum);
    const auto start = std::chrono::steady_clock::now();
    std::string message;
    while (message.empty() && std::chrono::steady_clock::now() - start < std::chrono::seconds(30)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      try {
        w->test();
      } catch (const Error& e) {
        message = e.what();
      }
    }
    std::vector<int> others;
    for (int r = 1; r < c->world(); ++r) others.push_back(r);
    EXPECT_TRUE(contains(message, "(collective #1) did not complete within timeout_s = 2 s") &&
                contains(message, "has issued 0 collectives, not this one") &&
                contains(message, "Look at " + rank_list(others) + "."))
        << message;
    std::printf("rank 0's NCCL timeout error: %s\n", message.c_str());
  } else {
    std::this_thread::sleep_for(std::chrono::seconds(5));
  }
}

// A rank that fails holds its communicator in a scope the error unwinds: destroyed then, NCCL's
// communicator is aborted at once (kernels/nccl_comm.cu), not finalised, since a finalize waits for
// every peer to finalise too, which the peers of a failed rank may never do (here rank 1 does, 6 s
// later): the error must reach the user and the process end without waiting for them.
TEST(Collectives, a_communicator_destroyed_while_an_error_unwinds_does_not_wait_for_its_peers) {
  if (comm().world() < 2) GTEST_SKIP() << "needs 2 ranks";
  if (comm().backend() != "nccl") GTEST_SKIP() << "NCCL's finalize";
  CommOptions options;
  options.backend = "nccl";
  options.device = Device::cuda();
  if (const char* init = std::getenv("TESSERA_TEST_COMM_INIT")) options.init = init;
  options.timeout_s = 20;
  comm().barrier();
  if (comm().rank() == 0) {
    const auto start = std::chrono::steady_clock::now();
    const std::string message = error_of([&] {
      auto c = make_communicator(options);
      c->barrier();
      // Rank 1's barrier on c has completed too: the abort below must not be what it waits on
      // (on the emulator's NCCL an abort can drop a collective a slow peer has yet to finish).
      comm().barrier();
      TESSERA_FAIL("a failure on rank 0");
    });
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_TRUE(contains(message, "a failure on rank 0")) << message;
    EXPECT_LT(took, 4.0) << "the communicator waited for its peers while the error unwound";
  } else {
    auto c = make_communicator(options);
    c->barrier();
    comm().barrier();
    std::this_thread::sleep_for(std::chrono::seconds(6));
  }
  comm().barrier();
}

// ---- NCCL's bootstrap, without NCCL ---------------------------------------------------------

std::vector<uint8_t> pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(i * 37 + 11);
  return v;
}

TEST(Bootstrap, a_file_hands_rank0s_bytes_to_every_rank) {
  // One directory for all ranks: rank 0's pid names it.
  Tensor pid = filled(DType::I32, 1, [](int64_t) { return double(::getpid()); });
  comm().broadcast(pid, 0);
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("tessera_comm_" + std::to_string(int(pid.item())));
  if (comm().rank() == 0) std::filesystem::create_directories(dir);
  comm().barrier();
  CommOptions options;
  options.init = "file://" + dir.string();
  options.timeout_s = 30;
  // This launch as the ranks see it (mpirun's job name included, so the file is test_id.<job>).
  const LaunchInfo launch = detect_launch();
  ASSERT_EQ(launch.world, comm().world());
  const std::vector<uint8_t> mine = comm().rank() == 0 ? pattern(128) : std::vector<uint8_t>(128);
  EXPECT_EQ(share_from_rank0(mine, "test_id", options, launch, nullptr), pattern(128));
  comm().barrier();  // everyone has read it
  if (comm().rank() == 0) {
    remove_shared_bytes("test_id", options, launch);
    EXPECT_TRUE(std::filesystem::is_empty(dir));
    std::filesystem::remove_all(dir);
  }
}

TEST(Bootstrap, mpi_hands_rank0s_bytes_to_every_rank) {
  if (comm().backend() == "nccl") GTEST_SKIP() << "the bootstrap is a CPU communicator";
  const LaunchInfo launch{comm().rank(), comm().world(), 0, "mpirun", ""};
  const std::vector<uint8_t> mine = comm().rank() == 0 ? pattern(128) : std::vector<uint8_t>(128);
  EXPECT_EQ(share_from_rank0(mine, "unused", CommOptions{}, launch, &comm()), pattern(128));
}

// Process-local from here on: each rank runs these alone.
TEST(Bootstrap, a_stale_file_of_another_world_or_a_missing_file_is_an_error) {
  TempDir dir("tessera_bootstrap");
  CommOptions options;
  options.init = "file://" + dir.path.string();
  options.timeout_s = 0.2;
  dir.write("id", "tessera-shared v1 world=7 0102\n");
  const std::string stale = error_of([&] {
    share_from_rank0(std::vector<uint8_t>(2), "id", options, {1, 2, 0, "env", ""}, nullptr);
  });
  EXPECT_TRUE(contains(stale, "world=7") && contains(stale, "stale")) << stale;
  const std::string missing = error_of([&] {
    share_from_rank0(std::vector<uint8_t>(2), "absent", options, {1, 2, 0, "env", ""}, nullptr);
  });
  EXPECT_TRUE(contains(missing, "absent") && contains(missing, "0.2 s")) << missing;
  EXPECT_TRUE(contains(error_of([] { init_directory("tcp://host:1234"); }), "file:///"));
}

// A launch whose launcher names it shares its files under names of its own: a stale file of the
// same world size under the plain name (a crashed launch's, or one without a job name) is not
// read, and removing the launch's file leaves it.
TEST(Bootstrap, a_launch_with_a_job_name_reads_only_its_own_file) {
  TempDir dir("tessera_bootstrap_job");
  CommOptions options;
  options.init = "file://" + dir.path.string();
  options.timeout_s = 0.2;
  dir.write("id", "tessera-shared v1 world=2 0102\n");
  const LaunchInfo rank0{0, 2, 0, "srun", "4242.0"}, rank1{1, 2, 0, "srun", "4242.0"};
  const std::string waited = error_of([&] {
    share_from_rank0(std::vector<uint8_t>(2), "id", options, rank1, nullptr);
  });
  EXPECT_TRUE(contains(waited, (dir.path / "id.4242.0").string())) << waited;
  share_from_rank0({7, 9}, "id", options, rank0, nullptr);
  EXPECT_EQ(share_from_rank0(std::vector<uint8_t>(2), "id", options, rank1, nullptr),
            (std::vector<uint8_t>{7, 9}));
  remove_shared_bytes("id", options, rank0);
  EXPECT_FALSE(std::filesystem::exists(dir.path / "id.4242.0"));
  EXPECT_TRUE(std::filesystem::exists(dir.path / "id"));
}

// ---- what the ranks start from -----------------------------------------------------------------

// A rank that resumed another checkpoint than rank 0 (its node's checkpoint.dir held none) stops
// every rank before training: it names the line, the others name it (train/rank_agreement.h).
TEST(RankAgreement, a_rank_that_resumed_another_checkpoint_stops_every_rank) {
  if (comm().world() == 1) GTEST_SKIP() << "needs 2 ranks";
  const Config cfg;
  train::RankData data{{"shards/train_000.bin"}, 3, {}};
  data.resumed = comm().rank() == 1 ? "none" : "step 4, CRC-32C 0123abcd";
  const std::string message = error_of([&] { train::check_ranks_agree(comm(), cfg, data); });
  if (comm().rank() == 1)
    EXPECT_TRUE(contains(message,
                         "rank 1 was started with another config, data or checkpoint "
                         "than rank 0: checkpoint.resumed from is 'none' here"))
        << message;
  else
    EXPECT_TRUE(contains(message,
                         "rank 1 was started with another config, data or checkpoint "
                         "than rank 0 (its error names what differs)"))
        << message;
  data.resumed = "step 4, CRC-32C 0123abcd";  // every rank read the same checkpoint: no error
  EXPECT_NO_THROW(train::check_ranks_agree(comm(), cfg, data));
}

#ifdef TESSERA_TEST_MPI_H
// An error MPI raises on MPI_COMM_WORLD (Open MPI 4.1: a failed MPI_Test of a request) comes back
// as a code that tessera reports, instead of ending the job through the default fatal handler.
TEST(MpiBackend, mpi_comm_world_returns_errors_instead_of_ending_the_job) {
  if (comm().backend() != "mpi") GTEST_SKIP() << "the MPI backend is not the one under test";
  MPI_Errhandler handler = MPI_ERRHANDLER_NULL;
  ASSERT_EQ(MPI_Comm_get_errhandler(MPI_COMM_WORLD, &handler), MPI_SUCCESS);
  EXPECT_TRUE(handler == MPI_ERRORS_RETURN);
}
#endif

// ---- make_communicator ----------------------------------------------------------------------

TEST(MakeCommunicator, single_with_two_ranks_is_an_error_naming_the_launch_variables) {
  CommOptions options;
  options.backend = "single";
  const std::string message = error_of([&] { make_communicator(options, {1, 2, 1, "mpirun", ""}); });
  EXPECT_TRUE(contains(message, "single") && contains(message, "OMPI_COMM_WORLD_SIZE") &&
              contains(message, "2 ranks"))
      << message;
  EXPECT_TRUE(contains(error_of([&] { make_communicator(options, {0, 2, 0, "srun", ""}); }),
                       "SLURM_NTASKS"));
}

TEST(MakeCommunicator, bad_options_are_errors) {
  CommOptions options;
  options.backend = "gloo";
  EXPECT_TRUE(
      contains(error_of([&] { make_communicator(options, {}); }), "unknown backend 'gloo'"));
  options.backend = "auto";
  options.timeout_s = 0;
  EXPECT_TRUE(contains(error_of([&] { make_communicator(options, {}); }), "timeout_s"));
  options.timeout_s = 10;
  options.init = "/shared/dir";
  EXPECT_TRUE(contains(error_of([&] { make_communicator(options, {}); }), "file:///"));
  options.init = "";
  options.backend = "mpi";
  options.device = Device::cuda();
  EXPECT_TRUE(contains(error_of([&] { make_communicator(options, {}); }), "use backend nccl"));
}

TEST(MakeCommunicator, a_backend_missing_from_the_build_names_its_cmake_option) {
  CommOptions options;
  options.backend = "nccl";
  options.device = Device::cuda();
  if (!built_with::nccl()) {
    EXPECT_TRUE(contains(error_of([&] { make_communicator(options, {}); }), "TESSERA_NCCL"));
  } else {
    // Built with NCCL: without MPI or an init file, 2 srun ranks cannot share the unique id.
    const std::string message =
        error_of([&] { make_communicator(options, {0, 2, 0, "srun", ""}); });
    EXPECT_TRUE(contains(message, "file:///")) << message;
  }
  if (!built_with::mpi()) {
    options.backend = "mpi";
    options.device = Device::cpu();
    EXPECT_TRUE(contains(error_of([&] { make_communicator(options, {}); }), "TESSERA_MPI"));
  }
}

TEST(MakeCommunicator, auto_with_one_rank_is_single_and_every_op_is_the_identity) {
  auto c = make_communicator(CommOptions{}, LaunchInfo{});
  EXPECT_EQ(c->backend(), "single");
  EXPECT_EQ(c->world(), 1);
  Tensor t = filled(DType::BF16, 7, [](int64_t i) { return double(i) - 3.5; });
  const std::vector<double> before = values(t);
  for (ReduceOp op : kOps) {
    WorkHandle w = c->all_reduce_async(t, op);
    EXPECT_TRUE(w->test());
    w->wait();
    c->reduce_scatter(t, op);
  }
  c->all_gather(t);
  c->broadcast(t, 0);
  c->barrier();
  EXPECT_EQ(values(t), before);
  EXPECT_EQ(c->all_reduce_host({1.5, -2}, ReduceOp::Average), (std::vector<double>{1.5, -2}));
  EXPECT_TRUE(contains(error_of([&] { c->broadcast(t, 1); }), "root 1"));
}

// Prints a non-zero rank's failures (its gtest report is silenced) with the rank in front.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  // The name is kept here: gtest holds its lock while reporting a result, so asking it for the
  // current test from OnTestPartResult would deadlock.
  void OnTestStart(const ::testing::TestInfo& info) override {
    test_ = std::string(info.test_suite_name()) + "." + info.name();
  }
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s failed at %s:%d\n%s\n", rank_, test_.c_str(),
                 r.file_name() ? r.file_name() : "?", r.line_number(), r.message());
  }

 private:
  int rank_;
  std::string test_;
};

}  // namespace

Communicator& communicator_under_test() { return comm(); }

}  // namespace tessera::dist

int main(int argc, char** argv) {
  using namespace tessera::dist;
  ::testing::InitGoogleTest(&argc, argv);
  CommOptions options;
  options.backend = main_backend();
  if (options.backend == "nccl") options.device = tessera::Device::cuda();
  if (const char* init = std::getenv("TESSERA_TEST_COMM_INIT")) options.init = init;
  // Short enough that a rank stuck in a mismatched collective fails its test well inside ctest's
  // 120 s, long enough for a 10^6-element bf16 reduction on an oversubscribed machine.
  options.timeout_s = 30;
  std::unique_ptr<Communicator> comm;
  try {  // no device, a bad launch: the reason and exit 1, not an abort
    comm = make_communicator(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_comm: no %s communicator: %s\n", options.backend.c_str(), e.what());
    return 1;
  }
  g_comm = comm.get();
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (comm->rank() != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(comm->rank()));
  }
  const bool failed = RUN_ALL_TESTS() != 0;
  const double failed_ranks = comm->all_reduce_host({failed ? 1.0 : 0.0}, ReduceOp::Sum)[0];
  if (comm->rank() == 0 && failed_ranks > 0)
    std::fprintf(stderr, "[comm] %g of %d ranks failed\n", failed_ranks, comm->world());
  g_comm = nullptr;
  comm.reset();
  return failed_ranks > 0 ? 1 : 0;
}
