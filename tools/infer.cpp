// fgmoe-infer: classifies images (or a preprocessed tensor) with a trained
// model and prints the top-5 classes; optionally writes the logits.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/decode.h"
#include "data/transforms.h"
#include "engine/serialize/pth.h"
#include "train/checkpoint.h"
#include "tools/cli.h"
#include "train/config.h"

using namespace fg;
namespace fs = std::filesystem;

namespace {

void usage() {
  std::printf(
      "usage: fgmoe-infer (--cfg FILE.json | --model PRESET --num-classes N) --weights FILE\n"
      "                   [IMAGE|FOLDER ...] [--input-tensor FILE.pth] [options]\n"
      "\n"
      "Classifies JPEG/PNG images (the validation transform: shorter side to 256/224 of the\n"
      "input size, bicubic, center crop, normalize) and prints the top-5 classes.\n"
      "\n"
      "  --cfg FILE.json        a trainer config (model and data keys)\n"
      "  --model PRESET         soft_moe_32, soft_moe_128 or vit (with --num-classes)\n"
      "  --num-classes N        number of classes for --model\n"
      "  --image-size N         input resolution for --model (default 224)\n"
      "  --weights FILE         fgmoe checkpoint, a state dict or {'model': ...} .pth from\n"
      "                         torch.save, or .safetensors\n"
      "  --classes FILE         class names, one per line (default: the sorted class folders\n"
      "                         of --data-path DIR/train, else class indices)\n"
      "  --data-path DIR        dataset root whose train/ folders name the classes\n"
      "  --input-tensor FILE    a preprocessed (N, 3, H, W) float tensor saved by torch.save\n"
      "  --dump-logits FILE     write the logits as a (N, classes) float32 tensor (torch.load reads it)\n"
      "  --batch-size N         images per forward pass (default 32)\n"
      "  --device D             cpu or cuda (default: cuda when present)\n"
      "  --top K                classes to print per image (default 5)\n");
}

std::vector<std::string> collect_images(const std::vector<std::string>& inputs) {
  std::vector<std::string> out;
  for (const auto& in : inputs) {
    FG_CHECK(fs::exists(in), "no such file or folder: ", in);
    if (fs::is_directory(in)) {
      std::vector<std::string> found;
      for (const auto& e : fs::recursive_directory_iterator(in))
        if (e.is_regular_file() && data::has_image_extension(e.path().filename().string()))
          found.push_back(e.path().string());
      std::sort(found.begin(), found.end());
      FG_CHECK(!found.empty(), "no JPEG or PNG image in ", in);
      out.insert(out.end(), found.begin(), found.end());
    } else {
      out.push_back(in);
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string cfg_file, preset, weights, classes_file, data_path, input_tensor, dump_logits;
    std::string device_name = cuda_available() ? "cuda" : "cpu";
    int64_t num_classes = 0, image_size = 224, batch_size = 32, top = 5;
    std::vector<std::string> inputs;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&] { return tools::option_value(argc, argv, i); };
      auto number = [&] { return tools::option_integer(a, value(), 1); };
      if (a == "-h" || a == "--help") { usage(); return 0; }
      else if (a == "--cfg") cfg_file = value();
      else if (a == "--model") preset = value();
      else if (a == "--num-classes") num_classes = number();
      else if (a == "--image-size") image_size = number();
      else if (a == "--weights") weights = value();
      else if (a == "--classes") classes_file = value();
      else if (a == "--data-path") data_path = value();
      else if (a == "--input-tensor") input_tensor = value();
      else if (a == "--dump-logits") dump_logits = value();
      else if (a == "--batch-size") batch_size = number();
      else if (a == "--device") device_name = value();
      else if (a == "--top") top = number();
      else if (a.rfind("--", 0) == 0) FG_CHECK(false, "unknown option ", a, " (see --help)");
      else inputs.push_back(a);
    }
    FG_CHECK(!weights.empty(), "--weights FILE is required (see --help)");
    FG_CHECK(!inputs.empty() || !input_tensor.empty(), "nothing to classify: give images, folders or --input-tensor");

    const train::Config config = train::Config::for_model(cfg_file, preset, num_classes, image_size);
    const models::ModelConfig mc = config.model_config();
    models::SoftMoEViT model(mc);
    const auto report = train::load_weights(weights, model, true);
    (void)report;
    const Device device = Device::parse(device_name);
    model.to(device);
    model.eval();

    std::vector<std::string> class_names;
    if (!classes_file.empty()) {
      class_names = tools::read_lines(classes_file);
    } else if (!data_path.empty()) {
      class_names = data::ImageFolderDataset::scan(data_path, "train").classes();
    }
    if (!class_names.empty())
      FG_CHECK(static_cast<int64_t>(class_names.size()) == mc.num_classes, class_names.size(),
               " class names for a model with ", mc.num_classes, " classes");
    auto name_of = [&](int64_t c) { return class_names.empty() ? "class " + std::to_string(c) : class_names[c]; };

    std::vector<Tensor> all_logits;
    std::vector<std::string> labels;
    auto classify = [&](const Tensor& images) {
      NoGradGuard no_grad;
      all_logits.push_back(model.forward(images.to(device)).logits.cpu());
    };
    if (!input_tensor.empty()) {
      Tensor x = serialize::load_tensor_pth(input_tensor).to(DType::Float32).contiguous();
      FG_CHECK(x.dim() == 4 && x.size(1) == mc.num_channels && x.size(2) == mc.image_size && x.size(3) == mc.image_size,
               input_tensor, ": expected a (N, ", mc.num_channels, ", ", mc.image_size, ", ", mc.image_size,
               ") tensor, got ", shape_str(x.shape()));
      for (int64_t s = 0; s < x.size(0); s += batch_size) {
        classify(x.slice(0, s, std::min(s + batch_size, x.size(0))));
        for (int64_t i = s; i < std::min(s + batch_size, x.size(0)); ++i)
          labels.push_back(input_tensor + "[" + std::to_string(i) + "]");
      }
    }
    if (!inputs.empty()) {
      data::DataOptions options;
      options.img_size = static_cast<int>(mc.image_size);
      options.interpolation = config.str("DATA.INTERPOLATION");
      options.test_crop = config.flag("TEST.CROP");
      const data::EvalTransform transform(options);
      data::TransformWorkspace ws;
      const std::vector<std::string> paths = collect_images(inputs);
      const int64_t s = mc.image_size, plane = 3 * s * s;
      for (size_t start = 0; start < paths.size(); start += static_cast<size_t>(batch_size)) {
        const size_t end = std::min(paths.size(), start + static_cast<size_t>(batch_size));
        Tensor batch = Tensor::empty({static_cast<int64_t>(end - start), 3, s, s});
        for (size_t i = start; i < end; ++i) {
          try {
            data::read_file(paths[i], ws.image_bytes);
            data::SampleOutput out{batch.data<float>() + static_cast<int64_t>(i - start) * plane, nullptr};
            transform(ws.image_bytes.data(), ws.image_bytes.size(), nullptr, out, ws);
          } catch (const std::exception& e) {
            FG_CHECK(false, "cannot read image ", paths[i], ": ", e.what());
          }
          labels.push_back(paths[i]);
        }
        classify(batch);
      }
    }
    const Tensor logits = concat(all_logits, 0);
    const Tensor probs = softmax(logits, -1);
    const std::vector<float> p = probs.to_vector<float>();
    const int64_t classes = logits.size(1), k = std::min(top, classes);
    for (int64_t i = 0; i < logits.size(0); ++i) {
      std::vector<int64_t> order(static_cast<size_t>(classes));
      for (int64_t c = 0; c < classes; ++c) order[c] = c;
      const float* row = &p[static_cast<size_t>(i * classes)];
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int64_t a, int64_t b) { return row[a] > row[b]; });
      std::printf("%s\n", labels[static_cast<size_t>(i)].c_str());
      for (int64_t r = 0; r < k; ++r)
        std::printf("  %d. %-24s %6.2f%%\n", static_cast<int>(r + 1), name_of(order[r]).c_str(),
                    100.0 * row[order[r]]);
    }
    if (!dump_logits.empty()) {
      serialize::save_tensor_pth(dump_logits, logits);
      std::printf("logits (%lld x %lld) written to %s\n", static_cast<long long>(logits.size(0)),
                  static_cast<long long>(classes), dump_logits.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fgmoe-infer: error: %s\n", e.what());
    return 1;
  }
}
