#include "helpers.h"

#include <stdlib.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "engine/error.h"

extern "C" {
int stbi_write_png_to_func(void (*func)(void*, void*, int), void* context, int w, int h, int comp,
                           const void* data, int stride_in_bytes);
}

#ifndef FGMOE_PYTHON
#define FGMOE_PYTHON "python3"
#endif
#ifndef FGMOE_DATA_TEST_DIR
#define FGMOE_DATA_TEST_DIR "."
#endif

namespace fg::data::testing {

TempDir::TempDir(const std::string& tag) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/fgmoe-" + tag + "-XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  FG_CHECK(::mkdtemp(buffer.data()) != nullptr, "cannot create a temporary folder from ", pattern);
  path_ = buffer.data();
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

void make_dirs(const std::string& path) { std::filesystem::create_directories(path); }

void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  FG_CHECK(f, "cannot write ", path);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  FG_CHECK(f.good(), "cannot write ", path);
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  write_bytes(path, bytes.data(), bytes.size());
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  FG_CHECK(f, "cannot read ", path);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)),
                              std::istreambuf_iterator<char>());
}

InterleavedImage random_image(int width, int height, int channels, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  InterleavedImage img;
  img.reset(width, height, channels);
  // A few smooth waves, a couple of hard-edged rectangles and noise per channel.
  double fx[3], fy[3], phase[3];
  for (int c = 0; c < 3; ++c) {
    fx[c] = 2 + 10 * u(rng);
    fy[c] = 2 + 10 * u(rng);
    phase[c] = 6.28 * u(rng);
  }
  int rx0 = static_cast<int>(u(rng) * width * 0.6), ry0 = static_cast<int>(u(rng) * height * 0.6);
  int rx1 = rx0 + 1 + static_cast<int>(u(rng) * width * 0.4);
  int ry1 = ry0 + 1 + static_cast<int>(u(rng) * height * 0.4);
  std::normal_distribution<double> noise(0.0, 12.0);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < channels; ++c) {
        double v = 128 + 80 * std::sin(fx[c] * x / width * 6.28 + phase[c]) *
                             std::cos(fy[c] * y / height * 6.28);
        if (x >= rx0 && x < rx1 && y >= ry0 && y < ry1) v = (c == 1) ? 230 : 25;
        v += noise(rng);
        img.row(y)[x * channels + c] = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
      }
    }
  }
  return img;
}

std::vector<uint8_t> encode_jpeg(const InterleavedImage& image, const JpegOptions& options) {
  tjhandle handle = tjInitCompress();
  FG_CHECK(handle, "tjInitCompress failed");
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  int pixel_format = image.channels == 1 ? TJPF_GRAY : TJPF_RGB;
  int subsampling = options.grayscale || image.channels == 1 ? TJSAMP_GRAY
                    : options.subsampling == 444             ? TJSAMP_444
                    : options.subsampling == 422             ? TJSAMP_422
                                                             : TJSAMP_420;
  std::vector<uint8_t> gray;
  const uint8_t* pixels = image.pixels.data();
  if (options.grayscale && image.channels == 3) {
    gray.resize(static_cast<size_t>(image.width) * image.height);
    for (size_t i = 0; i < gray.size(); ++i) gray[i] = image.pixels[i * 3 + 1];
    pixels = gray.data();
    pixel_format = TJPF_GRAY;
  }
  const int flags = options.progressive ? TJFLAG_PROGRESSIVE : 0;
  const int rc = tjCompress2(handle, pixels, image.width, 0, image.height, pixel_format, &buffer,
                             &size, subsampling, options.quality, flags);
  FG_CHECK(rc == 0, "tjCompress2: ", tjGetErrorStr2(handle));
  std::vector<uint8_t> out(buffer, buffer + size);
  tjFree(buffer);
  tjDestroy(handle);
  return out;
}

namespace {
void append_bytes(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  out->insert(out->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
}
}  // namespace

std::vector<uint8_t> encode_png(const InterleavedImage& image) {
  std::vector<uint8_t> out;
  FG_CHECK(stbi_write_png_to_func(append_bytes, &out, image.width, image.height, image.channels,
                                  image.pixels.data(), static_cast<int>(image.row_bytes())),
           "PNG encoding failed");
  return out;
}

InterleavedImage turbojpeg_decode_rgb(const std::vector<uint8_t>& jpeg) {
  tjhandle handle = tjInitDecompress();
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  FG_CHECK(tjDecompressHeader3(handle, jpeg.data(), jpeg.size(), &width, &height, &subsampling,
                               &colorspace) == 0,
           "tjDecompressHeader3: ", tjGetErrorStr2(handle));
  InterleavedImage out;
  out.reset(width, height, 3);
  FG_CHECK(tjDecompress2(handle, jpeg.data(), jpeg.size(), out.pixels.data(), width, 0, height,
                         TJPF_RGB, 0) == 0,
           "tjDecompress2: ", tjGetErrorStr2(handle));
  tjDestroy(handle);
  return out;
}

InterleavedImage to_interleaved(const PlanarImage& planar) {
  InterleavedImage out;
  out.reset(planar.width, planar.height, planar.channels);
  for (int c = 0; c < planar.channels; ++c) {
    for (size_t i = 0; i < planar.plane_size(); ++i) {
      out.pixels[i * planar.channels + c] = planar.plane(c)[i];
    }
  }
  return out;
}

PlanarImage to_planar(const InterleavedImage& interleaved) {
  PlanarImage out;
  out.reset(interleaved.width, interleaved.height, interleaved.channels);
  for (int c = 0; c < interleaved.channels; ++c) {
    for (size_t i = 0; i < out.plane_size(); ++i) {
      out.plane(c)[i] = interleaved.pixels[i * interleaved.channels + c];
    }
  }
  return out;
}

int run_python(const std::string& arguments) {
  const std::string command = std::string(FGMOE_PYTHON) + " " + arguments;
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void run_pil_oracle(const nlohmann::json& jobs, const std::string& work_dir) {
  const std::string job_file = work_dir + "/oracle_jobs.json";
  std::ofstream(job_file) << jobs.dump();
  const int rc = run_python(std::string(FGMOE_DATA_TEST_DIR) + "/pil_oracle.py " + job_file);
  FG_CHECK(rc == 0, "the PIL oracle failed (exit ", rc, ")");
}

}  // namespace fg::data::testing
