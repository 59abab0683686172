// import-hf (hf_import.h): config.json -> ModelConfig, the safetensors files (one, or those an
// index names) -> every parameter of that model by its Hugging Face name, checked for shape,
// converted to fp32, then one CheckpointWriter save on a one-rank local communicator.
#include "interop/hf_import.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_writer.h"
#include "checkpoint/tensor_slices.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "interop/hf_config.h"
#include "interop/safetensors.h"
#include "model/hf_names.h"
#include "parallel/comm/local_comm.h"
#include "parallel/comm/watchdog.h"

namespace tessera::checkpoint {
namespace fs = std::filesystem;

namespace {

// The safetensors files of the model: those the index names, or model.safetensors.
absl::StatusOr<std::vector<std::string>> WeightFiles(const std::string& dir) {
  const std::string index_path = absl::StrCat(dir, "/model.safetensors.index.json");
  if (PathExists(index_path)) {
    TS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
    auto index = ParseJson(text);
    if (!index.ok())
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": ", index.status().message()));
    const JsonValue* map = index->Find("weight_map");
    if (!map || map->type != JsonValue::Type::kObject) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": no \"weight_map\" object"));
    }
    std::set<std::string> files;
    for (const auto& [name, file] : map->object) {
      if (file.type != JsonValue::Type::kString || file.string.find('/') != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map[\"", name, "\"] is not a file name"));
      }
      files.insert(absl::StrCat(dir, "/", file.string));
    }
    return std::vector<std::string>(files.begin(), files.end());
  }
  const std::string single = absl::StrCat(dir, "/model.safetensors");
  if (PathExists(single)) return std::vector<std::string>{single};
  return absl::NotFoundError(
      absl::StrCat("'", dir, "' has neither model.safetensors nor model.safetensors.index.json ",
                   "(only safetensors weights can be imported; transformers writes them by "
                   "default)"));
}

// The model section of a config, in the effective-config format (other sections stay at their
// defaults and are not saved: the run that starts from the checkpoint brings its own).
std::string ModelYaml(const ModelConfig& model, const std::string& hf_dir) {
  Config config;
  config.model = model;
  const std::string all = ConfigToYaml(config);
  std::string out = absl::StrCat("# Model imported from ", hf_dir, " by tessera import-hf.\n");
  bool in_model = false;
  for (const absl::string_view line : absl::StrSplit(all, '\n')) {
    if (!line.empty() && line[0] != ' ' && line[0] != '#') in_model = line == "model:";
    if (in_model) absl::StrAppend(&out, line, "\n");
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> ImportHf(const HfImportOptions& options) {
  const std::string config_path = absl::StrCat(options.hf_dir, "/config.json");
  TS_ASSIGN_OR_RETURN(std::string config_text, ReadFileToString(config_path));
  TS_ASSIGN_OR_RETURN(HfModelInfo info, ParseHfLlamaConfig(config_text, config_path));

  TS_ASSIGN_OR_RETURN(std::vector<std::string> files, WeightFiles(options.hf_dir));
  std::vector<std::unique_ptr<SafetensorsReader>> readers;
  std::map<std::string, std::pair<const SafetensorsReader*, const SafetensorsTensor*>> by_name;
  for (const std::string& f : files) {
    TS_ASSIGN_OR_RETURN(auto r, SafetensorsReader::Open(f));
    for (const SafetensorsTensor& t : r->tensors()) by_name[t.name] = {r.get(), &t};
    readers.push_back(std::move(r));
  }

  SaveState state;
  state.step = 0;
  state.config_yaml = ModelYaml(info.model, options.hf_dir);
  std::set<std::string> used;
  for (const LlamaParameter& p : LlamaParameters(info.model)) {
    auto it = by_name.find(p.hf_name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(absl::StrCat(options.hf_dir, ": no tensor '", p.hf_name,
                                                     "' (Tessera's '", p.name, "') in ",
                                                     absl::StrJoin(files, ", ")));
    }
    const auto [reader, t] = it->second;
    if (t->shape != p.shape) {
      return absl::InvalidArgumentError(absl::StrCat(reader->path(), ": tensor '", p.hf_name, "' has shape ",
                                                     ShapeToString(t->shape), "; config.json implies ",
                                                     ShapeToString(p.shape)));
    }
    at::Tensor raw = at::empty(t->shape, at::TensorOptions().dtype(ScalarTypeOf(t->dtype)));
    TS_RETURN_IF_ERROR(reader->Read(*t, raw.data_ptr(), raw.nbytes()));
    state.tensors.push_back(WholeTensor(p.name, raw.to(at::kFloat)));
    used.insert(p.hf_name);
  }
  // Nothing may be dropped silently, except what carries no information for this model.
  std::vector<std::string> unexpected;
  for (const auto& [name, where] : by_name) {
    if (used.count(name)) continue;
    if (name.ends_with("rotary_emb.inv_freq")) continue;                  // recomputed from rope_theta
    if (name == "lm_head.weight" && info.model.tie_embeddings) continue;  // a copy of the embedding
    unexpected.push_back(name);
  }
  if (!unexpected.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.hf_dir,
                     ": tensors that Tessera's Llama has no place for: ", absl::StrJoin(unexpected, ", ")));
  }
  state.blobs.push_back({"hf/config.json", config_text});
  if (!options.tokenizer.empty()) {
    TS_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(options.tokenizer));
    state.blobs.push_back(
        {absl::StrCat("tokenizer/", fs::path(options.tokenizer).filename().string()), bytes});
  }

  // One process, one rank: the local communicator (its collectives are the identity).
  parallel::Watchdog watchdog(parallel::Watchdog::Options{});
  std::unique_ptr<parallel::Communicator> comm = parallel::CreateLocalCommunicator(&watchdog, "import-hf", 0);
  WriterOptions writer_options;
  writer_options.dir = options.out_dir;
  CheckpointWriter writer(writer_options, *comm);
  TS_RETURN_IF_ERROR(writer.Save(std::move(state)));
  return StepDirPath(options.out_dir, 0);
}

}  // namespace tessera::checkpoint
