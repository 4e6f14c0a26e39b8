// A dataset in the reference's folder layout:
//   root/train/<class>/<name>.JPEG
//   root/train_mask/<class>/<name>.pth   (or <name>.png)
//   root/val/<class>/<name>.JPEG
// Classes are the sorted names of the folders in the training split; image
// files are matched by extension (.jpeg, .jpg, .png, any case) and sorted by
// name, so the sample order does not depend on the file system.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/decode.h"
#include "data/image.h"
#include "engine/error.h"
#include "engine/tensor.h"

namespace fg::data {

// A mask file that exists but cannot be read.
class MaskError : public Error {
 public:
  explicit MaskError(const std::string& message) : Error(message) {}
};

struct Sample {
  std::string image_path;
  std::string mask_path;  // empty: no mask for this image
  int64_t label = 0;
};

using LogFunction = std::function<void(const std::string&)>;
// Writes "fgmoe data: <message>" to standard error.
void log_to_stderr(const std::string& message);

class ImageFolderDataset {
 public:
  // Scans root/split. With mask_split (e.g. "train_mask"), each image's mask is
  // looked up as root/mask_split/<class>/<stem>.pth, then .png. With classes,
  // labels follow that list (validation uses the training classes); otherwise
  // the split's sorted folder names define them. Throws fg::Error when root/split
  // is missing or holds no image; an empty class folder is reported through log
  // and keeps its label.
  static ImageFolderDataset scan(const std::string& root, const std::string& split,
                                 const std::string& mask_split = "",
                                 const std::vector<std::string>* classes = nullptr,
                                 const LogFunction& log = log_to_stderr);

  const std::vector<std::string>& classes() const { return classes_; }
  const std::vector<Sample>& samples() const { return samples_; }
  int64_t size() const { return static_cast<int64_t>(samples_.size()); }
  int64_t num_classes() const { return static_cast<int64_t>(classes_.size()); }
  // Images without a mask file (counted when scanning with a mask split).
  int64_t images_without_mask() const { return images_without_mask_; }
  const std::string& root() const { return root_; }

  // The reference's behaviour (ImageNetDataset2): images without a mask file
  // are left out, each with a warning. fgmoe's default keeps them and trains
  // them without the foreground term. Returns how many were removed.
  int64_t drop_images_without_mask(const LogFunction& log = log_to_stderr);
  const std::string& split() const { return split_; }

 private:
  std::string root_, split_;
  std::vector<std::string> classes_;
  std::vector<Sample> samples_;
  int64_t images_without_mask_ = 0;
};

// Loads a mask file (.pth from torch.save, or an image such as .png) as a
// 0/1 plane: any nonzero uint8/bool value is foreground; a float value is
// foreground when value * 255 >= 1 (what the reference's conversion to an
// 8-bit image keeps). Accepts shapes (H, W) and (1, H, W). Throws MaskError.
void load_mask(const std::string& path, PlanarImage& mask, std::vector<uint8_t>& bytes,
               InterleavedImage& gray_scratch);
// The same conversion of a tensor read from the .pth file `path` (named in errors).
// Refuses, as images, more than kMaxImagePixels values. Throws MaskError.
void mask_from_tensor(const Tensor& saved, const std::string& path, PlanarImage& mask);

// True for file names with an image extension fgmoe reads (.jpeg, .jpg, .png, any case).
bool has_image_extension(const std::string& name);

}  // namespace fg::data
