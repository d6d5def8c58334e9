// The pieces of asynchronous checkpointing: the host copy a save takes (it must not share memory
// with the tensors training goes on changing, and must write the file a synchronous save writes),
// and the one-job write thread (its error reaches wait(), failed() polls without blocking, a job
// is never lost).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "checkpoint/async_save.h"
#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "test_util.h"

using namespace tessera;
namespace fs = std::filesystem;
using tessera::testing::TempDir;

namespace {

Tensor filled(const Shape& shape, float start) {
  std::vector<float> v(size_t(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = start + float(i);
  return from_vector(v, shape);
}

void expect_equal(const std::vector<std::pair<std::string, Tensor>>& a,
                  const std::vector<std::pair<std::string, Tensor>>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    ASSERT_EQ(a[i].second.nbytes(), b[i].second.nbytes()) << a[i].first;
    EXPECT_EQ(std::memcmp(a[i].second.data_ptr(), b[i].second.data_ptr(), a[i].second.nbytes()), 0)
        << a[i].first;
  }
}

}  // namespace

TEST(StageOnHost, owns_its_copies_calls_each_source_once_and_saves_the_same_file) {
  TempDir dir("tessera_stage");
  CheckpointData ck;
  Tensor w = filled({3, 4}, 1.0f);
  ck.model = {{"w", w}, {"wt", filled({4, 3}, 7.0f).transpose(0, 1)}};  // a strided view too
  ck.optimizer = {{"w/m", filled({3, 4}, 0.5f)}};
  int calls = 0;
  Tensor gathered = filled({3, 4}, -2.0f);
  ck.optimizer_sources = {{"w/v", [&] {
                             ++calls;
                             return gathered;
                           }}};
  ck.trainer_ints = {{"step", 7}};
  ck.rng["dropout"] = RngState{1, 2};
  ck.config_yaml = "model: {}\n";

  CheckpointData staged = stage_on_host(ck);
  EXPECT_EQ(calls, 1);
  ASSERT_EQ(staged.optimizer.size(), 2u);  // the source's tensor after the plain entries
  EXPECT_EQ(staged.optimizer[1].first, "w/v");
  EXPECT_TRUE(staged.optimizer_sources.empty());
  for (const auto& [name, t] : staged.model) {
    EXPECT_TRUE(t.is_contiguous()) << name;
    EXPECT_NE(t.storage(), w.storage()) << name;
  }

  // What a synchronous save of ck writes now is what the staged copy writes after ck changes.
  save_checkpoint((dir.path / "sync.h5").string(), ck);
  w.copy_(filled({3, 4}, 100.0f));
  gathered.copy_(filled({3, 4}, 100.0f));
  save_checkpoint((dir.path / "staged.h5").string(), staged);
  EXPECT_EQ(calls, 2);  // the synchronous save called the source; the staged save did not
  const CheckpointData a = load_checkpoint((dir.path / "sync.h5").string());
  const CheckpointData b = load_checkpoint((dir.path / "staged.h5").string());
  expect_equal(a.model, b.model);
  expect_equal(a.optimizer, b.optimizer);
  EXPECT_EQ(a.trainer_ints, b.trainer_ints);
  EXPECT_EQ(a.config_yaml, b.config_yaml);
  EXPECT_EQ(b.model[0].second.to_vector<float>()[0], 1.0f);  // not the 100 written after staging
}

TEST(BackgroundWrite, a_job_runs_once_and_its_error_reaches_wait) {
  BackgroundWrite w;
  EXPECT_FALSE(w.pending());
  EXPECT_EQ(w.wait(), "");  // nothing pending: nothing to say

  std::atomic<int> runs{0};
  w.start("ok", [&] { ++runs; });
  EXPECT_TRUE(w.pending());
  EXPECT_EQ(w.wait(), "");
  EXPECT_EQ(runs.load(), 1);
  EXPECT_FALSE(w.pending());
  EXPECT_FALSE(w.failed());

  w.start("step_00000004.h5", [] { TESSERA_FAIL("cannot create step_00000004.h5.tmp"); });
  // failed() turns true once the job has ended, without wait().
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!w.failed() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(w.failed());
  EXPECT_EQ(w.what(), "step_00000004.h5");
  EXPECT_NE(w.wait().find("cannot create step_00000004.h5.tmp"), std::string::npos);
  EXPECT_EQ(w.wait(), "");  // collected once
}

TEST(BackgroundWrite, a_second_job_before_the_first_is_collected_is_refused_and_none_is_lost) {
  std::atomic<bool> release{false}, finished{false};
  {
    BackgroundWrite w;
    w.start("slow", [&] {
      while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      finished = true;
    });
    EXPECT_FALSE(w.failed());  // still running
    const std::string msg = tessera::testing::error_of([&] { w.start("next", [] {}); });
    EXPECT_NE(msg.find("slow"), std::string::npos) << msg;
    EXPECT_TRUE(w.pending());
    release = true;
  }  // the destructor joins the running job
  EXPECT_TRUE(finished.load());
}
