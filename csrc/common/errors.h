// Error type shared by every family. bindings.cpp registers it so that a throw here arrives in
// Python as a ValueError with the message unchanged. Kernels validate before they write.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace medseg {

class ValueError : public std::runtime_error {
 public:
  explicit ValueError(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
inline void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

// Builds a message from any streamable pieces: MEDSEG_CHECK(n > 0, "labels: expected ", n, ...).
template <typename... Args>
[[noreturn]] inline void fail(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  throw ValueError(os.str());
}

}  // namespace medseg

#define MEDSEG_CHECK(cond, ...)          \
  do {                                   \
    if (!(cond)) ::medseg::fail(__VA_ARGS__); \
  } while (0)
