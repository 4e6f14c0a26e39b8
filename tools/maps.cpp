// fgmoe-maps: draws where a trained Soft MoE model routes the patches of an
// image, layer by layer, and how well that lines up with the foreground mask.
//
// Definitions (D is a Soft MoE layer's dispatch weights, (m tokens, n experts,
// p slots per expert), softmax over the tokens for every slot; C its combine
// weights, softmax over the n*p slots for every token):
//   mean dispatch map  a[t] = mean over all n*p slots of D[t, :, :], per token t,
//                      on the patch grid (row-major). It sums to 1 over the
//                      tokens; it is what the paper draws and what the
//                      foreground-guided loss and q are computed on.
//   expert map         e_j[t] = mean over expert j's p slots of D[t, j, :]
//                      (also sums to 1 over the tokens).
//   expert use         u_j = sum over tokens t and j's slots of C[t, j, :], / m:
//                      the share of the layer's output that expert j produces.
//                      (Every expert's dispatch mass is p by construction, so
//                      dispatch mass cannot rank experts; combine mass can.)
//                      The k experts with the largest use are drawn.
//   peak               max_t map[t] * m: the largest weight in units of the
//                      uniform weight 1/m.
//   q, IoU             the soft IoU of the auxiliary loss and the binary IoU
//                      between {t : a[t] >= mean a} and the foreground tokens
//                      (models/alignment.h), when the image has a mask.
// Every map is scaled to its own maximum (0 .. peak -> colour scale 0 .. max),
// upsampled bilinearly (pixel centres) from the patch grid to the panel and
// blended over the model's input crop.
//
// Figure layout, per image (all sizes in pixels; P = --panel, f = 2 when
// P >= 160 else 1 is the font scale, line = 9f, M = 8):
//   title strip (file name; predicted class) of height T = 2*line + M at the top,
//   then one row per Soft MoE layer, each a label strip L = 2*line + 4 above
//   P x P panels. Columns, M apart, starting at x = M:
//     0: the input crop with the mask outline (first row only; empty below),
//     1: the layer's mean dispatch map,
//     2 .. k+1: the maps of the k most used experts, most used first,
//   and a colour scale bar (12 wide, labelled "max" and "0") right of each row.
//   width  = M + (k+2)*(P+M) + 16 + 18f + M
//   height = M + T + layers*(L + P + M)
// Contact sheet (--folder, or more than one image): one tile per image with
// the mean dispatch map of one layer (--sheet-layer, default the last Soft MoE
// layer), tiles S = --sheet-panel wide with a label strip L (file name; q and
// IoU, or the predicted class) above; columns = min(images, --sheet-columns);
// font scale f as above from S; title strip T1 = line + M:
//   width  = M + columns*(S+M)
//   height = M + T1 + rows*(L + S + M)
#include <stb/stb_image_write.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/decode.h"
#include "data/transforms.h"
#include "engine/ops.h"
#include "models/alignment.h"
#include "pixel_font.h"
#include "train/checkpoint.h"
#include "tools/cli.h"
#include "train/config.h"

using namespace fg;
namespace fs = std::filesystem;

namespace {

void usage() {
  std::printf(
      "usage: fgmoe-maps (--cfg FILE.json | --model PRESET --num-classes N) --checkpoint FILE\n"
      "                  (--images IMAGE ... | --folder DIR) --out DIR [options]\n"
      "\n"
      "Draws the Soft MoE routing of each image: per Soft MoE layer, the mean dispatch map\n"
      "(the dispatch weights of a token averaged over all slots, the map the paper draws\n"
      "and the foreground-guided loss uses) and the maps of the k most used experts, as\n"
      "heat maps over the model's input crop, with the foreground mask's outline, q and IoU\n"
      "when a mask is known. Writes one PNG per image and, for a folder, a contact sheet.\n"
      "\n"
      "  --cfg FILE.json        a trainer config (model and data keys)\n"
      "  --model PRESET         soft_moe_32, soft_moe_128 or vit (with --num-classes)\n"
      "  --num-classes N        number of classes for --model\n"
      "  --image-size N         input resolution for --model (default 224)\n"
      "  --checkpoint FILE      fgmoe checkpoint, a state dict or {'model': ...} .pth from\n"
      "                         torch.save, or .safetensors (--weights is the same)\n"
      "  --images IMAGE ...     JPEG/PNG files (every argument up to the next option)\n"
      "  --folder DIR           a dataset root (its val/ split, else train/), a split folder or\n"
      "                         any folder of images (searched recursively, *_mask/ skipped)\n"
      "  --max-images N         images taken from --folder, evenly spaced over the sorted\n"
      "                         list so that every class shows up (default 16)\n"
      "  --mask-folder DIR      masks (<stem>.pth or .png) under DIR, mirroring the image\n"
      "                         folders (or flat); default: root/<split>_mask/<class>/ when\n"
      "                         the images are in the dataset layout root/<split>/<class>/\n"
      "  --out DIR              output folder (created)\n"
      "  --top-k K              expert maps per layer (default 3)\n"
      "  --panel N              panel size in pixels in the per-image figure (default 224)\n"
      "  --sheet-panel N        tile size in the contact sheet (default 128)\n"
      "  --sheet-columns N      contact sheet columns at most (default 8)\n"
      "  --sheet-layer L        encoder layer shown in the contact sheet (default: the last\n"
      "                         Soft MoE layer)\n"
      "  --classes FILE         class names, one per line (default: the sorted class folders\n"
      "                         of --data-path DIR/train or of the dataset --folder names)\n"
      "  --data-path DIR        dataset root whose train/ folders name the classes\n"
      "  --device D             cpu, cuda or auto (default auto: cuda when present)\n");
}

// ------------------------------------------------------------------ drawing

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};

constexpr Rgb kBackground{255, 255, 255};
constexpr Rgb kText{25, 25, 25};
constexpr Rgb kOutline{255, 20, 20};  // contrasts with every colour of the scale
constexpr int kMargin = 8;
constexpr double kHeatAlpha = 0.6;  // heat map opacity over the image

// A perceptually ordered scale from dark violet through blue and green to
// yellow (the viridis hues), linearly interpolated between 9 stops.
Rgb colormap(double t) {
  static constexpr std::array<std::array<double, 3>, 9> kStops = {{
      {68, 1, 84},
      {71, 44, 122},
      {59, 81, 139},
      {44, 113, 142},
      {33, 144, 141},
      {39, 173, 129},
      {92, 200, 99},
      {170, 220, 50},
      {253, 231, 37},
  }};
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * (kStops.size() - 1);
  const size_t i = std::min(static_cast<size_t>(t), kStops.size() - 2);
  const double w = t - static_cast<double>(i);
  auto mix = [&](int c) {
    return static_cast<uint8_t>(std::lround(kStops[i][c] * (1 - w) + kStops[i + 1][c] * w));
  };
  return {mix(0), mix(1), mix(2)};
}

class Canvas {
 public:
  Canvas(int width, int height) : width_(width), height_(height) {
    pixels_.resize(static_cast<size_t>(width) * height * 3);
    for (size_t i = 0; i < pixels_.size(); i += 3) {
      pixels_[i] = kBackground.r;
      pixels_[i + 1] = kBackground.g;
      pixels_[i + 2] = kBackground.b;
    }
  }
  int width() const { return width_; }
  int height() const { return height_; }

  void set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= width_ || y >= height_) return;
    uint8_t* p = &pixels_[(static_cast<size_t>(y) * width_ + x) * 3];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
  void fill(int x, int y, int w, int h, Rgb c) {
    for (int yy = y; yy < y + h; ++yy)
      for (int xx = x; xx < x + w; ++xx) set(xx, yy, c);
  }
  void frame(int x, int y, int w, int h, Rgb c) {
    fill(x, y, w, 1, c);
    fill(x, y + h - 1, w, 1, c);
    fill(x, y, 1, h, c);
    fill(x + w - 1, y, 1, h, c);
  }
  // Text with its top-left corner at (x, y), glyphs scaled by `scale`.
  void text(int x, int y, const std::string& s, int scale, Rgb c) {
    for (size_t i = 0; i < s.size(); ++i) {
      const auto& rows = tools::glyph_rows(s[i]);
      const int gx = x + static_cast<int>(i) * tools::kGlyphAdvance * scale;
      for (int r = 0; r < tools::kGlyphHeight; ++r)
        for (int col = 0; col < tools::kGlyphWidth; ++col)
          if (rows[static_cast<size_t>(r)] & (1u << (tools::kGlyphWidth - 1 - col)))
            fill(gx + col * scale, y + r * scale, scale, scale, c);
    }
  }
  // Copies an RGB image (interleaved, w x h) to (x, y).
  void blit(int x, int y, int w, int h, const std::vector<uint8_t>& rgb) {
    for (int yy = 0; yy < h; ++yy)
      for (int xx = 0; xx < w; ++xx) {
        const uint8_t* p = &rgb[(static_cast<size_t>(yy) * w + xx) * 3];
        set(x + xx, y + yy, {p[0], p[1], p[2]});
      }
  }
  void save_png(const std::string& path) const {
    if (!stbi_write_png(path.c_str(), width_, height_, 3, pixels_.data(), width_ * 3))
      FG_CHECK(false, "cannot write ", path);
  }

 private:
  int width_, height_;
  std::vector<uint8_t> pixels_;
};

int font_scale(int panel) { return panel >= 160 ? 2 : 1; }
int line_height(int scale) { return tools::kGlyphLineHeight * scale; }
int label_height(int scale) { return 2 * line_height(scale) + 4; }

// Cuts s to the characters that fit in `width` pixels ("..." marks a cut).
std::string fit(const std::string& s, int width, int scale) {
  const size_t n = static_cast<size_t>(std::max(0, width / (tools::kGlyphAdvance * scale)));
  if (s.size() <= n) return s;
  if (n <= 3) return s.substr(0, n);
  return s.substr(0, n - 2) + "..";
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// Bilinear resize (pixel centres aligned, edges clamped) of a single-channel
// float grid of gw x gh to w x h.
std::vector<float> upsample(const std::vector<float>& grid, int gw, int gh, int w, int h) {
  std::vector<float> out(static_cast<size_t>(w) * h);
  for (int y = 0; y < h; ++y) {
    const double sy = std::clamp((y + 0.5) * gh / h - 0.5, 0.0, gh - 1.0);
    const int y0 = static_cast<int>(sy), y1 = std::min(y0 + 1, gh - 1);
    const double wy = sy - y0;
    for (int x = 0; x < w; ++x) {
      const double sx = std::clamp((x + 0.5) * gw / w - 0.5, 0.0, gw - 1.0);
      const int x0 = static_cast<int>(sx), x1 = std::min(x0 + 1, gw - 1);
      const double wx = sx - x0;
      auto at = [&](int yy, int xx) { return static_cast<double>(grid[static_cast<size_t>(yy) * gw + xx]); };
      out[static_cast<size_t>(y) * w + x] = static_cast<float>(
          (1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x1)) + wy * ((1 - wx) * at(y1, x0) + wx * at(y1, x1)));
    }
  }
  return out;
}

// ------------------------------------------------------------------ one image

struct LayerMaps {
  int64_t layer = 0;               // encoder layer index
  std::vector<float> mean;         // (m) mean dispatch map
  std::vector<std::vector<float>> experts;  // (k, m) maps of the most used experts
  std::vector<int64_t> expert_ids;
  std::vector<double> expert_use;  // share of the combine mass, per drawn expert
  bool aligned = false;            // q and iou are defined (mask with foreground)
  double q = 0, iou = 0;
};

struct ImageResult {
  std::string path, mask_path, figure_path;
  std::vector<uint8_t> crop;  // S x S RGB, the model's input de-normalized
  std::vector<uint8_t> mask;  // S x S 0/1 (empty: none)
  std::vector<LayerMaps> layers;
  int64_t predicted = 0;
  double probability = 0;
};

// The input crop at `panel` size (bilinear) with the mask outline.
struct PanelBase {
  std::vector<uint8_t> rgb;
  std::vector<uint8_t> outline;  // panel x panel, 1 on the mask's boundary
};

PanelBase panel_base(const ImageResult& r, int S, int panel) {
  PanelBase base;
  base.rgb.resize(static_cast<size_t>(panel) * panel * 3);
  for (int c = 0; c < 3; ++c) {
    std::vector<float> plane(static_cast<size_t>(S) * S);
    for (size_t i = 0; i < plane.size(); ++i) plane[i] = r.crop[i * 3 + static_cast<size_t>(c)];
    const std::vector<float> up = upsample(plane, S, S, panel, panel);
    for (size_t i = 0; i < up.size(); ++i)
      base.rgb[i * 3 + static_cast<size_t>(c)] = static_cast<uint8_t>(std::clamp(std::lround(up[i]), 0L, 255L));
  }
  if (!r.mask.empty()) {
    auto inside = [&](int x, int y) {
      if (x < 0 || y < 0 || x >= panel || y >= panel) return false;
      const int sx = static_cast<int>(static_cast<int64_t>(x) * S / panel);
      const int sy = static_cast<int>(static_cast<int64_t>(y) * S / panel);
      return r.mask[static_cast<size_t>(sy) * S + sx] != 0;
    };
    const int radius = std::max(1, panel / 112);
    base.outline.assign(static_cast<size_t>(panel) * panel, 0);
    for (int y = 0; y < panel; ++y)
      for (int x = 0; x < panel; ++x) {
        if (!inside(x, y)) continue;
        bool edge = false;
        for (int dy = -radius; dy <= radius && !edge; ++dy)
          for (int dx = -radius; dx <= radius && !edge; ++dx)
            if (x + dx >= 0 && y + dy >= 0 && x + dx < panel && y + dy < panel && !inside(x + dx, y + dy))
              edge = true;
        base.outline[static_cast<size_t>(y) * panel + x] = edge;
      }
  }
  return base;
}

// Draws the base image, optionally with a heat map (token grid g x g, any
// scale: shown relative to its maximum), and the outline, at (x, y).
void draw_panel(Canvas& canvas, int x, int y, int panel, const PanelBase& base,
                const std::vector<float>* heat, int grid) {
  std::vector<uint8_t> rgb = base.rgb;
  if (heat) {
    float top = 0;
    for (float v : *heat) top = std::max(top, v);
    const std::vector<float> up = upsample(*heat, grid, grid, panel, panel);
    for (size_t i = 0; i < up.size(); ++i) {
      const Rgb c = colormap(top > 0 ? up[i] / top : 0.0);
      const uint8_t cc[3] = {c.r, c.g, c.b};
      for (int k = 0; k < 3; ++k) {
        uint8_t& p = rgb[i * 3 + static_cast<size_t>(k)];
        p = static_cast<uint8_t>(std::lround((1 - kHeatAlpha) * p + kHeatAlpha * cc[k]));
      }
    }
  }
  canvas.blit(x, y, panel, panel, rgb);
  if (!base.outline.empty())
    for (int yy = 0; yy < panel; ++yy)
      for (int xx = 0; xx < panel; ++xx)
        if (base.outline[static_cast<size_t>(yy) * panel + xx]) canvas.set(x + xx, y + yy, kOutline);
}

void draw_scale_bar(Canvas& canvas, int x, int y, int height, int scale) {
  constexpr int kBarWidth = 12;
  for (int yy = 0; yy < height; ++yy) {
    const Rgb c = colormap(1.0 - static_cast<double>(yy) / std::max(1, height - 1));
    canvas.fill(x, y + yy, kBarWidth, 1, c);
  }
  canvas.frame(x, y, kBarWidth, height, kText);
  canvas.text(x + kBarWidth + 4, y, "max", scale, kText);
  canvas.text(x + kBarWidth + 4, y + height - tools::kGlyphHeight * scale, "0", scale, kText);
}

double peak(const std::vector<float>& map) {
  float top = 0;
  for (float v : map) top = std::max(top, v);
  return static_cast<double>(top) * static_cast<double>(map.size());
}

void write_figure(const ImageResult& r, int S, int grid, int panel, int top_k,
                  const std::string& predicted_label) {
  const int f = font_scale(panel), line = line_height(f), L = label_height(f);
  const int T = 2 * line + kMargin;
  const int columns = 2 + top_k;
  const int rows = static_cast<int>(r.layers.size());
  const int bar_x = kMargin + columns * (panel + kMargin);
  const int width = bar_x + 16 + 3 * tools::kGlyphAdvance * f + kMargin;
  const int height = kMargin + T + rows * (L + panel + kMargin);
  Canvas canvas(width, height);
  const PanelBase base = panel_base(r, S, panel);
  const int text_width = width - 2 * kMargin;
  canvas.text(kMargin, kMargin, fit(fs::path(r.path).filename().string(), text_width, f), f, kText);
  canvas.text(kMargin, kMargin + line, fit(predicted_label, text_width, f), f, kText);
  for (int row = 0; row < rows; ++row) {
    const LayerMaps& lm = r.layers[static_cast<size_t>(row)];
    const int y_label = kMargin + T + row * (L + panel + kMargin);
    const int y = y_label + L;
    const std::string layer = "layer " + std::to_string(lm.layer);
    auto label = [&](int column, const std::string& a, const std::string& b) {
      const int x = kMargin + column * (panel + kMargin);
      canvas.text(x, y_label, fit(a, panel, f), f, kText);
      canvas.text(x, y_label + line, fit(b, panel, f), f, kText);
    };
    if (row == 0) {
      label(0, "input " + std::to_string(S) + "x" + std::to_string(S), r.mask.empty() ? "no mask" : "mask outline");
      draw_panel(canvas, kMargin, y, panel, base, nullptr, grid);
    }
    label(1, layer + " mean",
          lm.aligned ? "q " + fixed(lm.q, 2) + " IoU " + fixed(lm.iou, 2) : "peak " + fixed(peak(lm.mean), 1) + "x");
    draw_panel(canvas, kMargin + (panel + kMargin), y, panel, base, &lm.mean, grid);
    for (size_t j = 0; j < lm.experts.size(); ++j) {
      const int column = 2 + static_cast<int>(j);
      label(column, layer + " expert " + std::to_string(lm.expert_ids[j]),
            "use " + fixed(100.0 * lm.expert_use[j], 0) + "% peak " + fixed(peak(lm.experts[j]), 1) + "x");
      draw_panel(canvas, kMargin + column * (panel + kMargin), y, panel, base, &lm.experts[j], grid);
    }
    draw_scale_bar(canvas, bar_x, y, panel, f);
  }
  canvas.save_png(r.figure_path);
}

void write_sheet(const std::vector<ImageResult>& results, size_t layer_slot, int S, int grid, int tile,
                 int max_columns, const std::vector<std::string>& predicted_labels, const std::string& path) {
  const int f = font_scale(tile), line = line_height(f), L = label_height(f);
  const int n = static_cast<int>(results.size());
  const int columns = std::min(n, max_columns);
  const int rows = (n + columns - 1) / columns;
  const int T = line + kMargin;
  const int width = kMargin + columns * (tile + kMargin);
  const int height = kMargin + T + rows * (L + tile + kMargin);
  Canvas canvas(width, height);
  const int64_t layer = results.front().layers[layer_slot].layer;
  canvas.text(kMargin, kMargin, fit("mean dispatch, layer " + std::to_string(layer), width - 2 * kMargin, f), f,
              kText);
  for (int i = 0; i < n; ++i) {
    const ImageResult& r = results[static_cast<size_t>(i)];
    const LayerMaps& lm = r.layers[layer_slot];
    const int x = kMargin + (i % columns) * (tile + kMargin);
    const int y_label = kMargin + T + (i / columns) * (L + tile + kMargin);
    canvas.text(x, y_label, fit(fs::path(r.path).filename().string(), tile, f), f, kText);
    canvas.text(x, y_label + line,
                fit(lm.aligned ? "q " + fixed(lm.q, 2) + " IoU " + fixed(lm.iou, 2) : predicted_labels[static_cast<size_t>(i)],
                    tile, f),
                f, kText);
    draw_panel(canvas, x, y_label + L, tile, panel_base(r, S, tile), &lm.mean, grid);
  }
  canvas.save_png(path);
}

// ------------------------------------------------------------------ inputs

struct ImageJob {
  std::string path;
  std::string mask_path;  // empty: none
};

bool is_folder(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

std::string existing_mask(const fs::path& dir, const std::string& stem) {
  for (const char* ext : {".pth", ".png"}) {
    const fs::path p = dir / (stem + ext);
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return "";
}

// root/<split>/<class>/<image> -> root/<split>_mask/<class>/<stem>.{pth,png}
std::string dataset_mask(const fs::path& image) {
  const fs::path class_dir = image.parent_path();
  const fs::path split_dir = class_dir.parent_path();
  if (class_dir.empty() || split_dir.empty() || split_dir.filename().empty()) return "";
  const fs::path mask_dir = split_dir.parent_path() / (split_dir.filename().string() + "_mask");
  if (!is_folder(mask_dir)) return "";
  return existing_mask(mask_dir / class_dir.filename(), image.stem().string());
}

std::string mask_in_folder(const fs::path& mask_folder, const fs::path& image, const fs::path& relative_dir) {
  std::string m;
  if (!relative_dir.empty()) m = existing_mask(mask_folder / relative_dir, image.stem().string());
  if (m.empty()) m = existing_mask(mask_folder / image.parent_path().filename(), image.stem().string());
  if (m.empty()) m = existing_mask(mask_folder, image.stem().string());
  return m;
}

std::string unique_figure_path(const fs::path& out, const std::string& stem, std::set<std::string>& used) {
  std::string name = stem + "_maps.png";
  for (int i = 2; used.count(name); ++i) name = stem + "_" + std::to_string(i) + "_maps.png";
  used.insert(name);
  return (out / name).string();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string cfg_file, preset, weights, classes_file, data_path, folder, mask_folder, out_dir;
    std::string device_name = "auto";
    int64_t num_classes = 0, image_size = 224, max_images = 16, top_k = 3, panel = 224, sheet_panel = 128,
            sheet_columns = 8, sheet_layer = -1;
    std::vector<std::string> images;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&] { return tools::option_value(argc, argv, i); };
      auto number = [&](int64_t low) { return tools::option_integer(a, value(), low); };
      if (a == "-h" || a == "--help") { usage(); return 0; }
      else if (a == "--cfg") cfg_file = value();
      else if (a == "--model") preset = value();
      else if (a == "--num-classes") num_classes = number(1);
      else if (a == "--image-size") image_size = number(1);
      else if (a == "--checkpoint" || a == "--weights") weights = value();
      else if (a == "--images") {
        while (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) images.push_back(argv[++i]);
        FG_CHECK(!images.empty(), "--images needs at least one file");
      }
      else if (a == "--folder") folder = value();
      else if (a == "--max-images") max_images = number(1);
      else if (a == "--mask-folder") mask_folder = value();
      else if (a == "--out") out_dir = value();
      else if (a == "--top-k") top_k = number(0);
      else if (a == "--panel") panel = number(32);
      else if (a == "--sheet-panel") sheet_panel = number(32);
      else if (a == "--sheet-columns") sheet_columns = number(1);
      else if (a == "--sheet-layer") sheet_layer = number(0);
      else if (a == "--classes") classes_file = value();
      else if (a == "--data-path") data_path = value();
      else if (a == "--device") device_name = value();
      else if (a.rfind("--", 0) == 0) FG_CHECK(false, "unknown option ", a, " (see --help)");
      else images.push_back(a);
    }
    FG_CHECK(!weights.empty(), "--checkpoint FILE is required (see --help)");
    FG_CHECK(!images.empty() || !folder.empty(), "nothing to draw: give --images FILE ... or --folder DIR");
    FG_CHECK(images.empty() || folder.empty(), "give either --images or --folder, not both");
    FG_CHECK(!out_dir.empty(), "--out DIR is required (see --help)");
    FG_CHECK(fs::exists(weights), "checkpoint not found: ", weights);
    if (!mask_folder.empty()) FG_CHECK(is_folder(mask_folder), "mask folder not found: ", mask_folder);

    const train::Config config = train::Config::for_model(cfg_file, preset, num_classes, image_size);
    const models::ModelConfig mc = config.model_config();
    FG_CHECK(mc.moe_layers > 0, "the model has no Soft MoE layer: there is no routing to draw");
    models::SoftMoEViT model(mc);
    try {
      train::load_weights(weights, model, true);
    } catch (const std::exception& e) {
      FG_CHECK(false, "cannot load ", weights, " into the configured model: ", e.what());
    }
    if (device_name == "auto") device_name = cuda_available() ? "cuda" : "cpu";
    const Device device = Device::parse(device_name);
    model.to(device);
    model.eval();

    // ---- the images and their masks
    std::vector<ImageJob> jobs;
    std::string dataset_root;
    if (!folder.empty()) {
      FG_CHECK(is_folder(folder), "no such folder: ", folder);
      fs::path split = folder, masks;
      const char* root_split = is_folder(fs::path(folder) / "val")     ? "val"
                               : is_folder(fs::path(folder) / "train") ? "train"
                                                                       : nullptr;
      if (root_split) {
        dataset_root = folder;
        split = fs::path(folder) / root_split;
        masks = fs::path(folder) / (std::string(root_split) + "_mask");
      } else {
        const fs::path dir = fs::path(folder).lexically_normal();
        const fs::path d = dir.filename().empty() ? dir.parent_path() : dir;
        masks = d.parent_path() / (d.filename().string() + "_mask");
        if (is_folder(d.parent_path() / "train")) dataset_root = d.parent_path().string();
      }
      if (!mask_folder.empty()) masks = mask_folder;
      std::vector<fs::path> found;
      for (auto it = fs::recursive_directory_iterator(split); it != fs::recursive_directory_iterator(); ++it) {
        const std::string name = it->path().filename().string();
        const bool mask_dir = name.size() > 5 && name.compare(name.size() - 5, 5, "_mask") == 0;
        if (it->is_directory() && mask_dir) it.disable_recursion_pending();  // masks are not images
        else if (it->is_regular_file() && data::has_image_extension(name)) found.push_back(it->path());
      }
      std::sort(found.begin(), found.end());
      FG_CHECK(!found.empty(), "no JPEG or PNG image in ", split.string());
      const size_t n = found.size(), take = std::min(n, static_cast<size_t>(max_images));
      for (size_t i = 0; i < take; ++i) {
        const fs::path& p = found[i * n / take];
        ImageJob job{p.string(), ""};
        if (is_folder(masks)) job.mask_path = mask_in_folder(masks, p, p.parent_path().lexically_relative(split));
        jobs.push_back(job);
      }
    } else {
      // Images inside a dataset (root/<split>/<class>/<image>) name the classes.
      const fs::path root = fs::path(images.front()).parent_path().parent_path().parent_path();
      if (!root.empty() && is_folder(root / "train")) dataset_root = root.string();
      for (const auto& p : images) {
        FG_CHECK(fs::exists(p), "no such image: ", p);
        FG_CHECK(!is_folder(p), p, " is a folder: use --folder");
        ImageJob job{p, ""};
        job.mask_path = mask_folder.empty() ? dataset_mask(fs::path(p)) : mask_in_folder(mask_folder, p, "");
        jobs.push_back(job);
      }
    }

    std::vector<std::string> class_names;
    if (!classes_file.empty()) {
      class_names = tools::read_lines(classes_file);
    } else if (!data_path.empty()) {
      class_names = data::ImageFolderDataset::scan(data_path, "train", "", nullptr, [](const std::string&) {}).classes();
    } else if (!dataset_root.empty()) {
      try {
        class_names =
            data::ImageFolderDataset::scan(dataset_root, "train", "", nullptr, [](const std::string&) {}).classes();
      } catch (const std::exception&) {
      }
      if (static_cast<int64_t>(class_names.size()) != mc.num_classes) class_names.clear();
    }
    if (!class_names.empty())
      FG_CHECK(static_cast<int64_t>(class_names.size()) == mc.num_classes, class_names.size(),
               " class names for a model with ", mc.num_classes, " classes");

    const int64_t first_moe = mc.depth - mc.moe_layers;
    size_t sheet_slot = static_cast<size_t>(mc.moe_layers - 1);
    if (sheet_layer >= 0) {
      FG_CHECK(mc.is_moe_layer(sheet_layer) && sheet_layer < mc.depth, "--sheet-layer ", sheet_layer,
               " is not a Soft MoE layer (those are ", first_moe, "..", mc.depth - 1, ")");
      sheet_slot = static_cast<size_t>(sheet_layer - first_moe);
    }
    const int k = static_cast<int>(std::min<int64_t>(top_k, mc.num_experts));
    fs::create_directories(out_dir);

    // ---- run the model, draw each image
    data::DataOptions options;
    options.img_size = static_cast<int>(mc.image_size);
    options.interpolation = config.str("DATA.INTERPOLATION");
    options.test_crop = config.flag("TEST.CROP");
    const data::EvalTransform transform(options);
    data::TransformWorkspace ws;
    const int S = static_cast<int>(mc.image_size), grid = static_cast<int>(mc.grid());
    const int64_t m = mc.tokens(), n_exp = mc.num_experts, slots = mc.slots_per_expert;
    std::vector<ImageResult> results;
    std::vector<std::string> predicted_labels;
    std::set<std::string> used_names;
    std::vector<models::AlignmentSums> sums(static_cast<size_t>(mc.moe_layers));
    for (const ImageJob& job : jobs) {
      ImageResult r;
      r.path = job.path;
      r.mask_path = job.mask_path;
      Tensor image = Tensor::empty({1, 3, S, S});
      Tensor mask = Tensor::zeros({1, 1, S, S});
      data::PlanarImage mask_plane;
      if (!job.mask_path.empty()) {
        std::vector<uint8_t> bytes;
        data::InterleavedImage gray;
        try {
          data::load_mask(job.mask_path, mask_plane, bytes, gray);
        } catch (const std::exception& e) {
          FG_CHECK(false, "cannot read mask ", job.mask_path, ": ", e.what());
        }
      }
      try {
        data::read_file(job.path, ws.image_bytes);
        data::SampleOutput out{image.data<float>(), job.mask_path.empty() ? nullptr : mask.data<float>()};
        transform(ws.image_bytes.data(), ws.image_bytes.size(), job.mask_path.empty() ? nullptr : &mask_plane, out,
                  ws);
      } catch (const std::exception& e) {
        FG_CHECK(false, "cannot read image ", job.path, ": ", e.what());
      }
      // The crop as the model sees it, back in 8-bit RGB.
      const float* px = image.data<float>();
      r.crop.resize(static_cast<size_t>(S) * S * 3);
      for (int c = 0; c < 3; ++c)
        for (int64_t i = 0; i < static_cast<int64_t>(S) * S; ++i) {
          const double v = (px[c * S * S + i] * options.std[static_cast<size_t>(c)] + options.mean[static_cast<size_t>(c)]) * 255.0;
          r.crop[static_cast<size_t>(i) * 3 + static_cast<size_t>(c)] =
              static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
        }
      if (!job.mask_path.empty()) {
        const std::vector<float> mv = mask.to_vector<float>();
        r.mask.resize(mv.size());
        for (size_t i = 0; i < mv.size(); ++i) r.mask[i] = mv[i] != 0;
      }

      models::SoftMoEViT::Output o;
      {
        NoGradGuard no_grad;
        o = model.forward(image.to(device), Tensor(), Tensor(), true);
      }
      const std::vector<float> probs = softmax(o.logits.cpu().to(DType::Float32), -1).to_vector<float>();
      r.predicted = std::max_element(probs.begin(), probs.end()) - probs.begin();
      r.probability = probs[static_cast<size_t>(r.predicted)];
      FG_CHECK(static_cast<int64_t>(o.dispatch.size()) == mc.moe_layers && o.combine.size() == o.dispatch.size(),
               "the model returned ", o.dispatch.size(), " dispatch maps for ", mc.moe_layers, " Soft MoE layers");
      for (size_t l = 0; l < o.dispatch.size(); ++l) {
        const Tensor dispatch = o.dispatch[l].cpu().to(DType::Float32).contiguous();
        FG_CHECK(dispatch.dim() == 4 && dispatch.size(1) == m && dispatch.size(2) == n_exp && dispatch.size(3) == slots,
                 "dispatch weights of shape ", shape_str(dispatch.shape()), ", expected (1, ", m, ", ", n_exp, ", ",
                 slots, ")");
        const std::vector<float> d = dispatch.to_vector<float>();
        const std::vector<float> cw = o.combine[l].cpu().to(DType::Float32).contiguous().to_vector<float>();
        LayerMaps lm;
        lm.layer = first_moe + static_cast<int64_t>(l);
        lm.mean = models::token_dispatch_map(dispatch).to_vector<float>();
        std::vector<double> use(static_cast<size_t>(n_exp), 0.0);
        for (int64_t t = 0; t < m; ++t)
          for (int64_t e = 0; e < n_exp; ++e)
            for (int64_t s = 0; s < slots; ++s) use[static_cast<size_t>(e)] += cw[static_cast<size_t>((t * n_exp + e) * slots + s)];
        std::vector<int64_t> order(static_cast<size_t>(n_exp));
        for (int64_t e = 0; e < n_exp; ++e) order[static_cast<size_t>(e)] = e;
        std::stable_sort(order.begin(), order.end(),
                         [&](int64_t a, int64_t b) { return use[static_cast<size_t>(a)] > use[static_cast<size_t>(b)]; });
        for (int j = 0; j < k; ++j) {
          const int64_t e = order[static_cast<size_t>(j)];
          std::vector<float> map(static_cast<size_t>(m), 0.0f);
          for (int64_t t = 0; t < m; ++t) {
            double acc = 0;
            for (int64_t s = 0; s < slots; ++s) acc += d[static_cast<size_t>((t * n_exp + e) * slots + s)];
            map[static_cast<size_t>(t)] = static_cast<float>(acc / static_cast<double>(slots));
          }
          lm.experts.push_back(std::move(map));
          lm.expert_ids.push_back(e);
          lm.expert_use.push_back(use[static_cast<size_t>(e)] / static_cast<double>(m));
        }
        if (!r.mask.empty()) {
          const models::AlignmentSums a = models::dispatch_alignment(dispatch, mask);
          if (a.count > 0) {
            lm.aligned = true;
            lm.q = a.soft_iou;
            lm.iou = a.iou;
            sums[l].merge(a);
          }
        }
        r.layers.push_back(std::move(lm));
      }
      const std::string name = class_names.empty() ? "class " + std::to_string(r.predicted)
                                                   : class_names[static_cast<size_t>(r.predicted)];
      const std::string predicted = "predicted " + name + " " + fixed(100.0 * r.probability, 1) + "%";
      r.figure_path = unique_figure_path(out_dir, fs::path(job.path).stem().string(), used_names);
      write_figure(r, S, grid, static_cast<int>(panel), k, predicted);

      std::printf("%s\n  %s", r.path.c_str(), predicted.c_str());
      if (r.mask.empty()) std::printf(", no mask");
      for (const LayerMaps& lm : r.layers) {
        if (lm.aligned) std::printf("; layer %lld q %.3f IoU %.3f", static_cast<long long>(lm.layer), lm.q, lm.iou);
        else if (!r.mask.empty()) std::printf("; layer %lld: mask has no foreground", static_cast<long long>(lm.layer));
      }
      std::printf("\n  wrote %s\n", r.figure_path.c_str());
      std::fflush(stdout);
      predicted_labels.push_back(name);
      results.push_back(std::move(r));
    }

    if (!folder.empty() || results.size() > 1) {
      const std::string sheet = (fs::path(out_dir) / "contact_sheet.png").string();
      write_sheet(results, sheet_slot, S, grid, static_cast<int>(sheet_panel), static_cast<int>(sheet_columns),
                  predicted_labels, sheet);
      std::printf("contact sheet: %s\n", sheet.c_str());
    }
    const int64_t with_mask = sums.empty() ? 0 : sums.front().count;
    std::printf("summary: %zu images, %lld with a foreground mask\n", results.size(),
                static_cast<long long>(with_mask));
    for (size_t l = 0; l < sums.size(); ++l) {
      if (sums[l].count == 0) {
        std::printf("  layer %lld  no image with a mask: q and IoU need masks\n",
                    static_cast<long long>(first_moe + static_cast<int64_t>(l)));
        continue;
      }
      std::printf("  layer %lld  mean q %.4f  mean IoU %.4f  over %lld images\n",
                  static_cast<long long>(first_moe + static_cast<int64_t>(l)), sums[l].mean_soft_iou(),
                  sums[l].mean_iou(), static_cast<long long>(sums[l].count));
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fgmoe-maps: error: %s\n", e.what());
    return 1;
  }
}
