// build/bench_comm: the bandwidth of the Communicator's all_reduce (Average, f32, in place) over
// the ranks of a launch, at sizes from 1 KiB to 64 MiB, in NCCL-tests' terms.
//
//   mpirun -np 2 build/bench_comm                                  # CPU ranks: the MPI backend
//   mpirun -np 8 build/bench_comm --device cuda                    # one GPU per rank: NCCL
//   mpirun -np 2 build/bench_comm --min-bytes 3337728 --max-bytes 3337728   # tiny's gradients
//
// A benchmark, not a test. For each size S (min-bytes, doubling while <= max-bytes, then max-bytes
// itself if the doubling missed it): `warmup` all-reduces, a barrier, then `iters` all-reduces
// timed back to back, each waited before the next is issued (as the trainer's blocking collectives
// are; on CUDA, wait() only orders the stream, so the device is synchronised before the clock
// stops). The time per op is the slowest rank's mean: the collective is done when its last rank is.
// (NCCL-tests reports the mean over ranks by default; on an idle machine the two agree.)
//
//   algbw = S / t
//   busbw = algbw * 2 (W - 1) / W
//
// are NCCL-tests' definitions (github.com/NVIDIA/nccl-tests, doc/PERFORMANCE.md, "AllReduce"): a
// ring or tree all-reduce of S bytes makes 2 (W - 1) transfers of S / W bytes per rank, so busbw is
// the per-rank link speed the op achieved, comparable with the hardware's peak and across world
// sizes. One rank moves nothing: its busbw is 0. GB/s are 10^9 bytes per second, as there.
//
// After the timed ops, one more all-reduce of fresh inputs, every element rank + 1 on each rank,
// must give (W + 1) / 2 everywhere: the last column, the counterpart of NCCL-tests' #wrong. MPI's
// result is exact (an integer sum, divided once); NCCL's average may pre-multiply by 1/W, inexact
// unless W is a power of two (about W/2 ulps at worst): hence a 1e-5 relative tolerance (~80 ulps),
// which a wrong average (off by a factor) or a missing rank misses by far.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cxxopts.hpp>
#include <iostream>
#include <memory>
#include <vector>

#include "backend/cuda.h"
#include "config/cli.h"
#include "core/build.h"
#include "core/error.h"
#include "core/tensor.h"
#include "distributed/communicator.h"

using namespace tessera;

namespace {

using Clock = std::chrono::steady_clock;

struct Row {
  int64_t bytes = 0;
  double seconds = 0;   // per op, the slowest rank's mean
  bool correct = true;  // on every rank
};

// Completes the device's queued work (CUDA: NCCL's wait() returns before the collective is done).
void synchronize(Device d) {
  if (d.is_cuda()) cuda::synchronize(d.index);
}

Row measure(dist::Communicator& comm, int64_t bytes, int warmup, int iters) {
  const Device d = comm.device();
  const int64_t n = bytes / int64_t(sizeof(float));
  const Tensor t = full({n}, double(comm.rank() + 1), {DType::F32, d});
  for (int i = 0; i < warmup; ++i) comm.all_reduce(t, dist::ReduceOp::Average);
  synchronize(d);
  comm.barrier();
  const Clock::time_point t0 = Clock::now();
  for (int i = 0; i < iters; ++i) comm.all_reduce(t, dist::ReduceOp::Average);
  synchronize(d);
  const double mine = std::chrono::duration<double>(Clock::now() - t0).count() / iters;

  // The check: one more all-reduce of fresh inputs (the timed ones only repeat the mean).
  const Tensor c = full({n}, double(comm.rank() + 1), {DType::F32, d});
  comm.all_reduce(c, dist::ReduceOp::Average);
  const float expected = float(comm.world() + 1) / 2.0f;
  const std::vector<float> v = c.to_vector<float>();
  const bool ok = std::all_of(v.begin(), v.end(),
                              [&](float x) { return std::fabs(x - expected) <= 1e-5f * expected; });
  // Max of the time and of "wrong" (0 or 1): one host reduction for both.
  const std::vector<double> worst =
      comm.all_reduce_host({mine, ok ? 0.0 : 1.0}, dist::ReduceOp::Max);
  return {.bytes = bytes, .seconds = worst[0], .correct = worst[1] == 0.0};
}

std::vector<int64_t> sizes(int64_t min_bytes, int64_t max_bytes) {
  std::vector<int64_t> s;
  for (int64_t b = min_bytes; b <= max_bytes; b *= 2) s.push_back(b);
  if (s.back() != max_bytes) s.push_back(max_bytes);
  return s;
}

int run(int argc, char** argv, int rank) {
  cxxopts::Options options("bench_comm",
                           "all_reduce (average, f32, in place) time and bandwidth per size");
  // clang-format off
  options.add_options()
      ("device", "where the tensors live: cpu (MPI) or cuda (NCCL, one GPU per rank by local rank)",
       cxxopts::value<std::string>()->default_value("cpu"), "DEV")
      ("backend", "auto | single | mpi | nccl (dist.backend)",
       cxxopts::value<std::string>()->default_value("auto"), "NAME")
      ("min-bytes", "smallest size, a multiple of 4",
       cxxopts::value<int64_t>()->default_value("1024"), "B")
      ("max-bytes", "largest size, a multiple of 4",
       cxxopts::value<int64_t>()->default_value("67108864"), "B")
      ("warmup", "untimed all-reduces per size", cxxopts::value<int>()->default_value("5"), "N")
      ("iters", "timed all-reduces per size", cxxopts::value<int>()->default_value("20"), "N")
      ("init", "NCCL without mpirun: file:///shared/dir (dist.init)",
       cxxopts::value<std::string>()->default_value(""), "URL")
      ("timeout", "seconds a collective may make no progress (dist.timeout)",
       cxxopts::value<double>()->default_value("300"), "S")
      ("h,help", "print this help");
  // clang-format on
  bool help = false;
  const cxxopts::ParseResult args = parse_flags(options, argc, argv, &help);
  if (help) {
    if (rank == 0) std::cout << options.help() << "\n";
    return 0;
  }
  const int64_t min_bytes = args["min-bytes"].as<int64_t>();
  const int64_t max_bytes = args["max-bytes"].as<int64_t>();
  const int warmup = args["warmup"].as<int>(), iters = args["iters"].as<int>();
  TESSERA_CHECK(min_bytes > 0 && min_bytes % 4 == 0 && max_bytes % 4 == 0 && max_bytes >= min_bytes,
                "command line: --min-bytes (", min_bytes, ") and --max-bytes (", max_bytes,
                ") must be positive multiples of 4 (f32 elements), min <= max");
  TESSERA_CHECK(warmup >= 0 && iters > 0, "command line: --warmup must be >= 0 and --iters > 0");
  const std::string device = args["device"].as<std::string>();
  TESSERA_CHECK(device == "cpu" || device == "cuda",
                "command line: --device must be cpu or cuda, got '", device, "'");

  TESSERA_CHECK(device == "cpu" || cuda::available(), "--device cuda, but ",
                built_with::cuda() ? "no CUDA device is visible to this process"
                                   : "tessera was built without CUDA support");

  const dist::LaunchInfo launch = dist::detect_launch();
  std::unique_ptr<dist::Communicator> comm = dist::make_communicator(
      {.backend = args["backend"].as<std::string>(),
       .init = args["init"].as<std::string>(),
       .timeout_s = args["timeout"].as<double>(),
       .device = device == "cuda" ? Device::cuda(launch.local_rank) : Device::cpu()},
      launch);
  const int world = comm->world();
  const double bus_factor = 2.0 * double(world - 1) / double(world);

  if (rank == 0) {
    std::printf(
        "# bench_comm: all_reduce (average, f32, in place), %d rank(s) (%s, launcher %s) "
        "on %s; %d warmup + %d timed ops per size\n",
        world, comm->backend().c_str(), launch.launcher.c_str(), comm->device().str().c_str(),
        warmup, iters);
    std::printf(
        "# time: the slowest rank's mean per op; algbw = bytes / time; "
        "busbw = algbw x 2(W-1)/W = algbw x %.3f (NCCL-tests)\n",
        bus_factor);
    std::printf("#%13s %11s %12s %12s %12s %6s\n", "bytes", "elements", "time_us", "algbw_GB/s",
                "busbw_GB/s", "check");
    std::fflush(stdout);
  }
  bool all_correct = true;
  for (const int64_t bytes : sizes(min_bytes, max_bytes)) {
    const Row r = measure(*comm, bytes, warmup, iters);
    all_correct = all_correct && r.correct;
    const double algbw = double(r.bytes) / r.seconds / 1e9;
    if (rank == 0) {
      std::printf("%14ld %11ld %12.1f %12.3f %12.3f %6s\n", long(r.bytes), long(r.bytes / 4),
                  r.seconds * 1e6, algbw, algbw * bus_factor, r.correct ? "ok" : "WRONG");
      std::fflush(stdout);
    }
  }
  comm.reset();
  return all_correct ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int rank = 0, world = 1;
  try {
    const dist::LaunchInfo launch = dist::detect_launch();
    rank = launch.rank, world = launch.world;
    return run(argc, argv, rank);
  } catch (const std::exception& e) {
    std::cerr << "bench_comm";
    if (world > 1) std::cerr << " (rank " << rank << " of " << world << ")";
    std::cerr << ": " << e.what() << std::endl;
    if (world == 1) return 1;
    // As build/train: no exit handlers (MPI_Finalize would wait for ranks stuck in a collective);
    // the launcher sees the failure and stops the others.
    std::cout.flush();
    _exit(1);
  }
}
