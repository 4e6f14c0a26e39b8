// Shared helpers of the data tests: temporary folders, synthetic images,
// encoders, and the PIL oracle (tests/data/pil_oracle.py under Debian's python).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/image.h"

namespace fg::data::testing {

// A fresh directory under the system's temporary folder, removed on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void make_dirs(const std::string& path);
void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);
void write_bytes(const std::string& path, const uint8_t* data, size_t size);
std::vector<uint8_t> read_bytes(const std::string& path);

// A reproducible image with smooth structure, edges and noise (what resizing
// and JPEG coding act on in photos).
InterleavedImage random_image(int width, int height, int channels, uint64_t seed);

struct JpegOptions {
  int quality = 90;
  bool progressive = false;
  bool grayscale = false;  // encode a single-channel JPEG
  int subsampling = 420;   // 444, 422 or 420
};
std::vector<uint8_t> encode_jpeg(const InterleavedImage& image, const JpegOptions& options = {});
std::vector<uint8_t> encode_png(const InterleavedImage& image);
// libjpeg-turbo's own full decode (TurboJPEG API) to RGB.
InterleavedImage turbojpeg_decode_rgb(const std::vector<uint8_t>& jpeg);

InterleavedImage to_interleaved(const PlanarImage& planar);
PlanarImage to_planar(const InterleavedImage& interleaved);

// Runs pil_oracle.py on the jobs (see the script); returns false when the
// oracle could not run (the test then fails with its output).
void run_pil_oracle(const nlohmann::json& jobs, const std::string& work_dir);
// Runs Debian's python on a script with arguments; returns the exit status.
int run_python(const std::string& arguments);

}  // namespace fg::data::testing
