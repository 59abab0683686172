// Tests of the Hugging Face interop in C++ (the Python test checks against transformers
// itself): the parameter list equals the model's, config.json round trip and refusals, and
// export-hf -> import-hf reproducing every tensor (fp32 exactly; bf16 as LibTorch rounds it;
// sharded output with an index).
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <filesystem>

#include "absl/strings/str_format.h"

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_writer.h"
#include "interop/hf_config.h"
#include "interop/hf_export.h"
#include "interop/hf_import.h"
#include "interop/model_weights.h"
#include "interop/safetensors.h"
#include "model/hf_names.h"
#include "model/model.h"
#include "tests/catch_compat.h"
#include "tests/checkpoint/checkpoint_test_util.h"

using namespace tessera;
using namespace tessera::checkpoint;
using namespace tessera::checkpoint::testing;
namespace fs = std::filesystem;

namespace {

ModelConfig Tiny(bool tie, int64_t kv) {
  ModelConfig c;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = kv;
  c.ffn_dim = 48;
  c.vocab_size = 40;
  c.rope_theta = 10000.0;
  c.norm_eps = 1e-6;
  c.tie_embeddings = tie;
  return c;
}

// A checkpoint of an initialised model, written by the writer on one rank.
Transformer SaveModel(const std::string& dir, const ModelConfig& mc) {
  Transformer model(mc, 16);
  model->InitializeWeights(5);
  Config config;
  config.model = mc;
  config.train.seq_len = 16;
  SaveState state;
  state.step = 100;
  state.config_yaml = ConfigToYaml(config);
  for (const auto& p : model->named_parameters())
    state.tensors.push_back(WholeTensor(p.key(), p.value().detach()));
  LocalComm comm;
  CheckpointWriter writer({.dir = dir}, comm.get());
  absl::Status s = writer.Save(std::move(state));
  CATCH_REQUIRE(s.ok());
  return model;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

}  // namespace

CATCH_TEST_CASE("LlamaParameters lists exactly the model's parameters, with HF names") {
  for (const ModelConfig& c : {Tiny(true, 2), Tiny(false, 4), Tiny(false, 1)}) {
    Transformer model(c, 8);
    std::map<std::string, std::vector<int64_t>> actual, listed;
    for (const auto& p : model->named_parameters()) actual[p.key()] = p.value().sizes().vec();
    std::set<std::string> hf_names;
    for (const LlamaParameter& p : LlamaParameters(c)) {
      listed[p.name] = p.shape;
      CATCH_CHECK(!p.hf_name.empty());
      hf_names.insert(p.hf_name);
    }
    CATCH_CHECK(actual == listed);
    CATCH_CHECK(hf_names.size() == listed.size());
  }
  CATCH_CHECK(HfParameterName("layers.11.attention.wk") == "model.layers.11.self_attn.k_proj.weight");
  CATCH_CHECK(HfParameterName("layers.0.feed_forward.w_down") == "model.layers.0.mlp.down_proj.weight");
  CATCH_CHECK(HfParameterName("layers.3.ffn_norm") == "model.layers.3.post_attention_layernorm.weight");
  CATCH_CHECK(HfParameterName("optim.exp_avg/norm").empty());
}

CATCH_TEST_CASE("config.json: round trip, both transformers spellings, and refusals") {
  HfModelInfo info;
  info.model = Tiny(false, 2);
  info.max_position_embeddings = 128;
  info.bos_token_id = "1";
  info.eos_token_id = "[2, 3]";
  const std::string json = HfLlamaConfigJson(info, "bfloat16");
  auto back = ParseHfLlamaConfig(json, "config.json");
  CATCH_REQUIRE(back.ok());
  CATCH_CHECK(back->model.dim == 32);
  CATCH_CHECK(back->model.n_kv_heads == 2);
  CATCH_CHECK(back->model.ffn_dim == 48);
  CATCH_CHECK(back->model.rope_theta == 10000.0);
  CATCH_CHECK(back->model.norm_eps == 1e-6);
  CATCH_CHECK(!back->model.tie_embeddings);
  CATCH_CHECK(back->max_position_embeddings == 128);
  CATCH_CHECK(back->eos_token_id == "[2, 3]");
  CATCH_CHECK(json.find("\"torch_dtype\": \"bfloat16\"") != std::string::npos);

  const std::string base =
      R"("model_type": "llama", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
         "num_attention_heads": 4, "vocab_size": 40)";
  auto parse = [&](const std::string& extra) {
    return ParseHfLlamaConfig("{" + base + extra + "}", "c.json");
  };
  CATCH_CHECK(parse("")->model.n_kv_heads == 4);  // defaults to the head count
  CATCH_CHECK(
      parse(R"(, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0})")->model.rope_theta ==
      500000.0);
  CATCH_CHECK(Message(parse(R"(, "attention_bias": true)").status()).find("no biases") != std::string::npos);
  CATCH_CHECK(Message(parse(R"(, "hidden_act": "gelu")").status()).find("SwiGLU") != std::string::npos);
  CATCH_CHECK(
      Message(ParseHfLlamaConfig(R"({"model_type": "mistral"})", "c.json").status()).find("only Llama") !=
      std::string::npos);

  // Scaled rotary and an explicit head width.
  const auto llama3 = parse(R"(, "rope_theta": 500000.0, "max_position_embeddings": 512, "rope_scaling":
      {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
       "original_max_position_embeddings": 8192}, "rope_parameters": {"rope_type": "default"})");
  CATCH_REQUIRE(llama3.ok());
  CATCH_CHECK(llama3->model.rope_scaling == tessera::RopeScaling::kLlama3);
  CATCH_CHECK(llama3->model.rope_factor == 8.0);
  CATCH_CHECK(llama3->model.rope_low_freq_factor == 1.0);
  CATCH_CHECK(llama3->model.rope_high_freq_factor == 4.0);
  CATCH_CHECK(llama3->model.rope_original_max_position_embeddings == 8192);
  CATCH_CHECK(llama3->model.rope_theta == 500000.0);
  // Without original_max_position_embeddings, transformers takes max_position_embeddings.
  const auto fallback = parse(R"(, "max_position_embeddings": 512, "rope_parameters": {"rope_type": "llama3",
      "rope_theta": 10000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0})");
  CATCH_REQUIRE(fallback.ok());
  CATCH_CHECK(fallback->model.rope_original_max_position_embeddings == 512);
  const auto linear = parse(R"(, "rope_scaling": {"type": "linear", "factor": 2.0})");
  CATCH_REQUIRE(linear.ok());
  CATCH_CHECK(linear->model.rope_scaling == tessera::RopeScaling::kLinear);
  CATCH_CHECK(linear->model.rope_factor == 2.0);
  CATCH_CHECK(parse(R"(, "head_dim": 8)")->model.explicit_head_dim == 0);  // 32 / 4: derived
  const auto wide = parse(R"(, "head_dim": 16)");
  CATCH_REQUIRE(wide.ok());
  CATCH_CHECK(wide->model.head_dim() == 16);
  CATCH_CHECK(wide->model.attention_dim() == 64);
  const std::pair<const char*, const char*> bad_rope[] = {
      {R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4.0})", "rope type 'yarn' is not supported"},
      {R"(, "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0})",
       R"(rope_parameters: rope type 'llama3' needs "low_freq_factor", which is missing)"},
      {R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
          "high_freq_factor": 4.0})",
       R"("low_freq_factor" 4 is not below "high_freq_factor" 4)"},
      {R"(, "rope_scaling": {"rope_type": "linear", "factor": 0})", R"(rope_scaling: "factor" is 0)"},
      {R"(, "rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5})",
       R"("partial_rotary_factor" is 0.5)"},
      {R"(, "head_dim": 7)", "head_dim 7 is odd"},
      {R"(, "hidden_size": 30)", "heads must divide hidden_size unless head_dim is set"},
  };
  for (const auto& [extra, message] : bad_rope) {
    CATCH_CAPTURE(extra);
    CATCH_CHECK(Message(parse(extra).status()).find(message) != std::string::npos);
  }
  HfModelInfo scaled = *llama3;
  scaled.model.explicit_head_dim = 16;
  const std::string scaled_json = HfLlamaConfigJson(scaled, "float32");
  CATCH_CHECK(
      scaled_json.find(R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, )"
                       R"("high_freq_factor": 4.0, "original_max_position_embeddings": 8192})") !=
      std::string::npos);
  const auto scaled_back = ParseHfLlamaConfig(scaled_json, "config.json");
  CATCH_REQUIRE(scaled_back.ok());
  CATCH_CHECK(scaled_back->model.head_dim() == 16);
  CATCH_CHECK(scaled_back->model.rope_scaling == tessera::RopeScaling::kLlama3);
  CATCH_CHECK(scaled_back->model.rope_original_max_position_embeddings == 8192);

  // Hostile sizes: each refused with its key named, before any product of them is formed.
  const std::pair<const char*, const char*> bad_sizes[] = {
      {R"(, "hidden_size": -32)", R"("hidden_size" is -32; expected an integer in [1, 2147483647])"},
      {R"(, "hidden_size": 0)", R"("hidden_size" is 0; expected an integer in [1, 2147483647])"},
      {R"(, "vocab_size": 40.5)", R"("vocab_size" is 40.5; expected an integer)"},
      {R"(, "vocab_size": 1e300)", R"("vocab_size" is 1e+300; expected an integer)"},
      {R"(, "num_hidden_layers": 2147483648)", R"("num_hidden_layers" is 2147483648; expected an integer)"},
      {R"(, "intermediate_size": "48")", R"("intermediate_size" is not a number)"},
      {R"(, "num_attention_heads": 0)", R"("num_attention_heads" is 0)"},
      {R"(, "num_key_value_heads": -4)", R"("num_key_value_heads" is -4)"},
      {R"(, "head_dim": 0)", R"("head_dim" is 0)"},
      {R"(, "max_position_embeddings": 1e20)", R"("max_position_embeddings" is 1e+20)"},
      {R"(, "rms_norm_eps": 0)", R"("rms_norm_eps" is 0; expected a positive number)"},
      {R"(, "rope_theta": -1)", R"("rope_theta" is -1; expected a positive number)"},
      {R"(, "rope_parameters": {"rope_type": "default", "rope_theta": 0})", R"("rope_theta" is 0)"},
      {R"(, "initializer_range": -0.02)", R"("initializer_range" is -0.02; expected a non-negative number)"},
      {R"(, "eos_token_id": 1e30)", R"("eos_token_id" holds something other than an int32 token id)"},
      {R"(, "bos_token_id": [1, 4294967296])", R"("bos_token_id" holds something other than an int32)"},
      {R"(, "hidden_size": 1e999)", "outside the range of a double"},
  };
  for (const auto& [extra, message] : bad_sizes) {
    CATCH_CAPTURE(extra);
    const std::string error = Message(parse(extra).status());
    CATCH_CHECK(error.rfind("c.json: ", 0) == 0);
    CATCH_CHECK(error.find(message) != std::string::npos);
  }
  // Sizes each within int32 whose products overflow int64: 2^31-1 layers of a 2^30-wide MLP.
  const std::string huge = Message(
      parse(R"(, "hidden_size": 1073741824, "intermediate_size": 2147483647, "num_hidden_layers": 2147483647,
               "num_attention_heads": 1, "num_key_value_heads": 1, "vocab_size": 2)")
          .status());
  CATCH_CHECK(huge.find("c.json: the sizes give a model whose weights need more than 2^63 bytes "
                        "(num_hidden_layers x hidden_size x (num_attention_heads + num_key_value_heads)") !=
              std::string::npos);
  CATCH_CHECK(
      Message(parse(R"(, "hidden_size": 2147483647, "num_attention_heads": 1, "vocab_size": 2147483647)")
                  .status())
          .find("vocab_size x hidden_size (the embeddings) = 2147483647 x 2147483647 x 2") !=
      std::string::npos);
  // Large but real: Llama 3.1 405B's sizes.
  CATCH_CHECK(parse(R"(, "hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 126,
                       "num_attention_heads": 128, "num_key_value_heads": 8, "vocab_size": 128256)")
                  .ok());
}

CATCH_TEST_CASE("export-hf then import-hf reproduces every tensor (tied and untied, sharded, bf16)") {
  for (bool tie : {true, false}) {
    CATCH_INFO("tie_embeddings " << tie);
    TempDir ckpt("hf-ckpt"), out("hf-out"), back("hf-back");
    const ModelConfig mc = Tiny(tie, 2);
    Transformer model = SaveModel(ckpt.path(), mc);

    // fp32, in shards of at most 20 KB (the embedding is 5 KB, a layer 31 KB in 9 tensors).
    HfExportOptions options{.checkpoint = ckpt.path(), .out_dir = out.path(), .max_shard_bytes = 20000};
    auto written = ExportHf(options);
    CATCH_REQUIRE(written.ok());
    CATCH_CHECK(fs::exists(out.path() + "/model.safetensors.index.json"));
    int shards = 0;
    for (const auto& e : fs::directory_iterator(out.path())) shards += e.path().extension() == ".safetensors";
    CATCH_CHECK(shards >= 4);
    CATCH_CHECK(fs::exists(out.path() + absl::StrFormat("/model-00001-of-%05d.safetensors", shards)));
    for (const auto& e : fs::directory_iterator(out.path())) {
      if (e.path().extension() == ".safetensors")
        CATCH_CHECK(fs::file_size(e.path()) <= 20000 + 2048);  // + header
    }
    CATCH_CHECK(!fs::exists(out.path() + "/model.safetensors"));
    auto imported = ImportHf({.hf_dir = out.path(), .out_dir = back.path()});
    CATCH_REQUIRE(imported.ok());
    auto reader = CheckpointReader::Open(*imported);
    CATCH_REQUIRE(reader.ok());
    CATCH_CHECK((*reader)->manifest().step == 0);
    CATCH_CHECK(ModelConfigFromManifest((*reader)->manifest(), "m")->ffn_dim == 48);
    int checked = 0;
    for (const auto& p : model->named_parameters()) {
      CATCH_CHECK(at::equal(*ReadTensor(**reader, p.key()), p.value()));
      ++checked;
    }
    CATCH_CHECK(checked == (tie ? 20 : 21));
    CATCH_CHECK((*reader)->manifest().tensors.size() == static_cast<size_t>(checked));

    // bf16 into the same directory: one file now, and the stale shards are gone.
    options.dtype = DType::kBFloat16;
    options.max_shard_bytes = 5'000'000'000;
    CATCH_REQUIRE(ExportHf(options).ok());
    CATCH_CHECK(!fs::exists(out.path() + absl::StrFormat("/model-00001-of-%05d.safetensors", shards)));
    CATCH_CHECK(!fs::exists(out.path() + "/model.safetensors.index.json"));
    auto st = SafetensorsReader::Open(out.path() + "/model.safetensors");
    CATCH_REQUIRE(st.ok());
    CATCH_CHECK((*st)->metadata().at(0) == std::pair<std::string, std::string>("format", "pt"));
    const SafetensorsTensor* wq = (*st)->Find("model.layers.1.self_attn.q_proj.weight");
    CATCH_REQUIRE(wq != nullptr);
    CATCH_CHECK(wq->dtype == DType::kBFloat16);
    at::Tensor got = at::empty(wq->shape, at::kBFloat16);
    CATCH_REQUIRE((*st)->Read(*wq, got.data_ptr(), got.nbytes()).ok());
    CATCH_CHECK(at::equal(got, model->layers[1]->attention->wq.detach().to(at::kBFloat16)));
    CATCH_CHECK(((*st)->Find("lm_head.weight") == nullptr) == tie);
  }
}

CATCH_TEST_CASE("import-hf refuses what it cannot represent, naming the tensor") {
  TempDir ckpt("hf-ckpt2"), out("hf-out2"), back("hf-back2");
  SaveModel(ckpt.path(), Tiny(true, 2));
  CATCH_REQUIRE(ExportHf({.checkpoint = ckpt.path(), .out_dir = out.path()}).ok());
  // Lie about the shape in config.json: the shape check names the tensor and file.
  std::string config = *tessera::ReadFileToString(out.path() + "/config.json");
  config.replace(config.find("\"intermediate_size\": 48"), 23, "\"intermediate_size\": 50");
  CATCH_REQUIRE(tessera::WriteFileAtomic(out.path() + "/config.json", config).ok());
  auto imported = ImportHf({.hf_dir = out.path(), .out_dir = back.path()});
  CATCH_CHECK(Message(imported.status())
                  .find("tensor 'model.layers.0.mlp.gate_proj.weight' has shape [48, 32]; "
                        "config.json implies [50, 32]") != std::string::npos);
  CATCH_CHECK(
      Message(ImportHf({.hf_dir = back.path(), .out_dir = back.path()}).status()).find("config.json") !=
      std::string::npos);
}
