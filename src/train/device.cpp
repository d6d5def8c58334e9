#include "train/device.h"

#include <cstdio>

#include "autograd/autograd.h"
#include "backend/cuda.h"
#include "core/build.h"
#include "core/storage.h"

namespace tessera::train {

Placement placement(const Config& cfg, int local_rank) {
  if (cfg.train.device != "cuda") return {Device::cpu(), DType::F32};
  // Every training mode runs on CUDA (AdamW, LOMO, AdaLomo, LoRA, QLoRA nf4 / nf4-dq). What the
  // config asks for is checked first (the same answer on every machine), then the machine.
  TESSERA_CHECK(cfg.lora.rank == 0 || cfg.lora.trainable.empty(),
                "train.device: 'cuda' with lora.trainable '", cfg.lora.trainable,
                "' is not supported yet: the adapters are f32 on the GPU while the model's own "
                "tensors are bf16, and one AdamW over flat buffers needs one dtype; train them on "
                "the CPU, or drop lora.trainable");
  TESSERA_CHECK(built_with::cuda(),
                "train.device: 'cuda', but tessera was built without CUDA "
                "support (reconfigure with nvcc on the PATH, -DTESSERA_CUDA=ON), or set "
                "train.device: cpu");
  TESSERA_CHECK(cuda::available(),
                "train.device: 'cuda', but no CUDA device is visible to this "
                "process (cudaGetDeviceCount found none); set train.device: cpu");
  // One GPU per process: the launcher's local rank picks it (mpirun, srun and torchrun-style
  // launchers all number the processes of a node from 0), unless the launcher gave each process
  // a GPU of its own (CUDA_VISIBLE_DEVICES, srun --gpus-per-task): then it is cuda:0. The NCCL
  // communicator (kernels/nccl_comm.cu) applies the same rule.
  const int count = cuda::device_count();
  const int index = count == 1 ? 0 : local_rank;
  TESSERA_CHECK(index < count, "train.device: 'cuda' for local rank ", local_rank,
                ", but this process sees ", count,
                " CUDA devices; start at most that many processes per node");
  return {Device::cuda(index), DType::BF16};
}

void place_model(nn::GPT& model, Device device, DType dtype) {
  bool there = true;
  for (const auto& [name, t] : model.parameters())
    there = there && t.device() == device && t.dtype() == dtype;
  if (there) return;
  NoGradGuard no_grad;
  std::vector<Tensor> moved;
  moved.reserve(model.parameters().size());
  for (const auto& [name, t] : model.parameters()) {
    // Convert on the host first: half the bytes cross the bus for bf16.
    Tensor d = t.detach().to(dtype).to(device);
    if (d.impl_ptr() == t.impl_ptr() || d.storage() == t.storage()) d = d.clone();
    if (t.requires_grad()) d.requires_grad_();  // a LoRA base stays frozen
    d.set_name(name);
    moved.push_back(std::move(d));
  }
  model.replace_parameters(moved);
}

Device model_device(const nn::GPT& model) {
  return model.parameters().empty() ? Device::cpu() : model.parameters().front().second.device();
}

std::string device_memory_summary(Device d) {
  const MemoryStats m = memory_stats(d);
  auto mib = [](int64_t b) { return double(b) / double(1 << 20); };
  char buf[256];
  if (!d.is_cuda()) {
    std::snprintf(buf, sizeof buf, "%.1f MiB allocated now, %.1f MiB peak", mib(m.current_bytes),
                  mib(m.peak_bytes));
    return buf;
  }
  const cuda::DeviceMemoryStats c = cuda::device_memory_stats(d.index);
  std::snprintf(buf, sizeof buf,
                "%.1f MiB allocated now, %.1f MiB peak; %.1f MiB reserved (peak %.1f MiB, %.1f MiB "
                "cached), %ld cudaMalloc calls",
                mib(m.current_bytes), mib(m.peak_bytes), mib(c.reserved_bytes),
                mib(c.peak_reserved_bytes), mib(c.cached_bytes), long(c.cuda_malloc_calls));
  return buf;
}

std::string peak_memory_summary(Device d, int64_t held) {
  const int64_t peak = memory_stats(d).peak_bytes;
  auto mib = [](int64_t b) { return double(b) / double(1 << 20); };
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "peak %.2f MiB allocated = %.2f MiB held between steps + %.2f MiB of activations, "
                "gradients and temporaries",
                mib(peak), mib(held), mib(peak - held));
  return buf;
}

std::string gemm_tuning_summary() {
  const cuda::BlasStats b = cuda::blas_stats();
  if (b.tuned_plans + b.tune_skipped == 0) return {};
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "TESSERA_GEMM_TUNE: %ld gemm plans timed, %ld of them kept another algorithm than "
                "the heuristic's first, %ld untimed (no memory for a scratch D); %.0f ms spent "
                "timing",
                long(b.tuned_plans), long(b.tuned_not_first), long(b.tune_skipped), b.tune_ms);
  return buf;
}

}  // namespace tessera::train
