#include "data/dataset.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>

#include "data/decode.h"
#include "engine/serialize/pth.h"

namespace fg::data {

namespace fs = std::filesystem;

void log_to_stderr(const std::string& message) {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  std::cerr << "fgmoe data: " << message << std::endl;
}

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string stem_of(const std::string& name) {
  const size_t dot = name.find_last_of('.');
  return dot == std::string::npos ? name : name.substr(0, dot);
}

std::string extension_of(const std::string& name) {
  const size_t dot = name.find_last_of('.');
  return dot == std::string::npos ? "" : lower(name.substr(dot));
}

bool is_folder(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

// Sorted names of the entries of dir that pass keep (following symlinks).
std::vector<std::string> list_sorted(const fs::path& dir,
                                     const std::function<bool(const fs::directory_entry&)>& keep) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (keep(*it)) names.push_back(it->path().filename().string());
  }
  FG_CHECK(!ec, "cannot list ", dir.string(), ": ", ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

bool has_image_extension(const std::string& name) {
  const std::string e = extension_of(name);
  return e == ".jpeg" || e == ".jpg" || e == ".png";
}

ImageFolderDataset ImageFolderDataset::scan(const std::string& root, const std::string& split,
                                            const std::string& mask_split,
                                            const std::vector<std::string>* classes,
                                            const LogFunction& log) {
  ImageFolderDataset ds;
  ds.root_ = root;
  ds.split_ = split;
  const fs::path split_dir = fs::path(root) / split;
  FG_CHECK(is_folder(root), "dataset root ", root, " does not exist or is not a folder");
  FG_CHECK(is_folder(split_dir), "dataset: ", split_dir.string(), " does not exist (expected root/",
           split, "/<class>/<images>)");
  const std::vector<std::string> folders =
      list_sorted(split_dir, [](const fs::directory_entry& e) { return is_folder(e.path()); });
  if (classes) {
    ds.classes_ = *classes;
    for (const std::string& folder : folders) {
      FG_CHECK(std::binary_search(ds.classes_.begin(), ds.classes_.end(), folder) ||
                   std::find(ds.classes_.begin(), ds.classes_.end(), folder) != ds.classes_.end(),
               "dataset: class folder ", (split_dir / folder).string(),
               " is not one of the training classes");
    }
  } else {
    ds.classes_ = folders;
  }
  FG_CHECK(!ds.classes_.empty(), "dataset: ", split_dir.string(), " has no class folders");

  fs::path mask_dir;
  bool masks_wanted = !mask_split.empty();
  if (masks_wanted) {
    mask_dir = fs::path(root) / mask_split;
    if (!is_folder(mask_dir)) {
      log(str_cat(mask_dir.string(), " does not exist: every image of ", split,
                  " trains without the foreground term"));
    }
  }
  for (size_t label = 0; label < ds.classes_.size(); ++label) {
    const std::string& name = ds.classes_[label];
    const fs::path class_dir = split_dir / name;
    if (!is_folder(class_dir)) {
      log(str_cat("class ", name, " has no folder in ", split_dir.string()));
      continue;
    }
    const std::vector<std::string> images =
        list_sorted(class_dir, [](const fs::directory_entry& e) {
          std::error_code ec;
          return fs::is_regular_file(e.path(), ec) &&
                 has_image_extension(e.path().filename().string());
        });
    if (images.empty()) log(str_cat("class folder ", class_dir.string(), " holds no images"));
    // One listing of the class's mask folder, not one lookup per image.
    std::map<std::string, std::string> mask_of_stem;
    if (masks_wanted && is_folder(mask_dir / name)) {
      const auto mask_files = list_sorted(mask_dir / name, [](const fs::directory_entry& e) {
        std::error_code ec;
        return fs::is_regular_file(e.path(), ec);
      });
      for (const std::string& file : mask_files) {
        const std::string e = extension_of(file);
        const std::string stem = stem_of(file);
        const std::string path = (mask_dir / name / file).string();
        if (e == ".pth") {
          mask_of_stem[stem] = path;  // .pth wins over an image of the same stem
        } else if (e == ".png" && !mask_of_stem.count(stem)) {
          mask_of_stem[stem] = path;
        }
      }
    }
    for (const std::string& image : images) {
      Sample s;
      s.image_path = (class_dir / image).string();
      s.label = static_cast<int64_t>(label);
      if (masks_wanted) {
        auto it = mask_of_stem.find(stem_of(image));
        if (it != mask_of_stem.end()) {
          s.mask_path = it->second;
        } else {
          ++ds.images_without_mask_;
        }
      }
      ds.samples_.push_back(std::move(s));
    }
  }
  FG_CHECK(!ds.samples_.empty(), "dataset: no images (.jpeg, .jpg, .png) under ",
           split_dir.string());
  if (masks_wanted && ds.images_without_mask_ > 0) {
    log(str_cat(ds.images_without_mask_, " of ", ds.samples_.size(), " images in ",
                split_dir.string(), " have no mask in ", mask_dir.string(),
                "; they train without the foreground term"));
  }
  return ds;
}

int64_t ImageFolderDataset::drop_images_without_mask(const LogFunction& log) {
  std::vector<Sample> kept;
  kept.reserve(samples_.size());
  int64_t dropped = 0;
  for (Sample& s : samples_) {
    if (s.mask_path.empty()) {
      log(str_cat("no mask for ", s.image_path, "; leaving the image out"));
      ++dropped;
    } else {
      kept.push_back(std::move(s));
    }
  }
  samples_ = std::move(kept);
  images_without_mask_ = 0;
  FG_CHECK(!samples_.empty(), "dataset: no image of ", (fs::path(root_) / split_).string(),
           " has a mask");
  return dropped;
}

namespace {

template <class T>
void binarize(const T* values, size_t n, uint8_t* out) {
  for (size_t i = 0; i < n; ++i) out[i] = values[i] != T(0) ? 1 : 0;
}

template <class T>
void binarize_float(const T* values, size_t n, uint8_t* out) {
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(values[i]) * 255.0f >= 1.0f ? 1 : 0;
}

}  // namespace

void load_mask(const std::string& path, PlanarImage& mask, std::vector<uint8_t>& bytes,
               InterleavedImage& gray_scratch) {
  if (extension_of(path) != ".pth") {
    try {
      read_file(path, bytes);
      decode_gray(bytes.data(), bytes.size(), gray_scratch);
    } catch (const Error& e) {
      throw MaskError(str_cat("unreadable mask ", path, ": ", e.what()));
    }
    mask.reset(gray_scratch.width, gray_scratch.height, 1);
    binarize(gray_scratch.pixels.data(), gray_scratch.pixels.size(), mask.plane(0));
    return;
  }
  Tensor t;
  try {
    t = serialize::load_tensor_pth(path);
  } catch (const Error& e) {
    throw MaskError(str_cat("unreadable mask ", path, ": ", e.what()));
  }
  mask_from_tensor(t, path, mask);
}

void mask_from_tensor(const Tensor& saved, const std::string& path, PlanarImage& mask) {
  const Shape& shape = saved.shape();
  const bool plain = shape.size() == 2;
  const bool leading_one = shape.size() == 3 && shape[0] == 1;
  if (!(plain || leading_one) || saved.numel() == 0) {
    throw MaskError(
        str_cat("mask ", path, " has shape ", shape_str(shape), "; expected (H, W) or (1, H, W)"));
  }
  // A saved view may repeat one value (stride 0) over any size; the images' limit holds.
  if (saved.numel() > kMaxImagePixels) {
    throw MaskError(str_cat("mask ", path, " has shape ", shape_str(shape), ": more than the ",
                            kMaxImagePixels, " pixels fgmoe reads"));
  }
  // A saved view keeps its strides (e.g. a transposed mask); read it row-major.
  const Tensor t = saved.contiguous();
  const int height = static_cast<int>(shape[shape.size() - 2]);
  const int width = static_cast<int>(shape[shape.size() - 1]);
  mask.reset(width, height, 1);
  const size_t n = mask.plane_size();
  uint8_t* out = mask.plane(0);
  switch (t.dtype()) {
    case DType::Float32:
      binarize_float(t.data<float>(), n, out);
      break;
    case DType::Float64:
      binarize_float(t.data<double>(), n, out);
      break;
    case DType::Float16:
      binarize_float(t.data<Float16>(), n, out);
      break;
    case DType::BFloat16:
      binarize_float(t.data<BFloat16>(), n, out);
      break;
    case DType::UInt8:
      binarize(t.data<uint8_t>(), n, out);
      break;
    case DType::Bool:
      binarize(reinterpret_cast<const uint8_t*>(t.data<bool>()), n, out);
      break;
    case DType::Int64:
      binarize(t.data<int64_t>(), n, out);
      break;
    case DType::Int32:
      binarize(t.data<int32_t>(), n, out);
      break;
  }
}

}  // namespace fg::data
