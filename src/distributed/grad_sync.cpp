// GradSync: see grad_sync.h.
#include "distributed/grad_sync.h"

#include <chrono>

#include "autograd/autograd.h"

namespace tessera::dist {

struct GradSync::Core {
  const FlatParams* flat = nullptr;
  Communicator* comm = nullptr;
  std::vector<bool> shard;  // per bucket: reduce-scatter (else all-reduce)
  bool armed = false;
  std::vector<int64_t> waiting;  // per bucket: parameters not ready yet
  size_t next = 0;               // the next bucket to start
  std::vector<WorkHandle> work;  // started buckets, in order
  double exposed = 0;
  int64_t bytes = 0;

  void start_ready() {
    while (next < waiting.size() && waiting[next] == 0) start(next++);
  }
  void start(size_t b) {
    const FlatRange r = flat->buckets()[b].range;
    Tensor view = flat->grads(r);  // its parameters' zeros filled in where nothing wrote them
    bytes += r.size() * int64_t(dtype_size(view.dtype()));
    work.push_back(shard[b] ? comm->reduce_scatter_async(view, ReduceOp::Average)
                            : comm->all_reduce_async(view, ReduceOp::Average));
  }
  void ready(size_t slot) {
    if (!armed) return;
    const size_t b = flat->slots()[slot].bucket;
    --waiting[b];
    start_ready();
    // Non-blocking collectives of a CPU MPI progress only inside MPI calls: poll the ones in
    // flight while backward goes on.
    for (WorkHandle& w : work) w->test();
  }
  void reset() {
    waiting.assign(flat->buckets().size(), 0);
    for (const FlatParams::Slot& s : flat->slots()) ++waiting[s.bucket];
    next = 0;
  }
};

GradSync::GradSync(const FlatParams& flat, Communicator& comm, bool shard)
    : GradSync(flat, comm, std::vector<bool>(flat.buckets().size(), shard)) {}

GradSync::GradSync(const FlatParams& flat, Communicator& comm, std::vector<bool> shard)
    : core_(std::make_shared<Core>()) {
  TESSERA_CHECK(shard.size() == flat.buckets().size(), "GradSync: ", shard.size(),
                " shard flags for ", flat.buckets().size(), " buckets");
  core_->flat = &flat;
  core_->comm = &comm;
  core_->shard = std::move(shard);
  core_->reset();
  std::weak_ptr<Core> weak = core_;
  for (size_t i = 0; i < flat.slots().size(); ++i)
    register_grad_hook(flat.slots()[i].param, [weak, i](Tensor&) {
      if (auto c = weak.lock()) c->ready(i);
    });
}

void GradSync::arm() {
  core_->reset();
  core_->armed = true;
}

void GradSync::finish() {
  Core& c = *core_;
  if (!c.armed) c.reset();  // finish without arm: everything starts now, in order
  c.armed = false;
  for (size_t b = c.next; b < c.waiting.size(); ++b) c.start(b);
  c.next = c.waiting.size();
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<WorkHandle> work = std::move(c.work);
  c.work.clear();
  for (WorkHandle& w : work) w->wait();
  c.exposed += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<FlatRange> GradSync::owned(const FlatParams& flat, int world, int rank, bool shard) {
  if (!shard || world == 1) return {{0, flat.numel()}};
  std::vector<FlatRange> out;
  for (const FlatParams::Bucket& b : flat.buckets()) {
    const Range r = shard_range(b.range.size(), world, rank);
    if (r.size() > 0) out.push_back({b.range.begin + r.begin, b.range.begin + r.end});
  }
  return out;
}

double GradSync::exposed_seconds() const { return core_->exposed; }
int64_t GradSync::bytes_reduced() const { return core_->bytes; }

}  // namespace tessera::dist
