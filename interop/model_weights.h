// A checkpoint's model: its ModelConfig (the model section of the manifest's saved config) and
// loading its saved parameters into a single-process TransformerImpl by logical name. Used by
// export-hf and the logits command; a resuming trainer reads its own slices instead
// (tensor_slices.h).
#pragma once

#include "absl/status/statusor.h"
#include "checkpoint/checkpoint_reader.h"
#include "config/config.h"
#include "model/model.h"

namespace tessera::checkpoint {

// The model.* keys of `manifest.config_yaml` over the defaults (other sections are ignored, so
// a checkpoint stays readable when they change), checked as ValidateConfig checks them.
absl::StatusOr<ModelConfig> ModelConfigFromManifest(const Manifest& manifest, const std::string& source);
// train.seq_len of the saved config; 0 when it has none.
int64_t SavedSeqLen(const Manifest& manifest);
// The model-shape checks of ValidateConfig (divisibility of heads, even head size, positive
// sizes); the message names `source`.
absl::Status CheckModelConfig(const ModelConfig& model, const std::string& source);

// Copies every parameter of `model` from the checkpoint tensor of the same name (shapes must
// match; the checkpoint may hold more, e.g. optimizer state).
absl::Status LoadModelWeights(const CheckpointReader& reader, TransformerImpl& model);

}  // namespace tessera::checkpoint
