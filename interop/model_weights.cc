// ModelConfig from a manifest and parameter loading (model_weights.h).
#include "interop/model_weights.h"

#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "checkpoint/tensor_slices.h"
#include "core/status_macros.h"

namespace tessera::checkpoint {

absl::Status CheckModelConfig(const ModelConfig& m, const std::string& source) {
  if (m.dim < 1 || m.n_layers < 1 || m.n_heads < 1 || m.n_kv_heads < 1 || m.ffn_dim < 1 || m.vocab_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": model sizes must be positive"));
  }
  Config config;
  config.model = m;
  config.source = source;
  // Head sizes and the rotary scaling, as a config file's are checked.
  return ValidateModelConfig(config);
}

absl::StatusOr<ModelConfig> ModelConfigFromManifest(const Manifest& manifest, const std::string& source) {
  const std::string where = absl::StrCat(source, ":config_yaml");
  YAML::Node model;
  try {
    YAML::Node root = YAML::Load(manifest.config_yaml);
    if (root.IsMap()) model = root["model"];
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not valid YAML: ", e.msg));
  }
  if (!model || !model.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": the saved config has no model section"));
  }
  YAML::Node only;
  only["model"] = model;
  YAML::Emitter out;
  out << only;
  TS_ASSIGN_OR_RETURN(Config config, ConfigFromYamlString(out.c_str(), where));
  TS_RETURN_IF_ERROR(CheckModelConfig(config.model, where));
  return config.model;
}

int64_t SavedSeqLen(const Manifest& manifest) {
  try {
    YAML::Node root = YAML::Load(manifest.config_yaml);
    if (root.IsMap() && root["train"] && root["train"]["seq_len"])
      return root["train"]["seq_len"].as<int64_t>();
  } catch (const YAML::Exception&) {
  }
  return 0;
}

absl::Status LoadModelWeights(const CheckpointReader& reader, TransformerImpl& model) {
  torch::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    TS_ASSIGN_OR_RETURN(at::Tensor saved, ReadTensor(reader, item.key()));
    torch::Tensor& param = item.value();
    if (saved.sizes() != param.sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint '", reader.step_dir(), "': tensor '", item.key(), "' has shape ",
                       ShapeToString(saved.sizes().vec()), " but the model's parameter has ",
                       ShapeToString(param.sizes().vec())));
    }
    param.copy_(saved);
  }
  return absl::OkStatus();
}

}  // namespace tessera::checkpoint
