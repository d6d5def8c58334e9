// The run directory's lock: see run_lock.h.
#include "train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "core/error.h"

namespace tessera::train {

namespace {

// The holder's "host pid" as it wrote it (at most a line; printable characters only).
std::string holder_of(int fd) {
  char buf[256] = {};
  const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  std::string s;
  for (ssize_t i = 0; i < n && buf[i] != '\n'; ++i)
    s += (buf[i] >= 0x20 && buf[i] < 0x7f) ? buf[i] : '?';
  return s.empty() ? "unknown" : s;
}

}  // namespace

RunLock::RunLock(const std::string& run_dir, std::ostream& warn) {
  const std::string path = run_dir + "/train.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  TESSERA_CHECK(fd >= 0, "cannot open ", path, ": ", std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      const std::string holder = holder_of(fd);
      ::close(fd);
      TESSERA_FAIL("run directory ", run_dir, " is in use by another train (host and pid: ",
                   holder, "; lock ", path,
                   "): wait for it to end, or give this run another --run-name");
    }
    ::close(fd);
    warn << "warning: cannot lock " << path << " (" << std::strerror(err)
         << "): nothing stops a second train from writing into " << run_dir << " meanwhile\n";
    return;
  }
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "?");
  const std::string me = std::string(host) + " " + std::to_string(getpid()) + "\n";
  // Best effort: the lock itself is what excludes; the text only names the holder.
  const bool named = ftruncate(fd, 0) == 0 && pwrite(fd, me.data(), me.size(), 0) > 0;
  (void)named;
  fd_ = fd;
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock; the file stays (a later run reuses it)
}

}  // namespace tessera::train
