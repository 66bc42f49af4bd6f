// Error type shared by every family. bindings.cpp registers it so that a throw here arrives in
// Python as a ValueError with the message unchanged. Kernels validate before they write.
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>

namespace medseg {

class ValueError : public std::runtime_error {
 public:
  explicit ValueError(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
// Plain string building, no iostreams: a std::ostringstream formatting an integer crashed inside
// this module on one machine (GCC 13, torch's bundled libgomp), while std::to_string does not
// touch locales or stream state.
inline void append(std::string&) {}
template <typename T, typename... Rest>
inline void append(std::string& out, const T& v, const Rest&... rest) {
  if constexpr (std::is_same_v<T, bool>) {
    out += v ? "true" : "false";
  } else if constexpr (std::is_arithmetic_v<T>) {
    out += std::to_string(v);
  } else {
    out += v;  // const char*, char arrays, std::string
  }
  append(out, rest...);
}
}  // namespace detail

// Builds a message from strings and numbers: MEDSEG_CHECK(n > 0, "labels: expected ", n, ...).
template <typename... Args>
[[noreturn]] inline void fail(const Args&... args) {
  std::string msg;
  detail::append(msg, args...);
  throw ValueError(msg);
}

}  // namespace medseg

#define MEDSEG_CHECK(cond, ...)          \
  do {                                   \
    if (!(cond)) ::medseg::fail(__VA_ARGS__); \
  } while (0)
