// Checkpoints: one HDF5 file per checkpoint, committed atomically, and a `latest` file naming the
// newest complete one.
//
//   CheckpointData ck;
//   ck.model = model.parameters();                       // (name, tensor) pairs, any device
//   ck.trainer_ints["step"] = 500;  ck.rng["dropout"] = gen.state();  ck.config_yaml = yaml;
//   save_checkpoint(dir + "/step_00000500.h5", ck);      // tmp, fsync, rename, fsync dir
//   write_latest(dir, "step_00000500.h5");
//   load_model_into(resolve_checkpoint(dir), model.parameters());  // weights only, in place
//   CheckpointData back = load_checkpoint(resolve_checkpoint(dir)); // everything, host tensors
//
// File layout:
//   /                      attrs: config (resolved YAML), format = "tessera-checkpoint",
//                                 format_version = 1, metadata_crc32c (below)
//   /model/<param name>    one dataset per parameter, Hugging Face names; dots do not make groups
//                          ("transformer.h.0.ln_1.weight" is one dataset), '/' does
//   /optimizer/<key>       key "<param name>/m" -> dataset /optimizer/<param name>/m (v, master)
//   /trainer               attrs: int64 (step, tokens_seen, micro_step ...) and f64 (lr position,
//                          spike-detector statistics ...); datasets: trainer_tensors (loss window)
//   /rng/<name>            attrs: seed, offset (uint64)
//   /data                  attrs: int64 (epoch, position, seed)
//   /adapter               LoRA checkpoints only: string attrs describing the adapters and the
//                          base they belong to (peft/adapter.h)
// Tensors keep their dtype: f32 -> IEEE F32LE, f64 -> F64LE, i32 -> I32LE, u8 -> U8; bf16 is stored
// as U16LE bits with the dataset attribute dtype = "bf16" (HDF5 has no bfloat16), which numpy/h5py
// users can view as uint16 and shift into float32. 0-d tensors use a scalar dataspace. Every
// dataset has the attribute crc32c (uint64 holding the CRC-32C of its stored bytes).
//
// Crash safety: HDF5 never fsyncs and a crashed
// writer can leave an unreadable file, so a checkpoint is written to "<path>.tmp", closed, fsynced,
// renamed over <path>, and the directory fsynced. An error while writing removes the tmp and leaves
// any existing <path> untouched.
//
// Integrity: every checkpoint has a digest file "<path>.sha256" (SHA-256 and size, in sha256sum's
// format; sidecar.h), committed in the same atomic save just before the checkpoint itself. Every
// loader here (load_checkpoint, load_checkpoint_attributes, load_model_into, CheckpointReader)
// checks the file against it before HDF5 opens it, so damaged metadata never reaches the HDF5
// library, and a mismatch is an error naming the file. Each dataset also carries the CRC-32C of
// its bytes (attribute "crc32c"), checked on every read (read_tensor, read_tensor_into): a
// mismatch names the file and the tensor. The attributes (config, /trainer, /rng, /data,
// /adapter) share one CRC-32C, the root attribute "metadata_crc32c", checked whenever they are
// read. Files written before digests existed have neither: they load, with one warning on stderr
// that they cannot be verified, once a child process has read their whole HDF5 structure without
// crashing (probe.h); a file without HDF5's signature is refused first. A digest file that is
// present but malformed or names another file is an error.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/h5.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace tessera {

// ---- tensors in an open file ----

// Writes t (any device, any strides; copied to the host as a contiguous array) at path, creating
// missing groups, with its CRC-32C in the dataset attribute "crc32c". Writing over an existing
// object is an error.
void write_tensor(H5File& f, const std::string& path, const Tensor& t);
// A new contiguous CPU tensor of the stored dtype and shape. Both reads check the stored CRC-32C
// (when the dataset has one): a mismatch is an error naming the tensor and the file.
Tensor read_tensor(H5File& f, const std::string& path);
// Reads into dst (any device, any strides) in place; the stored shape and dtype must equal dst's,
// else an error naming the path, the file and both shapes / dtypes.
void read_tensor_into(H5File& f, const std::string& path, Tensor& dst);
// The dtype and shape stored at path, without reading the data.
std::pair<DType, Shape> tensor_info(H5File& f, const std::string& path);

// ---- checkpoints ----

// Everything a run needs to resume, filled by the training loop. Tensors may live on any device
// when saving; load_checkpoint returns CPU tensors. Names and keys may contain '/' (a group level)
// but no empty components.
struct CheckpointData {
  std::vector<std::pair<std::string, Tensor>> model;            // /model/<name>
  std::vector<std::pair<std::string, Tensor>> optimizer;        // /optimizer/<key>, key "<name>/m"
  // More optimizer state, produced one tensor at a time while the file is written (a ZeRO shard
  // gathered per parameter, released once written): /optimizer/<key>, after `optimizer`. Loading
  // returns them in `optimizer`.
  std::vector<std::pair<std::string, std::function<Tensor()>>> optimizer_sources;
  std::map<std::string, int64_t> trainer_ints;                  // /trainer attrs
  std::map<std::string, double> trainer_floats;                 // /trainer attrs
  std::vector<std::pair<std::string, Tensor>> trainer_tensors;  // /trainer/<name> (loss window)
  std::map<std::string, RngState> rng;                          // /rng/<name>: seed, offset
  std::map<std::string, int64_t> data;                          // /data attrs: epoch, position..
  std::string config_yaml;                                      // root attribute "config"
  // LoRA checkpoints only (/model then holds the adapters): /adapter string attributes (rank,
  // alpha, targets, base_checkpoint, base_fingerprint ...); empty = a full checkpoint, no group.
  std::map<std::string, std::string> adapter;
};

// Atomic: see the file comment. The directory of path must exist.
void save_checkpoint(const std::string& path, const CheckpointData& ck);
// A save a crash stopped between its two renames (save_checkpoint commits the digest file, then
// the checkpoint) left <name>.tmp complete beside the digest file committed for it, and the file
// <name> (when a step was saved again, as a rollback does) with older bytes that fail that digest.
// Finishes each such rename in dir where the digest file matches the .tmp's bytes; a .tmp it does
// not match is left for the cleanup of interrupted writes. Returns the checkpoints finished. For
// rank 0 under the run's lock, before anything reads the directory's checkpoints.
std::vector<std::string> finish_interrupted_saves(const std::string& dir);
// Reads everything back (vectors in the order they were saved). Every group of the layout must be
// present; a missing one is an error naming it and the file. The file is verified first (see
// Integrity above).
CheckpointData load_checkpoint(const std::string& path);
// The same without any tensor (model, optimizer and trainer tensors stay empty): the config,
// attributes and adapter description, for a caller that reads the weights with load_model_into.
CheckpointData load_checkpoint_attributes(const std::string& path);
// Copies /model into params in place (the tensors keep their storage, device and dtype; values are
// converted to the parameter's dtype if the file's differs, as PyTorch's load_state_dict does).
// Every name and shape is checked before anything is written, so on a missing or extra parameter
// or a shape mismatch the model is left untouched and the error names each offender, the file and
// both shapes. The file is verified first; only in a file without a digest file can a tensor fail
// its checksum after others were copied (the error names it; the model is then partly loaded).
void load_model_into(const std::string& path,
                     const std::vector<std::pair<std::string, Tensor>>& params);
// The same from a checkpoint already read by load_checkpoint (path names it in errors), without
// reading the file again.
void load_model_into(const CheckpointData& ck, const std::string& path,
                     const std::vector<std::pair<std::string, Tensor>>& params);

// A checkpoint verified once and held open: its attributes at once, its weights when asked. For a
// caller that needs both (eval, generate, train --init: the config decides the model the weights
// go into), the file is hashed once rather than once per loader call.
//
//   CheckpointReader r(path);                       // verifies, opens, reads the attributes
//   Config cfg = parse_config(r.attributes().config_yaml, path);
//   r.load_model_into(model.parameters());          // as load_model_into(path, ...)
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& path);
  const std::string& path() const { return path_; }
  // As load_checkpoint_attributes: no tensors (every group of the layout must be present).
  const CheckpointData& attributes() const { return attributes_; }
  // As load_model_into(path, params), from the open file.
  void load_model_into(const std::vector<std::pair<std::string, Tensor>>& params);

 private:
  std::string path_;
  H5File file_;
  CheckpointData attributes_;
};

// ---- the `latest` pointer ----

// Atomically (tmp, fsync, rename, fsync dir) writes <dir>/latest holding one line: filename, a
// path relative to dir (normally just the checkpoint's file name).
void write_latest(const std::string& dir, const std::string& filename);
// A checkpoint file -> itself; a directory -> the file named by its `latest`; a path to a `latest`
// file -> the file it names. Errors name what is missing.
std::string resolve_checkpoint(const std::string& path_or_dir);

}  // namespace tessera
