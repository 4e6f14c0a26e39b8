// The trainer's configuration: the reference's grouping and key names (DATA,
// MODEL, TRAIN, AUG, TEST and top-level keys), its defaults, read from JSON and
// overridden by command-line flags and --opts KEY VALUE pairs. An unknown key
// or a value of the wrong type stops with a message naming the key.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/soft_moe_vit.h"

namespace fg::train {

using Json = nlohmann::ordered_json;

// Every key with its default value; the type of a default is the key's type.
Json default_config();

// One line of documentation per key, for --help.
std::vector<std::pair<std::string, std::string>> config_key_docs();

class Config {
 public:
  Config() : root_(default_config()) {}
  // Merges a JSON file (keys must exist in the defaults). `source` names it in errors.
  void merge_file(const std::string& path);
  // The same for a config file's text (JSON, comments allowed).
  void merge_text(const std::string& text, const std::string& source);
  // The config of a command-line tool's model: the trainer config file when
  // given, else the preset with its class count and image size.
  static Config for_model(const std::string& cfg_file, const std::string& preset, int64_t num_classes,
                          int64_t image_size);
  void merge_json(const Json& patch, const std::string& source);
  // Sets KEY (dotted, e.g. TRAIN.BASE_LR) from its text form, parsed as the key's type.
  void set_from_string(const std::string& key, const std::string& value);
  // Sets KEY to a JSON value of the key's type.
  void set(const std::string& key, const Json& value);

  const Json& get(const std::string& key) const;
  std::string str(const std::string& key) const { return get(key).get<std::string>(); }
  int64_t integer(const std::string& key) const { return get(key).get<int64_t>(); }
  double number(const std::string& key) const { return get(key).get<double>(); }
  bool flag(const std::string& key) const { return get(key).get<bool>(); }

  const Json& json() const { return root_; }
  std::string dump() const { return root_.dump(2); }
  // The model configuration these keys describe (MODEL.TYPE preset, then MODEL.SOFT_MOE overrides).
  models::ModelConfig model_config() const;
  // Checks cross-key constraints; throws naming the keys.
  void validate() const;
  // The device DEVICE names for the process with this local rank ("auto": its
  // GPU when there is one, else the CPU; "cuda": the local rank's GPU).
  Device device(int local_rank) const;

 private:
  Json root_;
};

}  // namespace fg::train
