#include "train/config.h"

#include <fstream>
#include <iterator>
#include <sstream>

#include "engine/error.h"

namespace fg::train {

Json default_config() {
  Json c;
  c["DATA"] = {{"BATCH_SIZE", 128},        {"DATA_PATH", ""},        {"DATASET", "imagenet"},
               {"IMG_SIZE", 224},          {"INTERPOLATION", "bicubic"}, {"PIN_MEMORY", true},
               {"NUM_WORKERS", 8},         {"PREFETCH", 4},          {"MASKS", true},
               {"JPEG_DCT_SCALING", true}};
  c["MODEL"] = {{"TYPE", "soft_moe_32"},  {"NAME", "soft_moe_32"}, {"PRETRAINED", ""},
                {"RESUME", ""},           {"NUM_CLASSES", 1000},   {"LABEL_SMOOTHING", 0.1}};
  c["MODEL"]["SOFT_MOE"] = {
      {"PATCH_SIZE", 16},        {"IN_CHANS", 3},          {"EMBED_DIM", 384},
      {"DEPTH", 8},              {"NUM_HEADS", 6},         {"MLP_DIM", 2048},
      {"MOE_LAYERS", 2},         {"NUM_EXPERTS", -1},      {"SLOTS_PER_EXPERT", 1},
      {"DROPOUT", 0.1},          {"EMBED_DROPOUT", 0.0},   {"LAYER_SCALE_LAYERS", Json::array({7})},
      {"LAYER_SCALE_INIT", 0.0}, {"AUX_LAYER", 7},         {"AUX_WEIGHT", 0.01},
      {"AUX_VARIANT", "front"},  {"IDENTICAL_LAYER_INIT", true}};
  c["TRAIN"] = {{"START_EPOCH", 0},     {"EPOCHS", 300},        {"WARMUP_EPOCHS", 20},
                {"WEIGHT_DECAY", 0.05}, {"BASE_LR", 5e-4},      {"WARMUP_LR", 5e-7},
                {"MIN_LR", 5e-6},       {"CLIP_GRAD", 5.0},     {"AUTO_RESUME", true},
                {"ACCUMULATION_STEPS", 1}, {"MAX_NONFINITE_STEPS", 20}, {"CUDA_GRAPH", false}};
  c["TRAIN"]["LR_SCHEDULER"] = {{"NAME", "cosine"}, {"WARMUP_PREFIX", true}};
  c["TRAIN"]["OPTIMIZER"] = {{"NAME", "adamw"}, {"EPS", 1e-8}, {"BETAS", Json::array({0.9, 0.999})}};
  c["AUG"] = {{"COLOR_JITTER", 0.4},      {"AUTO_AUGMENT", "rand-m9-mstd0.5-inc1"},
              {"REPROB", 0.25},           {"REMODE", "pixel"},
              {"RECOUNT", 1},             {"MIXUP", 0.8},
              {"CUTMIX", 1.0},            {"CUTMIX_MINMAX", Json::array()},
              {"MIXUP_PROB", 1.0},        {"MIXUP_SWITCH_PROB", 0.5},
              {"MIXUP_MODE", "batch"},    {"CUTMIX_MOVES_MASK", false}};
  c["TEST"] = {{"CROP", true}, {"SEQUENTIAL", false}, {"SHUFFLE", false}};
  c["OUTPUT"] = "";
  c["TAG"] = "default";
  c["SAVE_FREQ"] = 20;
  c["SAVE_STEPS"] = 0;
  c["PRINT_FREQ"] = 10;
  c["SEED"] = 20030605;
  c["EVAL_MODE"] = false;
  c["THROUGHPUT_MODE"] = false;
  c["DEVICE"] = "auto";
  c["PRECISION"] = "fp32";
  return c;
}

std::vector<std::pair<std::string, std::string>> config_key_docs() {
  return {
      {"DATA.BATCH_SIZE", "images per batch on each process"},
      {"DATA.DATA_PATH", "dataset root: train/, val/, train_mask/ (set by --data-path)"},
      {"DATA.DATASET", "dataset name, for logs only"},
      {"DATA.IMG_SIZE", "input resolution (square)"},
      {"DATA.INTERPOLATION", "resize interpolation: bicubic or bilinear"},
      {"DATA.PIN_MEMORY", "assemble batches in pinned host memory when CUDA is present"},
      {"DATA.NUM_WORKERS", "decoding and augmentation threads"},
      {"DATA.PREFETCH", "batches prepared ahead of the training step"},
      {"DATA.MASKS", "read foreground masks from train_mask/ (needed for the auxiliary loss)"},
      {"DATA.JPEG_DCT_SCALING", "decode a JPEG at 1/2, 1/4 or 1/8 size when the crop keeps IMG_SIZE pixels per "
                                "side there (faster on large images; false: pixels exactly as the reference's)"},
      {"MODEL.TYPE", "soft_moe_32 (the paper's model), soft_moe_128 or vit (dense baseline)"},
      {"MODEL.NAME", "run name; the output folder is OUTPUT/NAME/TAG"},
      {"MODEL.PRETRAINED", "weights to start from (.pth state dict, checkpoint or .safetensors)"},
      {"MODEL.RESUME", "checkpoint to resume from (set by --resume)"},
      {"MODEL.NUM_CLASSES", "number of classes"},
      {"MODEL.LABEL_SMOOTHING", "label smoothing of the classification loss"},
      {"MODEL.SOFT_MOE.PATCH_SIZE", "patch size"},
      {"MODEL.SOFT_MOE.IN_CHANS", "image channels"},
      {"MODEL.SOFT_MOE.EMBED_DIM", "transformer width"},
      {"MODEL.SOFT_MOE.DEPTH", "encoder layers"},
      {"MODEL.SOFT_MOE.NUM_HEADS", "attention heads"},
      {"MODEL.SOFT_MOE.MLP_DIM", "FFN hidden width"},
      {"MODEL.SOFT_MOE.MOE_LAYERS", "how many of the last layers use Soft MoE"},
      {"MODEL.SOFT_MOE.NUM_EXPERTS", "experts per Soft MoE layer (-1: the preset's)"},
      {"MODEL.SOFT_MOE.SLOTS_PER_EXPERT", "slots per expert"},
      {"MODEL.SOFT_MOE.DROPOUT", "dropout inside the encoder layers"},
      {"MODEL.SOFT_MOE.EMBED_DROPOUT", "dropout after the position embedding"},
      {"MODEL.SOFT_MOE.LAYER_SCALE_LAYERS", "layers with LayerScale (gamma_2) on the FFN skip path; [] disables"},
      {"MODEL.SOFT_MOE.LAYER_SCALE_INIT", "initial value of gamma_2"},
      {"MODEL.SOFT_MOE.AUX_LAYER", "Soft MoE layer feeding the foreground-guided loss; -1 disables"},
      {"MODEL.SOFT_MOE.AUX_WEIGHT", "loss = classification + AUX_WEIGHT * aux"},
      {"MODEL.SOFT_MOE.AUX_VARIANT", "front (foreground) or back (background)"},
      {"MODEL.SOFT_MOE.IDENTICAL_LAYER_INIT", "start all layers from one template's weights, as the reference"},
      {"TRAIN.START_EPOCH", "first epoch (set by resuming)"},
      {"TRAIN.EPOCHS", "training epochs"},
      {"TRAIN.WARMUP_EPOCHS", "linear warm-up epochs"},
      {"TRAIN.WEIGHT_DECAY", "AdamW weight decay (not on 1-D parameters and biases)"},
      {"TRAIN.BASE_LR", "peak learning rate for a total batch of 512 (scaled linearly)"},
      {"TRAIN.WARMUP_LR", "learning rate at the start of warm-up, for a total batch of 512"},
      {"TRAIN.MIN_LR", "final learning rate, for a total batch of 512"},
      {"TRAIN.CLIP_GRAD", "gradient-norm clipping threshold; 0 disables"},
      {"TRAIN.AUTO_RESUME", "resume from the newest checkpoint in the output folder"},
      {"TRAIN.ACCUMULATION_STEPS", "micro-batches per optimizer step"},
      {"TRAIN.MAX_NONFINITE_STEPS", "stop after this many non-finite steps in a row"},
      {"TRAIN.CUDA_GRAPH", "one GPU, ACCUMULATION_STEPS 1: replay each step from CUDA graphs captured "
                           "after the first update (fewer launches; same numbers)"},
      {"TRAIN.LR_SCHEDULER.NAME", "cosine"},
      {"TRAIN.LR_SCHEDULER.WARMUP_PREFIX", "cosine decay starts after warm-up"},
      {"TRAIN.OPTIMIZER.NAME", "adamw"},
      {"TRAIN.OPTIMIZER.EPS", "AdamW epsilon"},
      {"TRAIN.OPTIMIZER.BETAS", "AdamW betas"},
      {"AUG.COLOR_JITTER", "colour jitter strength (unused when AUTO_AUGMENT is set, as timm)"},
      {"AUG.AUTO_AUGMENT", "RandAugment policy, e.g. rand-m9-mstd0.5-inc1; empty disables"},
      {"AUG.REPROB", "RandomErasing probability"},
      {"AUG.REMODE", "RandomErasing fill: pixel, rand or const"},
      {"AUG.RECOUNT", "RandomErasing boxes"},
      {"AUG.MIXUP", "mixup alpha; 0 disables"},
      {"AUG.CUTMIX", "cutmix alpha; 0 disables"},
      {"AUG.CUTMIX_MINMAX", "cutmix box ratio bounds [min, max]; [] uses alpha"},
      {"AUG.MIXUP_PROB", "probability of mixing a batch"},
      {"AUG.MIXUP_SWITCH_PROB", "probability of cutmix instead of mixup"},
      {"AUG.MIXUP_MODE", "batch (one lambda per batch)"},
      {"AUG.CUTMIX_MOVES_MASK", "also paste mask boxes with cutmix (the reference leaves masks unmixed)"},
      {"TEST.CROP", "validation: resize to IMG_SIZE/0.875 then center crop"},
      {"TEST.SEQUENTIAL", "validation order is sequential"},
      {"TEST.SHUFFLE", "shuffle validation"},
      {"OUTPUT", "output root (set by --output)"},
      {"TAG", "run tag (set by --tag)"},
      {"SAVE_FREQ", "checkpoint every this many epochs (and at the end)"},
      {"SAVE_STEPS", "also checkpoint (ckpt_last.pth) every this many steps inside an epoch; 0 disables"},
      {"PRINT_FREQ", "log a line every this many steps"},
      {"SEED", "random seed (the rank is added)"},
      {"EVAL_MODE", "evaluate only (set by --eval)"},
      {"THROUGHPUT_MODE", "measure inference throughput only (set by --throughput)"},
      {"DEVICE", "auto, cpu or cuda"},
      {"PRECISION", "fp32 or bf16 (mixed precision on CUDA)"},
  };
}

namespace {

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream ss(key);
  std::string part;
  while (std::getline(ss, part, '.')) parts.push_back(part);
  return parts;
}

const char* type_name(const Json& v) {
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "a list";
  if (v.is_object()) return "a group";
  return "null";
}

// Whether value may replace a default of the same key (integers are valid numbers).
bool same_type(const Json& def, const Json& value) {
  if (def.is_number_float()) return value.is_number();
  if (def.is_number_integer()) return value.is_number_integer();
  if (def.is_boolean()) return value.is_boolean();
  if (def.is_string()) return value.is_string();
  if (def.is_array()) return value.is_array();
  if (def.is_object()) return value.is_object();
  return false;
}

void merge_into(Json& target, const Json& patch, const std::string& prefix, const std::string& source) {
  FG_CHECK(patch.is_object(), source, ": expected a JSON object", prefix.empty() ? "" : " at ", prefix);
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    FG_CHECK(target.contains(it.key()), source, ": unknown config key ", key);
    Json& slot = target[it.key()];
    FG_CHECK(same_type(slot, it.value()), source, ": config key ", key, " must be ", type_name(slot),
             ", got ", it.value().dump());
    if (slot.is_object()) merge_into(slot, it.value(), key, source);
    else slot = it.value().is_number() && slot.is_number_float() ? Json(it.value().get<double>()) : it.value();
  }
}

}  // namespace

void Config::merge_file(const std::string& path) {
  std::ifstream in(path);
  FG_CHECK(in.good(), "cannot read config file ", path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  FG_CHECK(!in.bad(), "cannot read config file ", path);
  merge_text(text, path);
}

void Config::merge_text(const std::string& text, const std::string& source) {
  Json patch;
  try {
    patch = Json::parse(text, nullptr, true, /*ignore_comments=*/true);
  } catch (const Json::exception& e) {  // a syntax error, or a number past double's range
    FG_CHECK(false, source, ": invalid JSON: ", e.what());
  }
  merge_json(patch, source);
}

void Config::merge_json(const Json& patch, const std::string& source) { merge_into(root_, patch, "", source); }

const Json& Config::get(const std::string& key) const {
  const Json* node = &root_;
  for (const auto& part : split_key(key)) {
    FG_CHECK(node->is_object() && node->contains(part), "unknown config key ", key);
    node = &(*node)[part];
  }
  return *node;
}

void Config::set(const std::string& key, const Json& value) {
  const auto parts = split_key(key);
  FG_CHECK(!parts.empty(), "empty config key");
  Json patch = value;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) patch = Json{{*it, patch}};
  merge_json(patch, "--opts");
}

void Config::set_from_string(const std::string& key, const std::string& text) {
  const Json& current = get(key);
  Json value;
  if (current.is_string()) {
    value = text;
  } else {
    // Numbers, booleans and lists as JSON; Python-style True/False/None accepted too.
    std::string t = text;
    if (t == "True") t = "true";
    if (t == "False") t = "false";
    try {
      value = Json::parse(t);
    } catch (const Json::exception&) {  // a syntax error, or a number past double's range
      FG_CHECK(false, "--opts: config key ", key, " must be ", type_name(current), ", got '", text, "'");
    }
  }
  set(key, value);
}

models::ModelConfig Config::model_config() const {
  models::ModelConfig m = models::model_preset(str("MODEL.TYPE"), integer("MODEL.NUM_CLASSES"));
  const Json& s = get("MODEL.SOFT_MOE");
  m.image_size = integer("DATA.IMG_SIZE");
  m.patch_size = s["PATCH_SIZE"].get<int64_t>();
  m.num_channels = s["IN_CHANS"].get<int64_t>();
  m.width = s["EMBED_DIM"].get<int64_t>();
  m.depth = s["DEPTH"].get<int64_t>();
  m.heads = s["NUM_HEADS"].get<int64_t>();
  m.ffn_width = s["MLP_DIM"].get<int64_t>();
  if (m.type != "vit") m.moe_layers = s["MOE_LAYERS"].get<int64_t>();
  if (s["NUM_EXPERTS"].get<int64_t>() > 0) m.num_experts = s["NUM_EXPERTS"].get<int64_t>();
  m.slots_per_expert = s["SLOTS_PER_EXPERT"].get<int64_t>();
  m.dropout = s["DROPOUT"].get<double>();
  m.embed_dropout = s["EMBED_DROPOUT"].get<double>();
  m.layer_scale_layers = s["LAYER_SCALE_LAYERS"].get<std::vector<int64_t>>();
  m.layer_scale_init = s["LAYER_SCALE_INIT"].get<double>();
  m.aux_layer = m.moe_layers > 0 ? s["AUX_LAYER"].get<int64_t>() : -1;
  m.aux_weight = s["AUX_WEIGHT"].get<double>();
  const std::string variant = s["AUX_VARIANT"].get<std::string>();
  FG_CHECK(variant == "front" || variant == "back", "config key MODEL.SOFT_MOE.AUX_VARIANT must be front or back, got '",
           variant, "'");
  m.aux_foreground = variant == "front";
  m.identical_layer_init = s["IDENTICAL_LAYER_INIT"].get<bool>();
  if (m.type == "vit") {
    m.layer_scale_layers.clear();
    m.aux_layer = -1;
  }
  return m;
}

void Config::validate() const {
  auto positive = [&](const char* key) {
    FG_CHECK(get(key).get<double>() > 0, "config key ", key, " must be positive, got ", get(key).dump());
  };
  positive("DATA.BATCH_SIZE");
  positive("DATA.IMG_SIZE");
  positive("TRAIN.ACCUMULATION_STEPS");
  positive("SAVE_FREQ");
  positive("PRINT_FREQ");
  FG_CHECK(integer("TRAIN.EPOCHS") >= 0, "config key TRAIN.EPOCHS must not be negative");
  FG_CHECK(integer("DATA.NUM_WORKERS") >= 0, "config key DATA.NUM_WORKERS must not be negative");
  FG_CHECK(str("TRAIN.OPTIMIZER.NAME") == "adamw", "config key TRAIN.OPTIMIZER.NAME: only adamw is supported, got '",
           str("TRAIN.OPTIMIZER.NAME"), "'");
  FG_CHECK(str("TRAIN.LR_SCHEDULER.NAME") == "cosine",
           "config key TRAIN.LR_SCHEDULER.NAME: only cosine is supported, got '", str("TRAIN.LR_SCHEDULER.NAME"), "'");
  FG_CHECK(get("TRAIN.OPTIMIZER.BETAS").size() == 2, "config key TRAIN.OPTIMIZER.BETAS must hold two numbers");
  const std::string precision = str("PRECISION");
  FG_CHECK(precision == "fp32" || precision == "bf16", "config key PRECISION must be fp32 or bf16, got '",
           precision, "'");
  const std::string device = str("DEVICE");
  FG_CHECK(device == "auto" || device == "cpu" || device.rfind("cuda", 0) == 0,
           "config key DEVICE must be auto, cpu or cuda, got '", device, "'");
  FG_CHECK(str("AUG.MIXUP_MODE") == "batch", "config key AUG.MIXUP_MODE: only batch is supported");
  model_config().validate();
}


Config Config::for_model(const std::string& cfg_file, const std::string& preset, int64_t num_classes,
                         int64_t image_size) {
  FG_CHECK(cfg_file.empty() != preset.empty(), "give either --cfg FILE.json or --model PRESET (see --help)");
  Config config;
  if (!cfg_file.empty()) {
    config.merge_file(cfg_file);
  } else {
    FG_CHECK(num_classes > 0, "--model needs --num-classes N");
    config.set("MODEL.TYPE", preset);
    config.set("MODEL.NUM_CLASSES", num_classes);
    config.set("DATA.IMG_SIZE", image_size);
  }
  return config;
}

Device Config::device(int local_rank) const {
  const std::string name = str("DEVICE");
  if (name == "auto") return cuda_available() ? Device(DeviceType::CUDA, local_rank) : kCPU;
  Device d = Device::parse(name);
  if (d.is_cuda() && name == "cuda") d.index = local_rank;
  if (d.is_cuda())
    FG_CHECK(cuda_available(), "DEVICE is ", name, " but ",
             cuda_compiled() ? "no CUDA GPU was found" : "fgmoe was built without CUDA");
  return d;
}

}  // namespace fg::train
