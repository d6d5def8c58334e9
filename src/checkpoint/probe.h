// Reading a checkpoint that has no digest file without risking the process that loads it.
//
//   if (verify_checkpoint_file(path) == FileCheck::NoDigest)  // (verify_checkpoint_file calls it)
//     probe_hdf5_file(path);  // throws, naming the file, if reading its structure crashes or fails
//
// A checkpoint with a digest file is hashed before HDF5 reads it (sidecar.h), so damaged metadata
// never reaches the library. One without (written before tessera recorded digests, or copied
// without its .sha256) cannot be checked that way, and damaged HDF5 metadata can crash the HDF5
// library itself: a segfault while it iterates a group, a double free; no error check catches
// that. So a forked child process reads the whole file first, with HDF5 calls alone: opens it,
// walks every group (by creation order and by name, and looks every link up by path, as the
// loaders do), reads every attribute and each dataset's type, shape and bytes, then _exits. If the
// child dies of a signal, HDF5 reports an error or the child does not finish in time, the file is
// refused with an error naming it, and nothing in this process has touched its metadata; only if
// it read cleanly does the real load follow. Every load of such a file is probed (no memory of
// files that passed: one changed in place within the file system's timestamp granularity would
// look the same).
//
// Fork safety: the child runs nothing but HDF5 and the C library (no MPI, CUDA, OpenMP, iostreams
// or exceptions that escape), reports through a pipe with write(2) and leaves with _exit, so no
// atexit handler, static destructor or stdio buffer of the parent runs in it. HDF5 here is a
// thread-safe build with one global lock; tessera never uses HDF5 from two threads at once, so no
// other thread holds that lock when the loading thread forks. The child dies with the process
// that waits for it (PR_SET_PDEATHSIG): a loader killed mid-probe leaves nothing looping.
#pragma once

#include <cstdint>
#include <string>

namespace tessera {

// timeout_s <= 0: probe_timeout_s of the file's size. A child still reading at the timeout is
// killed and the file refused (damaged metadata can make HDF5 loop for good).
void probe_hdf5_file(const std::string& path, double timeout_s = 0);
// Two minutes, plus a second for every 10 MB: the child reads every byte of the file, and slow
// network file systems manage about that.
double probe_timeout_s(uint64_t file_bytes);

}  // namespace tessera
