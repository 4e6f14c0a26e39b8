#include "train/logger.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>

namespace fg::train {

void Logger::open(const std::string& output_dir, bool main, const std::string& name) {
  main_ = main;
  name_ = name;
  if (!main) return;
  log_.open(output_dir + "/log.txt", std::ios::app);
  metrics_.open(output_dir + "/metrics.jsonl", std::ios::app);
  FG_CHECK(log_.good() && metrics_.good(), "cannot write the log files in ", output_dir);
}

void Logger::write(const std::string& level, const std::string& line) {
  if (!main_) return;
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  const std::string text = std::string("[") + stamp + " " + name_ + "] " + level + " " + line;
  std::lock_guard<std::mutex> lock(mutex_);
  std::cout << text << std::endl;
  if (log_.is_open()) log_ << text << '\n' << std::flush;
}

void Logger::info(const std::string& line) { write("INFO", line); }
void Logger::warn(const std::string& line) { write("WARNING", line); }

void Logger::metrics(const Json& record) {
  if (!main_ || !metrics_.is_open()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  metrics_ << record.dump() << '\n' << std::flush;
}

std::string format_duration(double seconds) {
  const long total = seconds > 0 ? static_cast<long>(seconds) : 0;
  const long days = total / 86400, h = (total % 86400) / 3600, m = (total % 3600) / 60, s = total % 60;
  char buf[64];
  if (days > 0) std::snprintf(buf, sizeof(buf), "%ld day%s, %ld:%02ld:%02ld", days, days > 1 ? "s" : "", h, m, s);
  else std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", h, m, s);
  return buf;
}

double peak_host_memory_mb() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  double kb = 0;
  while (std::fgets(line, sizeof(line), f)) {
    if (std::sscanf(line, "VmHWM: %lf kB", &kb) == 1) break;
  }
  std::fclose(f);
  return kb / 1024.0;
}

}  // namespace fg::train
