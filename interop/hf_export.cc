// export-hf (hf_export.h): resolve the checkpoint, take the model shape from its saved config,
// plan the safetensors shards by size, then stream each tensor from the checkpoint (read whole,
// converted to the output dtype) into its shard.
#include "interop/hf_export.h"

#include <ATen/ATen.h>

#include <cctype>
#include <filesystem>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/tensor_slices.h"
#include "core/file_util.h"
#include "core/json_text.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "interop/hf_config.h"
#include "interop/model_weights.h"
#include "interop/safetensors.h"
#include "model/hf_names.h"

namespace tessera::checkpoint {
namespace fs = std::filesystem;

namespace {

const char* TorchDtypeName(DType d) {
  return d == DType::kBFloat16 ? "bfloat16" : d == DType::kFloat16 ? "float16" : "float32";
}

// Files of an earlier export that this one does not rewrite would mislead loaders.
void RemoveStaleWeights(const std::string& dir, const std::vector<std::string>& written) {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool weights = name == "model.safetensors" || name == "model.safetensors.index.json" ||
                         (name.rfind("model-", 0) == 0 && name.ends_with(".safetensors"));
    if (weights && std::find(written.begin(), written.end(), name) == written.end()) fs::remove(e.path(), ec);
  }
}

}  // namespace

absl::StatusOr<uint64_t> ParseByteSize(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  double number;
  if (i == 0 || !absl::SimpleAtod(text.substr(0, i), &number)) {
    return absl::InvalidArgumentError(
        absl::StrCat("size '", text, "': expected a number with a unit, e.g. 5GB"));
  }
  std::string unit = text.substr(i);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  static const std::map<std::string, double> kUnits = {
      {"", 1},      {"B", 1},        {"KB", 1e3},        {"MB", 1e6},           {"GB", 1e9},
      {"TB", 1e12}, {"KIB", 1024.0}, {"MIB", 1048576.0}, {"GIB", 1073741824.0}, {"TIB", 1099511627776.0}};
  auto it = kUnits.find(unit);
  if (it == kUnits.end()) {
    return absl::InvalidArgumentError(absl::StrCat("size '", text, "': unknown unit '", text.substr(i),
                                                   "' (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"));
  }
  const double bytes = number * it->second;
  if (bytes < 1) return absl::InvalidArgumentError(absl::StrCat("size '", text, "' is less than one byte"));
  return static_cast<uint64_t>(bytes);
}

namespace {

// Token ids and context length: from the Hugging Face config an imported model carried along,
// else the context the model was trained with.
absl::StatusOr<HfModelInfo> ExportedModelInfo(const CheckpointReader& reader, const std::string& path,
                                              const ModelConfig& model) {
  HfModelInfo info;
  if (reader.manifest().FindBlob("hf/config.json")) {
    TS_ASSIGN_OR_RETURN(std::string text, reader.ReadBlob("hf/config.json"));
    TS_ASSIGN_OR_RETURN(info, ParseHfLlamaConfig(text, absl::StrCat(path, ":hf/config.json")));
  } else {
    info.max_position_embeddings = 0;
  }
  if (info.max_position_embeddings == 0) {
    const int64_t seq_len = SavedSeqLen(reader.manifest());
    info.max_position_embeddings = seq_len > 0 ? seq_len : 2048;
  }
  info.model = model;
  return info;
}

// Which parameters go to which safetensors file: in order, a new file before one would exceed
// the size limit.
struct ShardPlan {
  std::vector<std::vector<size_t>> shards = std::vector<std::vector<size_t>>(1);  // parameter indexes
  uint64_t total_bytes = 0;
};

// Checks every tensor's shape against the checkpoint and plans the shards.
absl::StatusOr<ShardPlan> PlanShards(const CheckpointReader& reader, const std::string& path,
                                     const std::vector<LlamaParameter>& params,
                                     const HfExportOptions& options) {
  const size_t out_size = DTypeSize(options.dtype);
  ShardPlan plan;
  uint64_t shard_bytes = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    TS_ASSIGN_OR_RETURN(const TensorEntry* t, reader.Tensor(params[i].name));
    if (t->global_shape != params[i].shape) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", params[i].name, "' has shape ", ShapeToString(t->global_shape),
                       "; the saved model config implies ", ShapeToString(params[i].shape)));
    }
    const uint64_t bytes = static_cast<uint64_t>(NumElements(params[i].shape)) * out_size;
    if (!plan.shards.back().empty() && shard_bytes + bytes > options.max_shard_bytes) {
      plan.shards.emplace_back();
      shard_bytes = 0;
    }
    plan.shards.back().push_back(i);
    shard_bytes += bytes;
    plan.total_bytes += bytes;
  }
  return plan;
}

// Streams each tensor into its safetensors file, and writes the index when there are several.
absl::Status WriteWeights(const CheckpointReader& reader, const std::vector<LlamaParameter>& params,
                          const ShardPlan& plan, const HfExportOptions& options,
                          std::vector<std::string>* written) {
  const auto& shards = plan.shards;
  std::vector<std::pair<std::string, std::string>> weight_map;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1
                                 ? std::string("model.safetensors")
                                 : absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards.size());
    std::vector<SafetensorsTensor> declared;
    for (size_t i : shards[s]) {
      declared.push_back(SafetensorsTensor{params[i].hf_name, options.dtype, params[i].shape});
      weight_map.emplace_back(params[i].hf_name, file);
    }
    TS_ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(absl::StrCat(options.out_dir, "/", file),
                                                               declared, {{"format", "pt"}}));
    for (size_t i : shards[s]) {
      TS_ASSIGN_OR_RETURN(at::Tensor t, ReadTensor(reader, params[i].name));
      t = t.to(ScalarTypeOf(options.dtype)).contiguous();
      TS_RETURN_IF_ERROR(writer->Append(t.data_ptr(), t.nbytes()));
    }
    TS_RETURN_IF_ERROR(writer->Finish());
    written->push_back(file);
  }
  if (shards.size() > 1) {
    std::vector<std::string> entries;
    for (const auto& [name, file] : weight_map)
      entries.push_back(absl::StrCat("    ", JsonQuote(name), ": ", JsonQuote(file)));
    const std::string index =
        absl::StrCat("{\n  \"metadata\": {\"total_size\": ", plan.total_bytes, "},\n  \"weight_map\": {\n",
                     absl::StrJoin(entries, ",\n"), "\n  }\n}\n");
    TS_RETURN_IF_ERROR(
        WriteFileAtomic(absl::StrCat(options.out_dir, "/model.safetensors.index.json"), index));
    written->push_back("model.safetensors.index.json");
  }
  return absl::OkStatus();
}

// The tokenizer: the file given, else the one an import stored in the checkpoint.
absl::Status CopyTokenizer(const CheckpointReader& reader, const HfExportOptions& options,
                           std::vector<std::string>* written) {
  if (!options.tokenizer.empty()) {
    TS_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(options.tokenizer));
    const std::string name = fs::path(options.tokenizer).filename().string();
    TS_RETURN_IF_ERROR(WriteFileAtomic(absl::StrCat(options.out_dir, "/", name), bytes));
    written->push_back(name);
    return absl::OkStatus();
  }
  for (const BlobEntry& b : reader.manifest().blobs) {
    if (b.name.rfind("tokenizer/", 0) != 0) continue;
    TS_ASSIGN_OR_RETURN(std::string bytes, reader.ReadBlob(b.name));
    const std::string name = b.name.substr(10);
    TS_RETURN_IF_ERROR(WriteFileAtomic(absl::StrCat(options.out_dir, "/", name), bytes));
    written->push_back(name);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ExportHf(const HfExportOptions& options) {
  if (options.dtype != DType::kFloat32 && options.dtype != DType::kBFloat16 &&
      options.dtype != DType::kFloat16) {
    return absl::InvalidArgumentError("export-hf writes float32, bfloat16 or float16 weights");
  }
  // Structure only: every tensor's checksum is verified as it is read below.
  TS_ASSIGN_OR_RETURN(FoundCheckpoint found, ResolveCheckpoint(options.checkpoint, Verify::kStructure));
  TS_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(found.path));
  const std::string manifest_path = absl::StrCat(found.path, "/", kManifestFileName);
  TS_ASSIGN_OR_RETURN(ModelConfig model, ModelConfigFromManifest(reader->manifest(), manifest_path));
  TS_ASSIGN_OR_RETURN(const HfModelInfo info, ExportedModelInfo(*reader, found.path, model));
  const std::vector<LlamaParameter> params = LlamaParameters(model);
  TS_ASSIGN_OR_RETURN(const ShardPlan plan, PlanShards(*reader, found.path, params, options));

  TS_RETURN_IF_ERROR(MakeDirs(options.out_dir));
  std::vector<std::string> written;
  TS_RETURN_IF_ERROR(WriteWeights(*reader, params, plan, options, &written));
  TS_RETURN_IF_ERROR(WriteFileAtomic(absl::StrCat(options.out_dir, "/config.json"),
                                     HfLlamaConfigJson(info, TorchDtypeName(options.dtype))));
  written.push_back("config.json");
  TS_RETURN_IF_ERROR(CopyTokenizer(*reader, options, &written));
  RemoveStaleWeights(options.out_dir, written);
  TS_LOG(INFO) << "exported " << found.path << " (step " << found.step << ") to " << options.out_dir << ": "
               << absl::StrJoin(written, ", ") << " (" << plan.total_bytes / 1e6 << " MB of "
               << DTypeName(options.dtype) << " weights)";
  return written;
}

}  // namespace tessera::checkpoint
