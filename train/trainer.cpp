#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>

#include "engine/autocast.h"
#include "engine/cuda_support.h"
#include "engine/ops.h"

namespace fg::train {

namespace fs = std::filesystem;

std::atomic<bool> Trainer::stop_requested_{false};

void Trainer::request_stop() { stop_requested_.store(true); }

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string fmt(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, value);
  return buf;
}

// Running value and average, as timm's AverageMeter.
struct Meter {
  double val = 0, sum = 0, count = 0;
  void update(double v, double n = 1) {
    val = v;
    sum += v * n;
    count += n;
  }
  double avg() const { return count > 0 ? sum / count : 0; }
  std::string str(const char* format) const { return fmt(format, val) + " (" + fmt(format, avg()) + ")"; }
};

// Top-1 and top-5 hits of logits (host copy) against labels.
void count_hits(const Tensor& logits, const Tensor& labels, int64_t& top1, int64_t& top5) {
  const std::vector<float> v = logits.to_vector<float>();
  const std::vector<int64_t> y = labels.to_vector<int64_t>();
  const int64_t classes = logits.size(1);
  const int64_t k = std::min<int64_t>(5, classes);
  for (size_t i = 0; i < y.size(); ++i) {
    FG_CHECK(y[i] >= 0 && y[i] < classes, "validation: label ", y[i], " (row ", i, ") is out of range for ",
             classes, " classes (MODEL.NUM_CLASSES)");
    const float* row = &v[i * static_cast<size_t>(classes)];
    const float target = row[y[i]];
    // Rank of the target: how many classes score strictly higher (ties favour the target's index order).
    int64_t higher = 0;
    for (int64_t c = 0; c < classes; ++c)
      if (row[c] > target || (row[c] == target && c < y[i])) ++higher;
    top1 += higher == 0;
    top5 += higher < k;
  }
}

// The values of a few scalar tensors in one read from the device.
std::vector<double> read_scalars(const std::vector<Tensor>& scalars) {
  NoGradGuard no_grad;
  std::vector<Tensor> parts;
  for (const Tensor& t : scalars) parts.push_back(t.detach().to(DType::Float64).reshape({1}));
  return concat(parts, 0).to_vector<double>();
}

Json eval_record(const EvalResult& r, int64_t epoch, double max_accuracy) {
  Json j = {{"kind", "eval"}, {"epoch", epoch},   {"acc1", r.acc1},
            {"acc5", r.acc5}, {"loss", r.loss},   {"max_accuracy", max_accuracy}};
  for (size_t l = 0; l < r.alignment.size(); ++l) {
    const std::string layer = std::to_string(r.alignment_layers[l]);
    j["alignment_q_layer" + layer] = r.alignment[l].mean_soft_iou();
    j["alignment_iou_layer" + layer] = r.alignment[l].mean_iou();
  }
  return j;
}

}  // namespace

Trainer::Trainer(Config config, Communicator& comm, std::unique_ptr<BatchSource> train_source,
                 std::unique_ptr<BatchSource> val_source)
    : config_(std::move(config)), comm_(comm), train_source_(std::move(train_source)),
      val_source_(std::move(val_source)) {
  config_.validate();
  std::string root = config_.str("OUTPUT");
  if (root.empty()) root = "output";
  output_dir_ = (fs::path(root) / config_.str("MODEL.NAME") / config_.str("TAG")).string();
  if (comm_.is_main()) {
    std::error_code ec;
    fs::create_directories(output_dir_, ec);
    FG_CHECK(!ec, "cannot create the output folder ", output_dir_, ": ", ec.message());
  }
  comm_.barrier();
  log_.open(output_dir_, comm_.is_main(), config_.str("MODEL.NAME"));
  device_ = config_.device(comm_.local_rank());

  const auto seed = static_cast<uint64_t>(config_.integer("SEED"));
  manual_seed(seed + static_cast<uint64_t>(comm_.rank()));
  // Every rank builds the same initial weights (then rank 0's are broadcast, as
  // DDP does); dropout masks differ per rank.
  model_ = std::make_unique<models::SoftMoEViT>(config_.model_config(), seed,
                                                seed + static_cast<uint64_t>(comm_.rank()) + 1);
  model_->to(device_);
  comm_.broadcast(model_->parameters(), 0);

  if (comm_.is_main()) {
    std::ofstream f(output_dir_ + "/config.json");
    f << config_.dump() << '\n';
    FG_CHECK(f.good(), "cannot write ", output_dir_, "/config.json");
  }
  log_.info("Full config saved to " + output_dir_ + "/config.json");
  const auto& mc = model_->config();
  log_.info("Creating model: " + mc.type + " (" + std::to_string(mc.depth) + " layers, width " +
            std::to_string(mc.width) + ", " + std::to_string(mc.moe_layers) + " Soft MoE layers with " +
            std::to_string(mc.num_experts) + " experts) on " + device_.str() + ", " +
            std::to_string(comm_.world_size()) + " process(es), " + comm_.backend_name());
  log_.info("number of params: " + std::to_string(model_->parameter_count()));
  log_.info("number of GFLOPs: " + fmt("%.3f", model_->forward_flops_per_image() / 1e9));
  if (bf16_autocast())
    log_.info("mixed precision: bf16 autocast (float32 weights, gradients and optimizer)");
  else if (config_.str("PRECISION") == "bf16")
    log_.warn("PRECISION bf16 applies to CUDA devices only; training on " + device_.str() + " in float32");
  setup_optimizer();
  if (comm_.world_size() > 1) {
    averager_ = std::make_unique<GradientAverager>(comm_, model_->parameters());
    log_.info("gradients averaged over " + std::to_string(comm_.world_size()) + " processes in " +
              std::to_string(averager_->bucket_count()) + " bucket(s)" +
              (comm_.overlaps_compute() ? ", overlapped with the backward pass" : ""));
  }
  if (config_.flag("TRAIN.CUDA_GRAPH")) {
    if (!device_.is_cuda())
      log_.warn("TRAIN.CUDA_GRAPH applies to CUDA devices only; training on " + device_.str() + " without graphs");
    else if (comm_.world_size() > 1)
      log_.warn("TRAIN.CUDA_GRAPH is not supported with " + std::to_string(comm_.world_size()) +
                " processes yet (the gradient all-reduce runs beside the step); training without graphs");
    else if (config_.integer("TRAIN.ACCUMULATION_STEPS") > 1)
      log_.warn("TRAIN.CUDA_GRAPH is not supported with TRAIN.ACCUMULATION_STEPS > 1 yet; training without graphs");
    else
      use_graphs_ = true;
  }
}

void Trainer::capture_graphs(const std::vector<Tensor>& batch, const GradientsFn& gradients) {
  try {
    auto g = std::make_unique<StepGraphs>();
    g->inputs = GraphInputs(batch);
    g->gradients.capture([&] { g->outputs = gradients(g->inputs.tensors()); });
    g->update.capture([&] { optimizer_->step(g->outputs.clip_coef); });
    optimizer_->zero_grad();  // the graphs keep the gradients' memory; the host lets go
    log_.info("CUDA graphs captured: " + std::to_string(g->gradients.nodes() + g->update.nodes()) + " nodes, " +
              fmt("%.0f", static_cast<double>(g->gradients.pool_bytes() + g->update.pool_bytes()) / (1 << 20)) +
              " MiB of graph memory; each step is now two launches");
    graphs_ = std::move(g);
  } catch (const Error& e) {
    optimizer_->zero_grad();  // gradients a failed capture left hold nothing
    use_graphs_ = false;
    log_.warn(std::string("TRAIN.CUDA_GRAPH: the training step could not be captured, training without graphs: ") +
              e.what());
  }
}

void Trainer::setup_optimizer() {
  std::vector<Tensor> decay, no_decay;
  model_->split_decay_groups(decay, no_decay);
  const auto betas = config_.get("TRAIN.OPTIMIZER.BETAS").get<std::vector<double>>();
  const int64_t batch = config_.integer("DATA.BATCH_SIZE");
  const int64_t world = comm_.world_size();
  const int64_t accum = config_.integer("TRAIN.ACCUMULATION_STEPS");
  schedule_.base_lr = scale_lr(config_.number("TRAIN.BASE_LR"), batch, world, accum);
  schedule_.warmup_lr = scale_lr(config_.number("TRAIN.WARMUP_LR"), batch, world, accum);
  schedule_.min_lr = scale_lr(config_.number("TRAIN.MIN_LR"), batch, world, accum);
  schedule_.warmup_prefix = config_.flag("TRAIN.LR_SCHEDULER.WARMUP_PREFIX");
  optimizer_ = std::make_unique<optim::AdamW>(
      std::vector<optim::ParamGroup>{{decay, config_.number("TRAIN.WEIGHT_DECAY")}, {no_decay, 0.0}},
      schedule_.base_lr, betas[0], betas[1], config_.number("TRAIN.OPTIMIZER.EPS"));
  if (train_source_) {
    const int64_t steps = train_source_->steps_per_epoch();
    FG_CHECK(steps > 0, "the training set gives no batch per epoch (", train_source_->dataset_size(),
             " images for a batch of ", batch, " on ", world, " process(es))");
    updates_per_epoch_ = std::max<int64_t>(1, steps / accum);
    schedule_.total_steps = config_.integer("TRAIN.EPOCHS") * updates_per_epoch_;
    schedule_.warmup_steps = config_.integer("TRAIN.WARMUP_EPOCHS") * updates_per_epoch_;
  }
}

void Trainer::resume_if_asked() {
  std::string resume = config_.str("MODEL.RESUME");
  if (config_.flag("TRAIN.AUTO_RESUME")) {
    const std::string latest = find_latest_checkpoint(output_dir_);
    if (!latest.empty()) {
      if (!resume.empty() && resume != latest)
        log_.warn("auto-resume changing resume file from " + resume + " to " + latest);
      resume = latest;
      log_.info("auto resuming from " + resume);
    } else {
      log_.info("no checkpoint found in " + output_dir_ + ", ignoring auto resume");
    }
  }
  if (!resume.empty()) {
    FG_CHECK(fs::exists(resume), "resume checkpoint not found: ", resume);
    log_.info("==============> Resuming from " + resume + "....................");
    const LoadedCheckpoint loaded = load_checkpoint(resume, *model_, optimizer_.get());
    state_ = loaded.state;
    if (!loaded.has_fgmoe_state) {
      // A reference checkpoint: its epoch is finished; the schedule continues after it.
      state_.updates = (state_.epoch + 1) * updates_per_epoch_;
    }
    if (state_.epoch_finished) {
      ++state_.epoch;
      state_.next_step = 0;
      state_.epoch_finished = false;
    }
    // The checkpoint holds rank 0's dropout stream; rank r's seed is rank 0's + r
    // (as at the start) and every rank has drawn the same number of masks.
    if (loaded.has_fgmoe_state)
      model_->dropout_generator().set_state(state_.dropout_seed + static_cast<uint64_t>(comm_.rank()),
                                            state_.dropout_offset);
    log_.info("resumed at epoch " + std::to_string(state_.epoch) + ", step " + std::to_string(state_.next_step) +
              (loaded.has_optimizer ? "" : " (no optimizer state in the checkpoint)"));
    return;
  }
  const std::string pretrained = config_.str("MODEL.PRETRAINED");
  if (!pretrained.empty()) {
    const auto report = load_weights(pretrained, *model_, false);
    log_.info("loaded pretrained weights from " + pretrained);
    if (!report.ok()) log_.warn(report.str());
  }
  state_.epoch = config_.integer("TRAIN.START_EPOCH");
}

void Trainer::save(const std::string& name) {
  if (comm_.is_main()) {
    state_.dropout_seed = model_->dropout_generator().seed();
    state_.dropout_offset = model_->dropout_generator().offset();
    const std::string path = output_dir_ + "/" + name;
    log_.info(path + " saving......");
    save_checkpoint(path, *model_, *optimizer_, schedule_, state_, config_.json().dump());
    log_.info(path + " saved !!!");
  }
  // Every rank returns only once the file is complete, so a run that ends or is
  // stopped right after never leaves a rank ahead of the checkpoint.
  comm_.barrier();
}

bool Trainer::stop_agreed() {
  if (comm_.world_size() <= 1) return stop_requested_.load();
  // A signal may reach the ranks at different steps: stop when any rank was asked.
  const std::vector<double> votes = comm_.all_reduce_sum(std::vector<double>{stop_requested_.load() ? 1.0 : 0.0});
  return votes[0] > 0;
}

bool Trainer::train_one_epoch() {
  const int64_t epoch = state_.epoch, epochs = config_.integer("TRAIN.EPOCHS");
  const int64_t num_steps = train_source_->steps_per_epoch();
  const int64_t accum = config_.integer("TRAIN.ACCUMULATION_STEPS");
  const int64_t print_freq = config_.integer("PRINT_FREQ");
  const int64_t save_steps = config_.integer("SAVE_STEPS");
  const double clip = config_.number("TRAIN.CLIP_GRAD");
  const double smoothing = config_.number("MODEL.LABEL_SMOOTHING");
  const double aux_weight = model_->config().aux_weight;
  const int64_t max_nonfinite = config_.integer("TRAIN.MAX_NONFINITE_STEPS");
  const std::vector<Tensor> params = model_->parameters();

  model_->train();
  optimizer_->zero_grad();
  train_source_->start_epoch(epoch, state_.next_step);
  Meter batch_time, loss_meter, aux_meter, norm_meter;
  const int64_t classes = model_->config().num_classes;
  const bool bf16 = bf16_autocast();
  BatchUploader uploader(device_);
  const double epoch_start = now();
  double end = now();
  double images = 0;
  Batch batch;
  for (int64_t idx = state_.next_step; idx < num_steps; ++idx) {
    // Stop only between optimizer updates, so no partly accumulated gradient is lost.
    if (idx % accum == 0 && stop_agreed()) {
      state_.next_step = idx;
      state_.epoch_finished = false;
      save("ckpt_interrupted.pth");
      stop_requested_.store(false);
      log_.warn("stopped at epoch " + std::to_string(epoch) + " step " + std::to_string(idx) +
                "; resume with the same command");
      return false;
    }
    // The previous batch's host memory goes back to the loader once its upload has run.
    uploader.release();
    FG_CHECK(train_source_->next(batch), "the training data ended after ", idx, " of ", num_steps,
             " batches in epoch ", epoch);
    const std::string where = "training batch " + std::to_string(idx) + " of epoch " + std::to_string(epoch);
    const bool use_masks = batch.masks.defined() && model_->config().aux_layer >= 0;
    // Uploads are queued, not waited for (pinned batches with DATA.PIN_MEMORY).
    const Tensor x = uploader.upload(batch.images);
    const Tensor masks = use_masks ? uploader.upload(batch.masks) : Tensor();
    const Tensor mask_valid = use_masks ? uploader.upload(batch.mask_valid) : Tensor();
    const Tensor targets = uploader.upload(batch_targets(batch, classes, smoothing, where));
    uploader.commit();
    const bool last_micro_step = (idx + 1) % accum == 0;
    // Forward, loss, backward and (at the last micro-step) the mean gradient and its norm.
    auto gradients = [&](const std::vector<Tensor>& in) {
      StepOutputs o;
      {
        AutocastGuard autocast(bf16);
        auto out = model_->forward(in[0], in[1], in[2]);
        o.loss = soft_cross_entropy(out.logits, in[3]);
        o.aux = out.aux.defined() ? out.aux : Tensor::scalar(0.0, o.loss.dtype(), o.loss.device());
        o.loss = add(o.loss, mul(o.aux, aux_weight));
      }
      if (accum > 1) o.loss = div(o.loss, static_cast<double>(accum));
      if (last_micro_step && averager_) averager_->before_backward();
      o.loss.backward();
      if (last_micro_step) {
        // The mean gradient over the ranks (buckets may already be on their way).
        if (averager_) averager_->finish();
        if (clip > 0) {
          // The update applies the clipping as it reads the gradients (no pass of its own).
          optim::ClipCoefficient c = optim::clip_coefficient(params, clip);
          o.norm = c.norm;
          o.clip_coef = c.coef;
        } else {
          o.norm = optim::grad_norm(params);
        }
      }
      return o;
    };
    const std::vector<Tensor> step_batch = {x, masks, mask_valid, targets};
    // TRAIN.CUDA_GRAPH: captured once an eager update has warmed everything up.
    if (use_graphs_ && !graphs_ && eager_update_done_) capture_graphs(step_batch, gradients);
    const bool replay = graphs_ && graphs_->inputs.fits(step_batch);
    StepOutputs outputs;
    if (replay) {
      graphs_->inputs.copy_from(step_batch);
      graphs_->gradients.replay();
      outputs = graphs_->outputs;
    } else {
      outputs = gradients(step_batch);
    }
    const Tensor &loss = outputs.loss, &aux = outputs.aux, &norm = outputs.norm;
    // The step's one wait for the device: loss, auxiliary loss and gradient norm in one read.
    const std::vector<double> values =
        read_scalars(norm.defined() ? std::vector<Tensor>{loss, aux, norm} : std::vector<Tensor>{loss, aux});
    const double loss_value = values[0];
    const double aux_value = values[1];

    if (last_micro_step) {
      const double norm_value = values[2];
      const bool finite = std::isfinite(loss_value) && std::isfinite(norm_value);
      // Every rank sees the same reduced gradients, so every rank makes the same decision.
      if (finite) {
        optimizer_->set_lr(schedule_.for_update(state_.updates));
        if (replay) {
          graphs_->update.replay();  // reads the learning rate just set
        } else {
          optimizer_->step(outputs.clip_coef);
          eager_update_done_ = true;
        }
        state_.nonfinite_streak = 0;
        norm_meter.update(norm_value);
      } else {
        ++state_.nonfinite_streak;
        ++state_.nonfinite_total;
        log_.warn("non-finite " + std::string(std::isfinite(loss_value) ? "gradient norm" : "loss") +
                  " at epoch " + std::to_string(epoch) + " step " + std::to_string(idx) +
                  ": update skipped (" + std::to_string(state_.nonfinite_streak) + " in a row, " +
                  std::to_string(state_.nonfinite_total) + " in total)");
        FG_CHECK(state_.nonfinite_streak < max_nonfinite, state_.nonfinite_streak,
                 " non-finite steps in a row (TRAIN.MAX_NONFINITE_STEPS); stopping. The last good checkpoint "
                 "in ", output_dir_, " is kept; lower TRAIN.BASE_LR or check the data");
      }
      optimizer_->zero_grad();
      ++state_.updates;
    }
    loss_meter.update(loss_value, static_cast<double>(batch.size()));
    aux_meter.update(aux_value, static_cast<double>(batch.size()));
    images += static_cast<double>(batch.size());
    batch_time.update(now() - end);
    end = now();

    if (idx % print_freq == 0 || idx == num_steps - 1) {
      const double eta = batch_time.avg() * static_cast<double>(num_steps - idx);
      const double ips = static_cast<double>(batch.size() * comm_.world_size()) / std::max(batch_time.val, 1e-9);
      log_.info("Train: [" + std::to_string(epoch) + "/" + std::to_string(epochs) + "][" + std::to_string(idx) +
                "/" + std::to_string(num_steps) + "]\teta " + format_duration(eta) + " lr " +
                fmt("%.6f", optimizer_->lr()) + "\t wd " + fmt("%.4f", config_.number("TRAIN.WEIGHT_DECAY")) +
                "\ttime " + batch_time.str("%.4f") + "\tloss " + loss_meter.str("%.4f") + "\taux " +
                aux_meter.str("%.4f") + "\tgrad_norm " + norm_meter.str("%.4f") + "\tmem " +
                fmt("%.0f", peak_host_memory_mb()) + "MB\timages/s " + fmt("%.1f", ips));
    }
    state_.next_step = idx + 1;
    if (on_step) on_step(epoch, idx);
    if (save_steps > 0 && (idx + 1) % save_steps == 0 && (idx + 1) % accum == 0 && idx + 1 < num_steps) {
      state_.epoch_finished = false;
      save("ckpt_last.pth");
    }
  }
  const double epoch_time = now() - epoch_start;
  log_.info("EPOCH " + std::to_string(epoch) + " training takes " + format_duration(epoch_time) + " (" +
            fmt("%.1f", images * comm_.world_size() / std::max(epoch_time, 1e-9)) + " images/s)");
  // Averages and data problems over all ranks (the log lines above are rank 0's own).
  std::vector<double> sums = {loss_meter.sum, loss_meter.count, aux_meter.sum, aux_meter.count};
  const std::vector<double> counts = train_source_->epoch_counts();
  sums.insert(sums.end(), counts.begin(), counts.end());
  sums = comm_.all_reduce_sum(sums);
  const double loss_avg = sums[1] > 0 ? sums[0] / sums[1] : 0.0;
  const double aux_avg = sums[3] > 0 ? sums[2] / sums[3] : 0.0;
  const std::string report = train_source_->epoch_report(epoch, std::vector<double>(sums.begin() + 4, sums.end()));
  if (!report.empty()) log_.warn(report);
  log_.metrics({{"kind", "train"}, {"epoch", epoch}, {"loss", loss_avg}, {"aux", aux_avg},
                {"grad_norm", norm_meter.avg()}, {"lr", optimizer_->lr()}, {"updates", state_.updates},
                {"epoch_seconds", epoch_time}, {"nonfinite_total", state_.nonfinite_total}});
  return true;
}

EvalResult Trainer::validate() {
  FG_CHECK(val_source_ != nullptr, "no validation data");
  NoGradGuard no_grad;
  model_->eval();
  const int64_t num_steps = val_source_->steps_per_epoch();
  const int64_t print_freq = config_.integer("PRINT_FREQ");
  val_source_->start_epoch(0, 0);
  double loss_sum = 0;
  int64_t top1 = 0, top5 = 0, samples = 0;
  Meter batch_time;
  double end = now();
  Batch batch;
  std::vector<int64_t> moe_layers;
  for (const auto& layer : model_->layers->items())
    if (layer->is_moe) moe_layers.push_back(layer->index);
  std::vector<models::AlignmentSums> alignment(moe_layers.size());
  bool have_masks = false;
  const int64_t classes = model_->config().num_classes;
  const bool bf16 = bf16_autocast();
  BatchUploader uploader(device_);
  for (int64_t idx = 0;; ++idx) {
    uploader.release();  // the previous batch's host memory, once its upload has run
    if (!val_source_->next(batch)) break;
    // Alignment needs masks: the loader marks samples that have one.
    const bool masks = batch.masks.defined() && batch.mask_valid.defined() && !moe_layers.empty() &&
                       sum(batch.mask_valid.to(DType::Int64)).item() > 0;
    const std::string where = "validation batch " + std::to_string(idx);
    // The loader's evaluation batches bring one-hot targets; other sources get them built.
    const Tensor targets = uploader.upload(batch_targets(batch, classes, 0.0, where));
    const Tensor images = uploader.upload(batch.images);
    uploader.commit();
    AutocastGuard autocast(bf16);
    const auto out = model_->forward(images, Tensor(), Tensor(), masks);
    if (masks) {
      have_masks = true;
      for (size_t l = 0; l < moe_layers.size(); ++l)
        alignment[l].merge(models::dispatch_alignment(out.dispatch[l], batch.masks, batch.mask_valid));
    }
    loss_sum += soft_cross_entropy(out.logits, targets).item() * static_cast<double>(batch.size());
    count_hits(out.logits, batch.labels, top1, top5);
    samples += batch.size();
    batch_time.update(now() - end);
    end = now();
    if (idx % print_freq == 0) {
      const double eta = batch_time.avg() * static_cast<double>(std::max<int64_t>(num_steps - idx - 1, 0));
      log_.info("Test: [" + std::to_string(idx) + "/" + std::to_string(num_steps) + "]\teta " +
                format_duration(eta) + "\tTime " + batch_time.str("%.3f") + "\tAcc@1 " +
                fmt("%.3f", 100.0 * static_cast<double>(top1) / static_cast<double>(samples)) + "\tMem " +
                fmt("%.0f", peak_host_memory_mb()) + "MB");
    }
  }
  std::vector<double> local = {loss_sum, static_cast<double>(top1), static_cast<double>(top5),
                               static_cast<double>(samples), have_masks ? 1.0 : 0.0};
  for (const auto& a : alignment) local.insert(local.end(), {a.soft_iou, a.iou, static_cast<double>(a.count)});
  const auto totals = comm_.all_reduce_sum(local);
  EvalResult r;
  if (totals[4] > 0) {
    r.alignment_layers = moe_layers;
    for (size_t l = 0; l < moe_layers.size(); ++l) {
      models::AlignmentSums a;
      a.soft_iou = totals[5 + 3 * l];
      a.iou = totals[6 + 3 * l];
      a.count = static_cast<int64_t>(totals[7 + 3 * l]);
      r.alignment.push_back(a);
    }
  }
  r.samples = static_cast<int64_t>(totals[3]);
  FG_CHECK(r.samples > 0, "the validation set is empty");
  r.loss = totals[0] / totals[3];
  r.acc1 = 100.0 * totals[1] / totals[3];
  r.acc5 = 100.0 * totals[2] / totals[3];
  log_.info(" * Acc@1 " + fmt("%.3f", r.acc1) + " Acc@5 " + fmt("%.3f", r.acc5));
  for (size_t l = 0; l < r.alignment.size(); ++l)
    log_.info(" * Alignment layer " + std::to_string(r.alignment_layers[l]) + ": q " +
              fmt("%.4f", r.alignment[l].mean_soft_iou()) + " IoU " + fmt("%.4f", r.alignment[l].mean_iou()) +
              " (" + std::to_string(r.alignment[l].count) + " masked images)");
  model_->train();
  return r;
}

double Trainer::throughput() {
  FG_CHECK(val_source_ != nullptr, "no validation data for the throughput measurement");
  NoGradGuard no_grad;
  model_->eval();
  val_source_->start_epoch(0, 0);
  Batch batch;
  FG_CHECK(val_source_->next(batch), "the validation set is empty");
  const Tensor images = batch.images.to(device_);
  AutocastGuard autocast(bf16_autocast());
  for (int i = 0; i < 50; ++i) model_->forward(images);
  backend_for(device_).synchronize();
  log_.info("throughput averaged with 30 times");
  const double t0 = now();
  for (int i = 0; i < 30; ++i) model_->forward(images);
  backend_for(device_).synchronize();
  const double ips = 30.0 * static_cast<double>(batch.size()) / (now() - t0);
  log_.info("batch_size " + std::to_string(batch.size()) + " throughput " + fmt("%.2f", ips));
  return ips;
}

int Trainer::run() {
  if (config_.flag("THROUGHPUT_MODE")) {
    throughput();
    return 0;
  }
  resume_if_asked();
  if (config_.flag("EVAL_MODE")) {
    const EvalResult r = validate();
    log_.info("Accuracy of the network on the " + std::to_string(r.samples) + " test images: " +
              fmt("%.1f", r.acc1) + "%");
    log_.metrics(eval_record(r, state_.epoch, r.acc1));
    return 0;
  }
  FG_CHECK(train_source_ != nullptr, "no training data");
  const int64_t epochs = config_.integer("TRAIN.EPOCHS");
  const int64_t save_freq = config_.integer("SAVE_FREQ");
  log_.info("Start training");
  const double start = now();
  for (; state_.epoch < epochs; ++state_.epoch) {
    if (!train_one_epoch()) return 130;
    state_.epoch_finished = true;
    state_.next_step = 0;
    const EvalResult r = validate();
    log_.info("Accuracy of the network on the " + std::to_string(r.samples) + " test images: " +
              fmt("%.1f", r.acc1) + "%");
    state_.max_accuracy = std::max(state_.max_accuracy, r.acc1);
    log_.info("Max accuracy: " + fmt("%.2f", state_.max_accuracy) + "%");
    log_.metrics(eval_record(r, state_.epoch, state_.max_accuracy));
    if (state_.epoch % save_freq == 0 || state_.epoch == epochs - 1)
      save("ckpt_epoch_" + std::to_string(state_.epoch) + ".pth");
    state_.next_step = 0;
    state_.epoch_finished = false;
  }
  log_.info("Training time " + format_duration(now() - start));
  return 0;
}

}  // namespace fg::train
