// Errors: user-caused problems throw fg::Error with a message naming the
// offending file, key or shape; internal invariants use FG_ASSERT, which stays
// on in release builds because it is cheap relative to the kernels it guards.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace fg {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
inline void format_into(std::ostringstream&) {}
template <class First, class... Rest>
void format_into(std::ostringstream& os, const First& first, const Rest&... rest) {
  os << first;
  format_into(os, rest...);
}
}  // namespace detail

// Concatenates its arguments with operator<< into one string.
template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::format_into(os, args...);
  return os.str();
}

[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

}  // namespace fg

// FG_CHECK(cond, parts...): throws fg::Error("parts...") when cond is false.
#define FG_CHECK(cond, ...)                                          \
  do {                                                               \
    if (!(cond)) ::fg::throw_error(__FILE__, __LINE__, ::fg::str_cat(__VA_ARGS__)); \
  } while (0)

// FG_ASSERT(cond): an internal invariant; failure is a bug in fgmoe.
#define FG_ASSERT(cond)                                                                    \
  do {                                                                                     \
    if (!(cond))                                                                           \
      ::fg::throw_error(__FILE__, __LINE__, "internal error: assertion failed: " #cond);   \
  } while (0)
