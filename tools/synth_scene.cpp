#include "synth_scene.h"

#include <turbojpeg.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "data/sampler.h"
#include "engine/error.h"
#include "engine/philox.h"
#include "engine/random.h"

namespace fg::synth {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int kShapes = 10;
constexpr int kTextures = 5;
const char* kShapeNames[kShapes] = {"disc",  "square",  "triangle", "star",     "ring",
                                    "cross", "diamond", "hexagon",  "crescent", "heart"};
const char* kTextureNames[kTextures] = {"plain", "striped", "checkered", "dotted", "shaded"};

struct Rgb {
  double r, g, b;
};

Rgb hsv(double h, double s, double v) {
  h = h - std::floor(h);
  const double i = std::floor(h * 6), f = h * 6 - i;
  const double p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s);
  switch (static_cast<int>(i) % 6) {
    case 0:
      return {v, t, p};
    case 1:
      return {q, v, p};
    case 2:
      return {p, v, t};
    case 3:
      return {p, q, v};
    case 4:
      return {t, p, v};
    default:
      return {v, p, q};
  }
}

// What identifies a class: fixed per label, independent of the dataset seed so
// that datasets made with different seeds share their classes.
struct ClassLook {
  int shape;
  int texture;
  double hue;
  double texture_frequency;
  double texture_angle;
  double background_hue;  // the spurious cue's hue
  double clutter_angle;   // and its clutter orientation
};

ClassLook class_look(int64_t label) {
  ClassLook c;
  c.shape = static_cast<int>(label % kShapes);
  // Shape and texture pairs are distinct for the first kShapes * kTextures classes.
  c.texture = static_cast<int>((label + label / kShapes) % kTextures);
  const double golden = 0.6180339887498949;
  c.hue = std::fmod(0.05 + golden * static_cast<double>(label), 1.0);
  c.texture_frequency = 3.0 + static_cast<double>((label / (kShapes * kTextures)) % 4) * 2.0;
  c.texture_angle = std::fmod(0.37 * static_cast<double>(label), 1.0) * kPi;
  c.background_hue = std::fmod(0.5 + 0.3819660112501051 * static_cast<double>(label), 1.0);
  c.clutter_angle = std::fmod(0.71 * static_cast<double>(label), 1.0) * kPi;
  return c;
}

// Inside test of the shape in its own frame (u, v in [-1, 1]).
bool inside_shape(int shape, double u, double v) {
  const double r = std::sqrt(u * u + v * v);
  const double a = std::atan2(v, u);
  switch (shape) {
    case 0:
      return r <= 1.0;
    case 1:
      return std::fabs(u) <= 0.85 && std::fabs(v) <= 0.85;
    case 2:
      return v <= 0.8 && v >= -0.9 + 1.7 * std::fabs(u) * 1.15 - 0.0 && std::fabs(u) <= 1.0;
    case 3: {
      const double k = std::cos(5 * a);
      return r <= 0.55 + 0.45 * (0.5 + 0.5 * k);
    }
    case 4:
      return r <= 1.0 && r >= 0.55;
    case 5:
      return (std::fabs(u) <= 0.3 && std::fabs(v) <= 1.0) ||
             (std::fabs(v) <= 0.3 && std::fabs(u) <= 1.0);
    case 6:
      return std::fabs(u) + std::fabs(v) <= 1.0;
    case 7: {
      const double x = std::fabs(u), y = std::fabs(v);
      return y <= 0.87 && 0.5 * y + 0.866 * x <= 0.87;
    }
    case 8:
      return r <= 1.0 && std::hypot(u - 0.45, v - 0.1) >= 0.75;
    default: {
      const double x = u * 1.1, y = -v * 1.1 + 0.3;
      const double t = x * x + y * y - 0.6;
      return t * t * t - x * x * y * y * y <= 0.0;
    }
  }
}

// Texture modulation in [0, 1] at (u, v).
double texture_value(int texture, double frequency, double angle, double u, double v) {
  const double ru = u * std::cos(angle) + v * std::sin(angle);
  const double rv = -u * std::sin(angle) + v * std::cos(angle);
  switch (texture) {
    case 0:
      return 1.0;
    case 1:
      return std::sin(ru * frequency * kPi) > 0 ? 1.0 : 0.35;
    case 2:
      return (std::sin(ru * frequency * kPi) > 0) != (std::sin(rv * frequency * kPi) > 0) ? 1.0
                                                                                          : 0.4;
    case 3: {
      const double fu = ru * frequency * 0.5 - std::floor(ru * frequency * 0.5) - 0.5;
      const double fv = rv * frequency * 0.5 - std::floor(rv * frequency * 0.5) - 0.5;
      return fu * fu + fv * fv < 0.09 ? 0.3 : 1.0;
    }
    default:
      return 0.45 + 0.55 * (0.5 + 0.5 * ru);
  }
}

uint8_t to_byte(double v) { return static_cast<uint8_t>(std::clamp(v * 255.0 + 0.5, 0.0, 255.0)); }

}  // namespace

std::string describe_class(int64_t label) {
  const ClassLook c = class_look(label);
  return std::string(kTextureNames[c.texture]) + " " + kShapeNames[c.shape] + " (hue " +
         std::to_string(static_cast<int>(c.hue * 360)) + ")";
}

void render_scene(const SceneSpec& spec, data::InterleavedImage& rgb, std::vector<uint8_t>& mask) {
  FG_CHECK(spec.width >= 8 && spec.height >= 8, "synthetic images need at least 8x8 pixels");
  const int W = spec.width, H = spec.height;
  Generator rng(spec.seed);
  const ClassLook look = class_look(spec.label);
  rgb.reset(W, H, 3);
  mask.assign(static_cast<size_t>(W) * H, 0);
  std::vector<double> canvas(static_cast<size_t>(W) * H * 3);

  // Background: a two-colour gradient; with the spurious cue both colours come
  // from the class's background hue, otherwise from anywhere.
  auto background_hue = [&]() {
    return spec.spurious_background ? look.background_hue + 0.04 * (rng.uniform() - 0.5)
                                    : rng.uniform();
  };
  const Rgb c0 = hsv(background_hue(), 0.25 + 0.5 * rng.uniform(), 0.35 + 0.5 * rng.uniform());
  const Rgb c1 = hsv(background_hue(), 0.25 + 0.5 * rng.uniform(), 0.35 + 0.5 * rng.uniform());
  const double gradient_angle = rng.uniform() * 2 * kPi;
  const double ga = std::cos(gradient_angle), gb = std::sin(gradient_angle);
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      const double t = 0.5 + 0.5 * ((x / double(W) - 0.5) * ga + (y / double(H) - 0.5) * gb);
      double* p = &canvas[(static_cast<size_t>(y) * W + x) * 3];
      p[0] = c0.r + (c1.r - c0.r) * t;
      p[1] = c0.g + (c1.g - c0.g) * t;
      p[2] = c0.b + (c1.b - c0.b) * t;
    }
  }
  // Clutter: textured ellipses, bars and rectangles (oriented along the class's
  // clutter angle under the spurious cue).
  const int clutter = 10 + static_cast<int>(rng.randint(20));
  for (int k = 0; k < clutter; ++k) {
    const int kind = static_cast<int>(rng.randint(3));
    const double cx = rng.uniform() * W, cy = rng.uniform() * H;
    const double ra = (0.03 + 0.15 * rng.uniform()) * std::min(W, H);
    const double rb =
        kind == 1 ? ra * (0.08 + 0.1 * rng.uniform()) : ra * (0.4 + 0.6 * rng.uniform());
    const double angle = spec.spurious_background ? look.clutter_angle + 0.2 * (rng.uniform() - 0.5)
                                                  : rng.uniform() * kPi;
    const Rgb colour = hsv(background_hue(), 0.2 + 0.6 * rng.uniform(), 0.2 + 0.75 * rng.uniform());
    const int texture = static_cast<int>(rng.randint(kTextures));
    const double frequency = 2 + 6 * rng.uniform();
    const double ca = std::cos(angle), sa = std::sin(angle);
    const double reach = std::max(ra, rb) + 1;
    const int x0 = std::max(0, static_cast<int>(cx - reach)),
              x1 = std::min(W, static_cast<int>(cx + reach) + 1);
    const int y0 = std::max(0, static_cast<int>(cy - reach)),
              y1 = std::min(H, static_cast<int>(cy + reach) + 1);
    for (int y = y0; y < y1; ++y) {
      for (int x = x0; x < x1; ++x) {
        const double dx = x - cx, dy = y - cy;
        const double u = (dx * ca + dy * sa) / ra, v = (-dx * sa + dy * ca) / rb;
        const bool in =
            kind == 0 ? u * u + v * v <= 1.0 : std::fabs(u) <= 1.0 && std::fabs(v) <= 1.0;
        if (!in) continue;
        const double m = texture_value(texture, frequency, 0.0, u, v);
        double* p = &canvas[(static_cast<size_t>(y) * W + x) * 3];
        p[0] = colour.r * m;
        p[1] = colour.g * m;
        p[2] = colour.b * m;
      }
    }
  }
  // The object: the class's shape, texture and colour at a random place, size and angle.
  const double side = (0.3 + 0.35 * rng.uniform()) * std::min(W, H);
  const double radius = side / 2;
  const double ox = radius + rng.uniform() * (W - 2 * radius);
  const double oy = radius + rng.uniform() * (H - 2 * radius);
  const double rotation = rng.uniform() * 2 * kPi;
  const Rgb colour = hsv(look.hue + 0.03 * (rng.uniform() - 0.5), 0.65 + 0.3 * rng.uniform(),
                         0.6 + 0.35 * rng.uniform());
  const double cr = std::cos(rotation), sr = std::sin(rotation);
  // Shapes reach up to sqrt(2) of the radius when rotated.
  const double reach = 1.45 * radius;
  for (int y = std::max(0, static_cast<int>(oy - reach) - 1);
       y < std::min(H, static_cast<int>(oy + reach) + 2); ++y) {
    for (int x = std::max(0, static_cast<int>(ox - reach) - 1);
         x < std::min(W, static_cast<int>(ox + reach) + 2); ++x) {
      const double dx = (x + 0.5 - ox) / radius, dy = (y + 0.5 - oy) / radius;
      const double u = dx * cr + dy * sr, v = -dx * sr + dy * cr;
      if (!inside_shape(look.shape, u, v)) continue;
      const double m =
          texture_value(look.texture, look.texture_frequency, look.texture_angle, u, v);
      double* p = &canvas[(static_cast<size_t>(y) * W + x) * 3];
      p[0] = colour.r * m;
      p[1] = colour.g * m;
      p[2] = colour.b * m;
      mask[static_cast<size_t>(y) * W + x] = 1;
    }
  }
  // Photo-like detail: value noise at cell sizes 32 .. 2 pixels (bilinear),
  // amplitude falling with frequency, added to every channel alike.
  if (spec.detail > 0) {
    std::vector<double> texture(static_cast<size_t>(W) * H, 0.0);
    double amplitude = 1.0, total = 0.0;
    for (int cell = 32; cell >= 2; cell /= 2) {
      const int gw = W / cell + 2, gh = H / cell + 2;
      std::vector<double> grid(static_cast<size_t>(gw) * gh);
      for (double& g : grid) g = rng.uniform() - 0.5;
      for (int y = 0; y < H; ++y) {
        const double gy = double(y) / cell;
        const int y0 = static_cast<int>(gy);
        const double fy = gy - y0;
        for (int x = 0; x < W; ++x) {
          const double gx = double(x) / cell;
          const int x0 = static_cast<int>(gx);
          const double fx = gx - x0;
          const double* g0 = &grid[static_cast<size_t>(y0) * gw + x0];
          const double* g1 = g0 + gw;
          texture[static_cast<size_t>(y) * W + x] +=
              amplitude *
              ((g0[0] * (1 - fx) + g0[1] * fx) * (1 - fy) + (g1[0] * (1 - fx) + g1[1] * fx) * fy);
        }
      }
      total += amplitude;
      amplitude *= 0.8;
    }
    for (size_t i = 0; i < texture.size(); ++i) {
      for (int c = 0; c < 3; ++c) canvas[i * 3 + c] += spec.detail * texture[i] / total * 2;
    }
  }
  // Sensor-like noise (triangular, from two 16-bit halves of a Philox word),
  // so that the JPEGs carry photo-like detail.
  const double noise = spec.noise;
  const uint64_t noise_seed = data::mix_seed({spec.seed, 0x4e4f495345ull});
  for (size_t i = 0; i < canvas.size(); i += 4) {
    const Philox4 r = philox4x32(i / 4, 0, noise_seed);
    for (size_t k = 0; k < 4 && i + k < canvas.size(); ++k) {
      const double t = ((r.v[k] & 0xFFFF) + (r.v[k] >> 16)) / 65535.0 - 1.0;  // [-1, 1]
      rgb.pixels[i + k] = to_byte(canvas[i + k] + noise * t);
    }
  }
}

std::vector<uint8_t> encode_jpeg(const data::InterleavedImage& rgb, int quality) {
  tjhandle handle = tjInitCompress();
  FG_CHECK(handle, "libjpeg-turbo: cannot start the compressor");
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(handle, rgb.pixels.data(), rgb.width, 0, rgb.height, TJPF_RGB, &buffer,
                             &size, TJSAMP_420, quality, 0);
  if (rc != 0) {
    const std::string message = tjGetErrorStr2(handle);
    tjDestroy(handle);
    FG_CHECK(false, "libjpeg-turbo: ", message);
  }
  std::vector<uint8_t> out(buffer, buffer + size);
  tjFree(buffer);
  tjDestroy(handle);
  return out;
}

}  // namespace fg::synth
