// Errors: every failed check throws tessera::Error with the file:line of the check and a message
// that names the offending shape, dtype, key or file.
//
//   TESSERA_CHECK(a.numel() == b.numel(), "add: ", shape_str(a.shape()), " vs ", shape_str(b.shape()));
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tessera {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
[[noreturn]] void fail(const char* file, int line, const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  os << " [" << file << ":" << line << "]";
  throw Error(os.str());
}
}  // namespace detail

}  // namespace tessera

#define TESSERA_CHECK(cond, ...)                                     \
  do {                                                               \
    if (!(cond)) ::tessera::detail::fail(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

#define TESSERA_FAIL(...) ::tessera::detail::fail(__FILE__, __LINE__, __VA_ARGS__)
