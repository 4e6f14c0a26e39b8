#include "train/data_sources.h"

#include <filesystem>

#include "data/loader.h"

namespace fg::train {

namespace {

class LoaderSource : public BatchSource {
 public:
  explicit LoaderSource(std::unique_ptr<data::DataLoader> loader) : loader_(std::move(loader)) {}
  int64_t steps_per_epoch() const override { return loader_->steps_per_epoch(); }
  int64_t dataset_size() const override { return loader_->dataset().size(); }
  void start_epoch(int64_t epoch, int64_t first_step) override { loader_->start_epoch(epoch, first_step); }
  bool next(Batch& batch) override {
    std::optional<data::Batch> b = loader_->next();
    if (!b) return false;
    batch.images = b->images;
    batch.labels = b->labels;
    batch.targets = b->targets;
    batch.masks = b->masks;
    batch.mask_valid = b->mask_valid;
    return true;
  }
  std::vector<double> epoch_counts() override {
    const data::EpochStats s = loader_->stats();
    return {static_cast<double>(s.corrupt_images), static_cast<double>(s.unreadable_masks),
            static_cast<double>(s.missing_masks)};
  }
  std::string epoch_report(int64_t epoch, const std::vector<double>& counts) override {
    if (counts.size() != 3 || (counts[0] == 0 && counts[1] == 0 && counts[2] == 0)) return "";
    auto n = [](double v) { return std::to_string(static_cast<int64_t>(v)); };
    return "epoch " + std::to_string(epoch) + " data: " + n(counts[0]) + " unreadable images and " + n(counts[1]) +
           " unreadable masks replaced by other samples; " + n(counts[2]) +
           " images without a mask trained without the foreground term";
  }

 private:
  std::unique_ptr<data::DataLoader> loader_;
};

std::string text_of(const Json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

data::DataOptions data_options(const Config& c) {
  data::DataOptions o;
  for (const char* key : {"DATA.IMG_SIZE", "DATA.INTERPOLATION", "DATA.MASKS", "DATA.JPEG_DCT_SCALING", "TEST.CROP", "AUG.COLOR_JITTER",
                          "AUG.AUTO_AUGMENT", "AUG.REPROB", "AUG.REMODE", "AUG.RECOUNT", "AUG.MIXUP",
                          "AUG.CUTMIX", "AUG.CUTMIX_MINMAX", "AUG.MIXUP_PROB", "AUG.MIXUP_SWITCH_PROB",
                          "AUG.MIXUP_MODE", "AUG.CUTMIX_MOVES_MASK", "MODEL.LABEL_SMOOTHING"})
    o.set(key, text_of(c.get(key)));
  o.validate();
  return o;
}

}  // namespace

DataSources make_data_sources(const Config& config, const Communicator& comm, bool need_train) {
  const std::string root = config.str("DATA.DATA_PATH");
  FG_CHECK(!root.empty(), "no dataset: give --data-path DIR (a folder with train/ and val/)");
  FG_CHECK(std::filesystem::is_directory(root), "dataset folder not found: ", root);
  const data::DataOptions options = data_options(config);
  const bool masks = config.flag("DATA.MASKS");
  auto train_set = std::make_shared<const data::ImageFolderDataset>(
      data::ImageFolderDataset::scan(root, "train", masks ? "train_mask" : ""));
  // Validation masks (val_mask/) are optional; with them, validation also measures
  // how well the dispatch weights align with the foreground.
  const bool val_masks = std::filesystem::is_directory(std::filesystem::path(root) / "val_mask");
  auto val_set = std::make_shared<const data::ImageFolderDataset>(
      data::ImageFolderDataset::scan(root, "val", val_masks ? "val_mask" : "", &train_set->classes()));
  DataSources out;
  out.num_classes = train_set->num_classes();
  FG_CHECK(out.num_classes == config.integer("MODEL.NUM_CLASSES"), "the dataset in ", root, " has ",
           out.num_classes, " classes but MODEL.NUM_CLASSES is ", config.integer("MODEL.NUM_CLASSES"),
           " (set it with --opts MODEL.NUM_CLASSES ", out.num_classes, ")");
  if (masks && need_train && comm.is_main() && train_set->images_without_mask() > 0)
    std::fprintf(stderr, "fgmoe: %lld of %lld training images have no mask in %s/train_mask; they train "
                 "without the foreground term\n", static_cast<long long>(train_set->images_without_mask()),
                 static_cast<long long>(train_set->size()), root.c_str());

  data::LoaderOptions lo;
  lo.batch_size = config.integer("DATA.BATCH_SIZE");
  lo.num_workers = static_cast<int>(config.integer("DATA.NUM_WORKERS"));
  lo.prefetch = static_cast<int>(config.integer("DATA.PREFETCH"));
  lo.rank = comm.rank();
  lo.world_size = comm.world_size();
  lo.seed = static_cast<uint64_t>(config.integer("SEED"));
  // Batches in page-locked memory when they will go to a GPU (DATA.PIN_MEMORY).
  if (config.flag("DATA.PIN_MEMORY") && config.device(comm.local_rank()).is_cuda())
    lo.allocator = data::pinned_host_allocator();
  if (need_train) {
    lo.train = true;
    lo.shuffle = true;
    lo.drop_last = true;
    out.train = std::make_unique<LoaderSource>(std::make_unique<data::DataLoader>(train_set, options, lo));
  }
  data::LoaderOptions vo = lo;
  vo.train = false;
  vo.shuffle = config.flag("TEST.SHUFFLE");
  vo.drop_last = false;
  vo.apply_mixup = false;
  out.val = std::make_unique<LoaderSource>(std::make_unique<data::DataLoader>(val_set, options, vo));
  return out;
}

}  // namespace fg::train
