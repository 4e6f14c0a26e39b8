#include "train/checkpoint.h"

#include <charconv>
#include <cmath>
#include <filesystem>

#include "engine/serialize/pth.h"
#include "engine/serialize/safetensors.h"

namespace fg::train {

namespace fs = std::filesystem;
using serialize::Value;

namespace {

Value optimizer_value(const optim::AdamW& opt) {
  Value state = Value::dict();
  Value groups = Value::list();
  int64_t index = 0;
  size_t slot = 0;
  for (const auto& group : opt.groups()) {
    std::vector<Value> ids;
    for (size_t i = 0; i < group.params.size(); ++i, ++slot, ++index) {
      ids.emplace_back(index);
      const auto& s = opt.states()[slot];
      if (!s.exp_avg.defined()) continue;
      Value entry = Value::dict();
      entry.set("step", Tensor::scalar(static_cast<double>(s.step)));
      entry.set("exp_avg", s.exp_avg.cpu());
      entry.set("exp_avg_sq", s.exp_avg_sq.cpu());
      state.set(index, entry);
    }
    Value g = Value::dict();
    g.set("lr", opt.lr());
    g.set("betas", Value::tuple({opt.beta1(), opt.beta2()}));
    g.set("eps", opt.eps());
    g.set("weight_decay", group.weight_decay);
    g.set("amsgrad", false);
    g.set("foreach", Value());
    g.set("maximize", false);
    g.set("capturable", false);
    g.set("params", Value::list(ids));
    groups.items().push_back(g);
  }
  Value out = Value::dict();
  out.set("state", state);
  out.set("param_groups", groups);
  return out;
}

// Reads entry `name` of the checkpoint `path` with read(); an error (a missing
// key, a value of the wrong kind) names the file and the entry.
template <class F>
auto read_entry(const std::string& path, const std::string& name, F&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const Error& e) {
    throw Error(str_cat(path, ": checkpoint entry '", name, "': ", e.what()));
  }
}

// A count: an int, not negative, and far from int64's end so that the
// schedule's arithmetic on it cannot overflow.
int64_t read_count(const Value& v) {
  const int64_t n = v.as_int();
  FG_CHECK(n >= 0 && n < (int64_t{1} << 40), "expected a count, got ", n);
  return n;
}

// A generator's seed or offset, saved as decimal text (Python ints may exceed int64).
uint64_t read_u64_text(const Value& v) {
  const std::string& text = v.as_string();
  uint64_t out = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  FG_CHECK(!text.empty() && ec == std::errc() && end == text.data() + text.size(),
           "expected an unsigned 64-bit integer as text, got '", text, "'");
  return out;
}

// Errors name what is wrong; the caller adds the file.
void restore_optimizer(const Value& v, optim::AdamW& opt) {
  const Value& groups = v.at("param_groups");
  FG_CHECK(groups.items().size() == opt.groups().size(), "the optimizer has ",
           groups.items().size(), " parameter groups, this model ", opt.groups().size());
  size_t total = 0;
  for (size_t g = 0; g < opt.groups().size(); ++g) {
    const size_t n = groups.items()[g].at("params").items().size();
    FG_CHECK(n == opt.groups()[g].params.size(), "optimizer group ", g, " has ", n,
             " parameters, this model ", opt.groups()[g].params.size());
    total += n;
  }
  const Value& state = v.at("state");
  const auto& dict = state.as_dict();
  std::vector<optim::AdamW::State>& states = opt.states();
  FG_CHECK(states.size() == total, "optimizer parameter count mismatch");
  // Parameters in group order, as their indices.
  std::vector<const Tensor*> params;
  for (const auto& group : opt.groups())
    for (const Tensor& p : group.params) params.push_back(&p);
  for (size_t i = 0; i < dict.size(); ++i) {
    const auto* key = std::get_if<int64_t>(&dict.key(i));
    FG_CHECK(key && *key >= 0 && static_cast<size_t>(*key) < total,
             "optimizer state has an invalid key ", serialize::key_repr(dict.key(i)));
    const Value& entry = dict.value(i);
    const Tensor& param = *params[static_cast<size_t>(*key)];
    optim::AdamW::State& s = states[static_cast<size_t>(*key)];
    const Value& step = entry.at("step");
    // torch saves the step as a one-value tensor (a float), older versions as an int.
    double step_value = 0;
    if (step.is_tensor()) {
      FG_CHECK(step.as_tensor().numel() == 1, "the step of parameter ", *key, " has ",
               step.as_tensor().numel(), " values");
      step_value = step.as_tensor().item();
    } else {
      step_value = static_cast<double>(step.as_int());
    }
    FG_CHECK(std::isfinite(step_value) && step_value >= 0 && step_value < 0x1p40 &&
                 step_value == std::floor(step_value),
             "the step of parameter ", *key, " is ", step_value, ", not a count");
    s.step = static_cast<int64_t>(step_value);
    for (auto [name, moment] : {std::pair{"exp_avg", &s.exp_avg}, std::pair{"exp_avg_sq", &s.exp_avg_sq}}) {
      const Tensor& t = entry.at(name).as_tensor();
      FG_CHECK(t.shape() == param.shape(), "optimizer ", name, " of parameter ", *key,
               " has shape ", shape_str(t.shape()), ", the parameter ", shape_str(param.shape()));
      *moment = t.to(param.dtype()).to(param.device()).contiguous().clone();
    }
  }
}

}  // namespace

void save_checkpoint(const std::string& path, const models::SoftMoEViT& model,
                     const optim::AdamW& optimizer, const CosineSchedule& schedule,
                     const TrainState& state, const std::string& config_json) {
  StateDict sd;
  for (auto& [name, t] : model.state_dict()) sd.insert(name, t.cpu());
  Value ckpt = Value::dict();
  ckpt.set("model", serialize::state_dict_to_value(sd));
  ckpt.set("optimizer", optimizer_value(optimizer));
  // The fields of timm's CosineLRScheduler that describe this schedule.
  Value sched = Value::dict();
  sched.set("t_initial", schedule.warmup_prefix ? schedule.total_steps - schedule.warmup_steps
                                                : schedule.total_steps);
  sched.set("lr_min", schedule.min_lr);
  sched.set("warmup_t", schedule.warmup_steps);
  sched.set("warmup_lr_init", schedule.warmup_lr);
  sched.set("warmup_prefix", schedule.warmup_prefix);
  sched.set("t_in_epochs", false);
  sched.set("cycle_limit", 1);
  sched.set("base_values", Value::list({schedule.base_lr, schedule.base_lr}));
  ckpt.set("lr_scheduler", sched);
  ckpt.set("max_accuracy", state.max_accuracy);
  ckpt.set("epoch", state.epoch);
  ckpt.set("config", config_json);
  Value own = Value::dict();
  own.set("format", 1);
  own.set("next_step", state.next_step);
  own.set("epoch_finished", state.epoch_finished);
  own.set("updates", state.updates);
  own.set("nonfinite_streak", state.nonfinite_streak);
  own.set("nonfinite_total", state.nonfinite_total);
  // As strings: a seed may not fit in a signed 64-bit pickle integer.
  own.set("dropout_generator", Value::tuple({std::to_string(state.dropout_seed), std::to_string(state.dropout_offset)}));
  ckpt.set("fgmoe", own);
  serialize::save_pth(path, ckpt);
}

LoadedCheckpoint load_checkpoint(const std::string& path, models::SoftMoEViT& model,
                                 optim::AdamW* optimizer) {
  const Value ckpt = serialize::load_pth(path);
  FG_CHECK(ckpt.is_dict(), path, ": not a checkpoint (expected a dict, found ", ckpt.kind_name(), ")");
  const Value* weights = ckpt.find("model");
  FG_CHECK(weights != nullptr, path, ": the checkpoint has no 'model' entry");
  model.load_state_dict(serialize::state_dict_from_value(*weights, path + " ['model']"), true);
  LoadedCheckpoint out;
  if (const Value* e = ckpt.find("epoch")) out.state.epoch = read_entry(path, "epoch", [&] { return read_count(*e); });
  if (const Value* m = ckpt.find("max_accuracy"))
    out.state.max_accuracy = read_entry(path, "max_accuracy", [&] { return m->as_float(); });
  out.state.epoch_finished = true;  // a reference checkpoint is written after its epoch
  if (const Value* own = ckpt.find("fgmoe")) {
    out.has_fgmoe_state = true;
    auto count = [&](const char* name) {
      return read_entry(path, std::string("fgmoe.") + name, [&] { return read_count(own->at(name)); });
    };
    out.state.next_step = count("next_step");
    out.state.updates = count("updates");
    out.state.nonfinite_streak = count("nonfinite_streak");
    out.state.nonfinite_total = count("nonfinite_total");
    out.state.epoch_finished =
        read_entry(path, "fgmoe.epoch_finished", [&] { return own->at("epoch_finished").as_bool(); });
    read_entry(path, "fgmoe.dropout_generator", [&] {
      const auto& gen = own->at("dropout_generator").items();
      FG_CHECK(gen.size() == 2, "expected (seed, offset), got ", gen.size(), " values");
      out.state.dropout_seed = read_u64_text(gen[0]);
      out.state.dropout_offset = read_u64_text(gen[1]);
    });
  }
  if (optimizer) {
    if (const Value* opt = ckpt.find("optimizer")) {
      read_entry(path, "optimizer", [&] { restore_optimizer(*opt, *optimizer); });
      out.has_optimizer = true;
    }
  }
  return out;
}

std::string find_latest_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return "";
  std::string best;
  fs::file_time_type best_time{};
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".pth") continue;
    const auto t = entry.last_write_time(ec);
    if (best.empty() || t > best_time || (t == best_time && entry.path().string() > best)) {
      best = entry.path().string();
      best_time = t;
    }
  }
  return best;
}

nn::Module::LoadReport load_weights(const std::string& path, nn::Module& model, bool strict) {
  FG_CHECK(fs::exists(path), "weights file not found: ", path);
  const bool safetensors = fs::path(path).extension() == ".safetensors";
  const StateDict sd = safetensors ? serialize::load_safetensors(path) : serialize::load_state_dict_pth(path);
  return model.load_state_dict(sd, strict);
}

}  // namespace fg::train
