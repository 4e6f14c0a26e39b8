// Command-line pieces the tools share: an option's value, an integer option, and
// a text file of class names.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "engine/error.h"

namespace fg::tools {

// The value after the option argv[i] (i moves onto it), or an error naming the option.
inline std::string option_value(int argc, char** argv, int& i) {
  FG_CHECK(i + 1 < argc, "missing value after ", argv[i], " (see --help)");
  return argv[++i];
}

// text as an integer of at least `minimum`, or an error naming the option.
inline int64_t option_integer(const std::string& option, const std::string& text, int64_t minimum) {
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(text.c_str(), &end, 10);
  const std::string wanted = minimum == 0   ? "a non-negative integer"
                             : minimum == 1 ? "a positive integer"
                                            : "an integer of at least " + std::to_string(minimum);
  FG_CHECK(!text.empty() && end && *end == '\0' && errno == 0 && n >= minimum, option, " needs ",
           wanted, ", got '", text, "'");
  return n;
}

// The non-empty lines of a text file (class names, one per line).
inline std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  FG_CHECK(f.good(), "cannot read ", path);
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

}  // namespace fg::tools
