// Options of the data pipeline. Field names follow the reference's config
// keys (given beside each field); what the reference hardcodes in its joint
// image+mask transform is here too, with the reference's value as default, and
// fgmoe's own options are marked as such.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace fg::data {

struct DataOptions {
  // ---- DATA ----
  int img_size = 224;  // DATA.IMG_SIZE
  // DATA.INTERPOLATION: bicubic, bilinear, random (bilinear or bicubic drawn per
  // use, as timm), or nearest, box, hamming, lanczos for resizing.
  std::string interpolation = "bicubic";
  bool masks = true;  // DATA.MASKS: read train masks

  // ---- TEST ----
  // TEST.CROP: validation resizes the shorter side to int(256/224 * IMG_SIZE)
  // and center-crops; otherwise it resizes straight to IMG_SIZE x IMG_SIZE.
  bool test_crop = true;

  // ---- AUG ----
  // AUG.COLOR_JITTER: accepted and unused, as in the reference's joint
  // transform, which always applies RandAugment and never colour jitter.
  double color_jitter = 0.4;
  std::string auto_augment = "rand-m9-mstd0.5-inc1";  // AUG.AUTO_AUGMENT ("" or "none": off)
  double reprob = 0.25;                               // AUG.REPROB
  std::string remode = "pixel";                       // AUG.REMODE: pixel, rand or const
  int recount = 1;                                    // AUG.RECOUNT
  double mixup = 0.8;                                 // AUG.MIXUP (alpha; 0 disables)
  double cutmix = 1.0;                                // AUG.CUTMIX (alpha; 0 disables)
  std::vector<double> cutmix_minmax;  // AUG.CUTMIX_MINMAX ([] = none, else {min, max})
  double mixup_prob = 1.0;            // AUG.MIXUP_PROB
  double mixup_switch_prob = 0.5;     // AUG.MIXUP_SWITCH_PROB
  std::string mixup_mode = "batch";   // AUG.MIXUP_MODE: batch, pair or elem
  // AUG.CUTMIX_MOVES_MASK (fgmoe): paste mask boxes along with image boxes.
  // The reference leaves masks unmixed, which is the default.
  bool cutmix_moves_mask = false;

  // ---- MODEL ----
  double label_smoothing = 0.1;  // MODEL.LABEL_SMOOTHING

  // ---- fixed in the reference's transform (timm defaults) ----
  double scale_min = 0.08, scale_max = 1.0;             // RandomResizedCrop scale
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;  // RandomResizedCrop ratio
  double hflip = 0.5;
  double vflip = 0.0;
  std::array<double, 3> mean = {0.485, 0.456, 0.406};  // IMAGENET_DEFAULT_MEAN
  std::array<double, 3> std = {0.229, 0.224, 0.225};   // IMAGENET_DEFAULT_STD

  // ---- fgmoe ----
  // Decode JPEGs at 1/2, 1/4 or 1/8 size in the DCT domain when the crop still
  // has at least IMG_SIZE pixels per side at that size. Much faster on large
  // images; pixels then differ slightly from the reference's (off = identical).
  bool jpeg_dct_scaling = true;
  // Decode only the rows and columns of a JPEG that the crop reads (exact).
  bool jpeg_crop_decode = true;

  // Sets a field from its config key and text value ("AUG.REPROB", "0.3");
  // lists are written "[0.2, 0.8]" or "0.2,0.8", booleans true/false/1/0.
  // Throws fg::Error naming the key for an unknown key or a value of the wrong
  // type; ranges and combinations are checked by validate() (the transforms
  // call it), so keys can be set in any order.
  void set(const std::string& key, const std::string& value);
  // Checks ranges and names; throws fg::Error naming the key.
  void validate() const;
  // The validation resize of the shorter side (int(256/224 * IMG_SIZE)).
  int eval_resize_size() const;
};

// A config value's text as a finite number, or as an int (in int's range);
// throws fg::Error naming the key and the text.
double parse_config_number(const std::string& key, const std::string& text);
int parse_config_int(const std::string& key, const std::string& text);

}  // namespace fg::data
