// Reading a checkpoint's HDF5 structure without risking the process that loads it.
//
//   verify_checkpoint_file(path);  // the digest; a file without one is probed here already
//   probe_hdf5_file(path, 0, /*digest_matched=*/true);  // throws, naming the file, if reading
//                                                       // its structure crashes or fails
//
// Damaged HDF5 metadata can crash the HDF5 library itself: a segfault while it iterates a group, a
// double free in its cleanup after it reported "incorrect metadata checksum"; no error check
// catches that. A digest file (sidecar.h) refuses damage done after tessera wrote it, but not a
// digest file rewritten after the damage (docs/checkpoints.md tells users to rewrite one with
// sha256sum after renaming a checkpoint), and a checkpoint without one (written before tessera
// recorded digests, or copied without its .sha256) cannot be checked that way at all. So before
// every load a forked child process reads the whole file first, with HDF5 calls alone: opens it,
// walks every group (by creation order and by name, and looks every link up by path, as the loaders
// do), reads every attribute and each dataset's type, shape and bytes, then _exits. Of a contiguous
// dataset (how tessera stores every tensor) it reads the first and the last element: between them
// lie bytes, not metadata, and reading them is one bounds-checked run whose two ends the child has
// read; chunked, compact and external storage is read whole (1.5 GB less for the child to read
// in a GPT-2 124M checkpoint with AdamW's state). If the child crashes,
// HDF5 reports an error or the child spins past its CPU time limit (HDF5 loops on some damage),
// the file is refused as damaged, with an error naming it, and nothing in this process has touched
// its metadata; only if it read cleanly does the real load follow. A child that waits past a
// wall-clock deadline (a stalled file system, a suspended job) or is killed by someone else (the
// OOM killer) says nothing about the file: that is CheckpointUnreadable (sidecar.h), on which a
// resume or a rollback stops instead of passing over the file. The child ignores the stop signals
// (SIGINT, SIGTERM, ...), which are the parent's to act on. Every load is probed (no memory of
// files that passed: one changed in place within the file system's timestamp granularity would look
// the same).
//
// Fork safety: the child runs nothing but HDF5 and the C library (no MPI, CUDA, OpenMP, iostreams
// or exceptions that escape), reports through a pipe with write(2) and leaves with _exit, so no
// atexit handler, static destructor or stdio buffer of the parent runs in it. HDF5 here is a
// thread-safe build with one global lock; tessera never uses HDF5 from two threads at once, so no
// other thread holds that lock when the loading thread forks. The child dies with the process
// that waits for it (PR_SET_PDEATHSIG): a loader killed mid-probe leaves nothing looping. Memory
// an InfiniBand adapter has pinned (MPI's or NCCL's IB transports) is safe across the fork on Linux
// 5.13 and later; older kernels need RDMAV_FORK_SAFE=1 (docs/distributed.md).
#pragma once

#include <cstdint>
#include <string>

namespace tessera {

// timeout_s <= 0: probe_timeout_s of the file's size. A child that has used timeout_s seconds of
// CPU is ended and the file refused as damaged (damaged metadata can make HDF5 loop for good); one
// still reading after 4 x timeout_s of wall time is killed and the file reported unreadable. digest_matched: the
// file was just verified against its digest file (the error then says so, rather than that it has
// none).
void probe_hdf5_file(const std::string& path, double timeout_s = 0, bool digest_matched = false);
// Two minutes, plus a second for every 10 MB: the child may read every byte of the file (of
// chunked datasets, written by another tool), and slow network file systems manage about that.
double probe_timeout_s(uint64_t file_bytes);

}  // namespace tessera
