// The digest file beside every checkpoint: "<checkpoint>.sha256", checked before HDF5 reads a byte
// of the checkpoint, so a corrupt file (metadata included) is refused with an error naming it
// instead of reaching the HDF5 library, which can crash on damaged metadata.
//
//   step_00000500.h5.sha256:
//     9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  step_00000500.h5
//     # bytes 1493384717
//     # chunk-bytes 67108864
//     # chunk 0 5e0e2bf7a54c111e984f0459b87639a7c02f058baea0747d5840290ba8234f2d
//     # chunk 1 ...                                  (one line per 64 MiB of the file)
//
// The first line is exactly what `sha256sum step_00000500.h5` prints, so `sha256sum -c
// step_00000500.h5.sha256` checks a checkpoint by hand (it skips '#' lines). A file larger than one
// chunk also gets the SHA-256 of each chunk: a loader checks those, the chunks hashed on as many
// threads as OpenMP gives it, rather than hash the whole file on one (1 s per 1.5 GB on this
// project's machines: a GPT-2 124M checkpoint with AdamW's state); the chunks cover every byte, so
// the first line is then left to `sha256sum -c` (a loader does not read the file twice to check a
// digest file's own damage). The size and chunk lines are
// optional: a digest file written by sha256sum itself is accepted, and checked by its first line.
//
//   std::string text = digest_file_text(tmp, "step_00000500.h5");  // hash a file, name it
//   verify_checkpoint_file("run/step_00000500.h5");                // throws on any mismatch
#pragma once

#include <cstdint>
#include <string>

#include "core/error.h"

namespace tessera {

// checkpoint + ".sha256"
std::string digest_path(const std::string& checkpoint);

// The chunk size of digest files: 64 MiB, or more for a file of more than 8192 of them (so a digest
// file stays under 1 MiB).
constexpr uint64_t kDigestChunkBytes = uint64_t(64) << 20;

// The digest file's text for the bytes of `file` as they are now (read in full), naming the file
// `name` (the checkpoint's final name: the bytes hashed may still sit under a temporary one). The
// whole file and its chunks are hashed at once on OpenMP's threads. chunk_bytes: tests set it
// small; 0 picks kDigestChunkBytes (more for a file of over 8192 chunks).
std::string digest_file_text(const std::string& file, const std::string& name,
                             uint64_t chunk_bytes = 0);

enum class FileCheck {
  Verified,  // size and SHA-256 match the digest file
  NoDigest,  // no digest file: written before checkpoints had one; nothing could be checked
};

// The operating system would not let a checkpoint or its digest file be read (permission denied,
// an I/O error): unlike a digest mismatch, nothing says the bytes are damaged, so --resume auto
// stops on it rather than pass over the file (retention.h).
class CheckpointUnreadable : public Error {
 public:
  using Error::Error;
};

// Checks a checkpoint file against its digest file, looked up beside the file it resolves to
// (symbolic links followed). Throws an error naming the file when it is not a regular file, when
// the digest file is malformed or names another file, when the size differs, or when the SHA-256
// differs (of a chunk, naming its bytes, where the digest file has chunk lines: then those are
// checked, not the first line); CheckpointUnreadable when reading either file fails. Without a
// digest file, the file must begin with HDF5's signature (else an error: it is not a checkpoint),
// and its HDF5 structure must read cleanly in a child process (probe.h); it then prints one warning
// per file and process to stderr ("cannot be verified") and returns NoDigest.
FileCheck verify_checkpoint_file(const std::string& path);

// How many times this process has hashed a checkpoint in verify_checkpoint_file: tests take the
// difference around a load to show that it reads the file's bytes for the digest once.
int64_t checkpoint_hashes();

}  // namespace tessera
