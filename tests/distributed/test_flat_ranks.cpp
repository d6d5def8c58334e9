// FlatAdamW with Muon's matrices beside AdamW's tensors on every rank count of test_comm's run (1,
// 2 and 4 ranks over MPI; 2 and 4 over NCCL between emulated devices), with and without ZeRO-1,
// against one process given the ranks' mean gradients. Each rank's gradients are small integers,
// so their mean over 1, 2 or 4 ranks (a multiple of 1/4) and every sum of squares are exact, and
// the ranks must end with the one process's bits: parameters and the state checkpoints gather.
// A Muon matrix orthogonalised by two ranks or by none, its result broadcast from the wrong rank
// or applied to the wrong shard, or state loaded at the wrong offset changes bits.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/autograd.h"
#include "core/rng.h"
#include "distributed/comm_under_test.h"
#include "optim/flat.h"
#include "optim/flat_adamw.h"
#include "test_util.h"

namespace tessera::dist {
namespace {

using testing::bytes;

Communicator& comm() { return communicator_under_test(); }

// In the model's order: an embedding, the blocks' matrices (square, tall, wide, short: owners
// spread over up to 4 ranks) between vectors.
const std::vector<std::pair<std::string, Shape>> kShapes = {
    {"wte", {12, 8}},    {"h.q", {8, 8}}, {"h.b", {8}},   {"h.up", {24, 8}},
    {"h.down", {8, 24}}, {"h.ln", {8}},   {"h.o", {4, 8}}};
const std::vector<std::string> kMuon = {"h.q", "h.up", "h.down", "h.o"};

std::vector<NamedParam> model(DType t) {
  Generator g(11);
  std::vector<NamedParam> out;
  for (const auto& [name, shape] : kShapes) {
    Tensor p = randn(shape, g).to(t).to(comm().device());
    p.requires_grad_();
    out.push_back({name, p});
  }
  return out;
}

// Rank r's gradient of element i of parameter k at step t: an integer in [-5, 8].
double grad(int rank, size_t k, int64_t i, int t) {
  return double((int64_t(k) * 13 + i * 7 + rank * 3 + t * 5) % 11) - 5 + rank;
}

// Writes f(k, i) into each parameter's slot of the flat gradient buffer.
void set_grads(FlatParams& flat, const std::vector<NamedParam>& params,
               const std::function<double(size_t, int64_t)>& f) {
  std::map<std::string, size_t> index;
  for (size_t k = 0; k < params.size(); ++k) index[params[k].name] = k;
  const Tensor& all = flat.grads();
  for (const FlatParams::Slot& s : flat.slots()) {
    std::vector<double> v(size_t(s.numel));
    for (int64_t i = 0; i < s.numel; ++i) v[size_t(i)] = f(index.at(s.name), i);
    make_view(all, {s.numel}, {1}, all.offset() + s.offset)
        .copy_(from_vector(v, {s.numel}).to(all.dtype()).to(all.device()));
  }
}

struct Trained {
  std::vector<NamedParam> params;
  std::unique_ptr<FlatParams> flat;
  std::unique_ptr<FlatAdamW> opt;
};

// A FlatAdamW over `c` (this run's ranks, or one process on its own), at the given weights.
Trained make(Communicator& c, const FlatAdamWOptions& o, DType t, int64_t bucket_bytes) {
  Trained r{model(t), nullptr, nullptr};
  r.flat = std::make_unique<FlatParams>(r.params, FlatOptions{.bucket_bytes = bucket_bytes,
                                                              .first_bucket_bytes = bucket_bytes,
                                                              .pad = c.world()});
  r.opt = std::make_unique<FlatAdamW>(*r.flat, c, o);
  return r;
}

// Steps [from, to) of r: on the ranks each its own gradients, alone their mean. Returns the
// gradient norms.
std::vector<double> train(Trained& r, bool mean, int from, int to) {
  const int world = comm().world();
  std::vector<double> norms;
  for (int t = from; t < to; ++t) {
    set_grads(*r.flat, r.params, [&](size_t k, int64_t i) {
      if (!mean) return grad(comm().rank(), k, i, t);
      double sum = 0;
      for (int q = 0; q < world; ++q) sum += grad(q, k, i, t);
      return sum / world;
    });
    norms.push_back(r.opt->step(0.02));
  }
  return norms;
}

std::vector<std::pair<std::string, Tensor>> state_of(FlatAdamW& opt) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const StateTensor& s : opt.state()) out.emplace_back(s.key, s.get().to(Device::cpu()));
  return out;
}

void expect_same_bits(const Trained& got, const Trained& want, const std::string& what) {
  for (size_t k = 0; k < want.params.size(); ++k)
    EXPECT_EQ(bytes(got.params[k].param.to(Device::cpu())),
              bytes(want.params[k].param.to(Device::cpu())))
        << what << ": " << want.params[k].name;
}

TEST(FlatMuonRanks, every_rank_count_with_and_without_zero_gives_one_processs_bits) {
  CommOptions single;
  single.backend = "single";
  single.device = comm().device();
  std::unique_ptr<Communicator> alone = make_communicator(single, LaunchInfo{});
  // All four matrices, h.up orthogonalised as three row blocks (pieces of a shard span blocks
  // stepped at different rates), or one matrix: every rank but its owner then has no Muon work.
  for (const std::vector<std::string>& muon : {kMuon, std::vector<std::string>{"h.o"}})
    for (const DType t : {DType::F32, DType::BF16})
      for (const bool zero : {false, true}) {
        const std::string what = std::string(dtype_name(t)) + (zero ? " zero 1" : " zero 0") +
                                 ", " + std::to_string(muon.size()) + " Muon matrices";
        SCOPED_TRACE(what);
        std::map<std::string, std::vector<int64_t>> blocks;
        if (muon.size() > 1) blocks["h.up"] = {8, 4, 12};
        // Buckets of a few parameters, cut into shards through the matrices; launches of at most
        // 7 elements with ZeRO-1, so ranges split around the matrices too.
        FlatAdamWOptions o;
        o.adam.weight_decay = 0.1;
        o.max_norm = 1.0;
        o.zero = zero;
        if (zero) o.max_range = 7;
        o.muon = muon;
        o.muon_blocks = blocks;
        Trained ranks = make(comm(), o, t, 256), one = make(*alone, o, t, 256);
        EXPECT_EQ(train(ranks, false, 0, 3), train(one, true, 0, 3));
        expect_same_bits(ranks, one, what + ", 3 steps");
        const auto got = state_of(*ranks.opt), want = state_of(*one.opt);
        ASSERT_EQ(got.size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
          EXPECT_EQ(got[i].first, want[i].first);
          EXPECT_EQ(bytes(got[i].second), bytes(want[i].second)) << want[i].first;
        }
        // Each matrix orthogonalised by one rank, its momentum held there alone.
        if (comm().world() > 1 && muon.size() > 1) {
          EXPECT_LT(ranks.opt->state_bytes(), one.opt->state_bytes());
        }

        // The one process's state (as its checkpoint holds it) loaded on the ranks, each its own
        // shards and matrices: two more steps on either side end alike.
        Trained resumed = make(comm(), o, t, 256);
        for (size_t k = 0; k < one.params.size(); ++k)
          resumed.params[k].param.detach().copy_(one.params[k].param);
        resumed.opt->load_state(want, "one.h5");
        resumed.opt->set_step_count(one.opt->step_count());
        EXPECT_EQ(train(resumed, false, 3, 5), train(one, true, 3, 5));
        expect_same_bits(resumed, one, what + ", resumed");
      }
}

// Owners by Newton-Schulz work, the largest first: every matrix has exactly one, and each rank's
// share of the work is within 4/3 of the best split (here the largest matrix's, or the mean).
TEST(FlatMuonRanks, each_matrix_has_one_owner_and_the_work_is_balanced) {
  const int world = comm().world();
  FlatAdamWOptions o;
  o.muon = kMuon;
  Trained r = make(comm(), o, DType::F32, 256);
  const auto owners = r.opt->muon_owners();
  ASSERT_EQ(owners.size(), kMuon.size());
  std::vector<double> load(size_t(world), 0.0);
  double total = 0, largest = 0;
  for (const auto& [name, owner] : owners) {
    ASSERT_GE(owner, 0);
    ASSERT_LT(owner, world);
    for (const auto& [n, shape] : kShapes)
      if (n == name) {
        const double f = newton_schulz_flops(shape[0], shape[1]);
        load[size_t(owner)] += f;
        total += f;
        largest = std::max(largest, f);
      }
  }
  const double best = std::max(largest, total / world);
  for (int q = 0; q < world; ++q) EXPECT_LE(load[size_t(q)], best * 4 / 3) << "rank " << q;
  // Every rank computes the same owners.
  std::vector<double> mine;
  for (const auto& [name, owner] : owners) mine.push_back(owner);
  const std::vector<double> sum = comm().all_reduce_host(mine, ReduceOp::Sum);
  for (size_t i = 0; i < mine.size(); ++i) EXPECT_EQ(sum[i], mine[i] * world) << owners[i].first;
}

}  // namespace
}  // namespace tessera::dist
