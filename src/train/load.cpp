#include "train/load.h"

#include "backend/cuda.h"
#include "checkpoint/checkpoint.h"
#include "core/build.h"
#include "peft/adapter.h"
#include "train/device.h"
#include "train/hf_dir.h"
#include "train/options.h"

namespace tessera::train {

LoadedModel load_model(const std::string& checkpoint, const std::string& base) {
  LoadedModel m;
  m.path = resolve_checkpoint(checkpoint);
  // Attributes first: the weights go straight into the model (the reader's load_model_into reads
  // /model only, not the optimizer state a training checkpoint also holds). One reader: the file
  // is verified once.
  CheckpointReader reader(m.path);
  const CheckpointData& ck = reader.attributes();
  m.config = parse_stored_config(ck.config_yaml, m.path + " (stored config)");
  auto step = ck.trainer_ints.find("step");
  m.step = step != ck.trainer_ints.end() ? step->second : 0;
  Generator init(0);  // every weight is overwritten below
  m.model = std::make_unique<nn::GPT>(model_config(m.config), init);
  if (ck.adapter.empty()) {
    TESSERA_CHECK(base.empty(), m.path, " is a full checkpoint: a base (", base,
                  ") is only for LoRA checkpoints");
    reader.load_model_into(m.model->parameters());
    return m;
  }
  auto recorded = ck.adapter.find("base_checkpoint");
  TESSERA_CHECK(!base.empty() || recorded != ck.adapter.end(), "LoRA checkpoint ", m.path,
                " names no base checkpoint: pass one");
  const std::string base_source = base.empty() ? recorded->second : base;
  if (is_hf_source(base_source)) {
    m.base_path = base_source;
    load_hf_into(base_source, m.config.model, m.model->parameters());
  } else {
    try {
      m.base_path = resolve_checkpoint(base_source);
    } catch (const Error& e) {
      if (!base.empty()) throw;
      TESSERA_FAIL("LoRA checkpoint ", m.path, " recorded its base as ", base_source,
                   ", which cannot be opened (", e.what(), "): pass the base with --base");
    }
    CheckpointReader base_reader(m.base_path);
    TESSERA_CHECK(base_reader.attributes().adapter.empty(), "the base ", m.base_path,
                  " of LoRA checkpoint ", m.path, " is itself a LoRA checkpoint: pass the full "
                  "checkpoint the adapters were trained on");
    base_reader.load_model_into(m.model->parameters());
  }
  peft::check_base(ck.adapter, m.path, m.base_path, peft::fingerprint(m.model->parameters()));
  m.lora = std::make_unique<peft::Lora>(*m.model, lora_options(m.config.lora), init);
  reader.load_model_into(m.lora->parameters());
  return m;
}

bool is_hf_source(const std::string& path) { return path.rfind("hf:", 0) == 0; }

void load_hf_into(const std::string& source, const ModelConfig& model,
                  const std::vector<std::pair<std::string, Tensor>>& params) {
  TESSERA_CHECK(is_hf_source(source), source, " does not start with hf:");
  HFModel hf = import_hf(source.substr(3));
  const std::string diff = init_model_difference(hf.config.model, model);
  TESSERA_CHECK(diff.empty(), source, ": config.json describes another model than the config's (",
                diff, ", config.json first)");
  CheckpointData ck;
  ck.model = std::move(hf.params);
  load_model_into(ck, source, params);
}

void add_model_options(cxxopts::Options& options, const std::string& flag) {
  options.add_options()(flag, "checkpoint file, run directory or .../latest",
                        cxxopts::value<std::string>())(
      "base", "LoRA checkpoints: the base (default: the one the adapters recorded)",
      cxxopts::value<std::string>()->default_value(""));
}

LoadedModel load_model(const cxxopts::ParseResult& args, const std::string& flag) {
  TESSERA_CHECK(args.count(flag), "command line: --", flag, " is required");
  return load_model(args[flag].as<std::string>(), args["base"].as<std::string>());
}

void add_device_option(cxxopts::Options& options) {
  options.add_options()("device", "cpu, or cuda (bf16 on cuda:0, as training on cuda runs)",
                        cxxopts::value<std::string>()->default_value("cpu"));
}

void place_loaded(LoadedModel& m, const cxxopts::ParseResult& args) {
  const std::string device = args["device"].as<std::string>();
  TESSERA_CHECK(device == "cpu" || device == "cuda",
                "command line: --device must be cpu or cuda, got '", device, "'");
  if (device == "cpu") return;
  TESSERA_CHECK(built_with::cuda(), "command line: --device cuda, but tessera was built without "
                "CUDA support (reconfigure with nvcc on the PATH, -DTESSERA_CUDA=ON)");
  TESSERA_CHECK(cuda::available(), "command line: --device cuda, but no CUDA device is visible to "
                "this process (cudaGetDeviceCount found none)");
  Config c = m.config;
  c.train.device = "cuda";
  const Placement where = placement(c);
  place_model(*m.model, where.device, where.dtype);
  if (m.lora) m.lora->place(where.device);
}

}  // namespace tessera::train
