// The run's log: lines to the console and to log.txt (main rank only), and
// one JSON object per line of metrics to metrics.jsonl.
#pragma once

#include <fstream>
#include <mutex>
#include <string>

#include "train/config.h"

namespace fg::train {

class Logger {
 public:
  Logger() = default;
  // Opens log.txt and metrics.jsonl in output_dir (appending) when main is true.
  void open(const std::string& output_dir, bool main, const std::string& name);
  void info(const std::string& line);
  void warn(const std::string& line);
  void metrics(const Json& record);
  bool is_main() const { return main_; }

 private:
  void write(const std::string& level, const std::string& line);
  std::mutex mutex_;
  std::ofstream log_, metrics_;
  std::string name_ = "fgmoe";
  bool main_ = true;
};

// "1:02:03" as Python's str(timedelta(seconds=int(s))).
std::string format_duration(double seconds);
// Peak resident memory of this process in MB.
double peak_host_memory_mb();

}  // namespace fg::train
