// Tests of trainer/config: loading, includes, overrides, and an error for every kind of bad
// input, each naming the file and line or the --set, the key and what was expected.
#include "config/config.h"

#include <filesystem>
#include <fstream>
#include <random>

#include "core/file_util.h"
#include "tests/catch_compat.h"

namespace fs = std::filesystem;

namespace {

std::string WriteYaml(const std::string& name, const std::string& text) {
  fs::path dir = fs::temp_directory_path() / ("tessera_config_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::path path = dir / name;
  std::ofstream(path) << text;
  return path.string();
}

// Loads and expects failure; returns the message.
std::string LoadError(const std::string& yaml, std::vector<std::string> overrides = {}) {
  auto config = tessera::LoadConfig(WriteYaml("bad.yaml", yaml), overrides);
  CATCH_REQUIRE_FALSE(config.ok());
  return std::string(config.status().message());
}

bool Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return true;
  CATCH_WARN("'" << text << "' lacks '" << part << "'");
  return false;
}

const char kValid[] = "data:\n  train: [x]\n  val: [y]\n";

}  // namespace

CATCH_TEST_CASE("config loads sections, includes a base and applies overrides in order") {
  WriteYaml("base.yaml",
            "model:\n  dim: 128\n  n_heads: 4\n  n_kv_heads: 2\ntrain:\n  lr: 0.01\n  min_lr: 0.001\n");
  const std::string path = WriteYaml("child.yaml",
                                     "base: base.yaml\ntrain:\n  lr: 0.002\n  precision: bf16\ndata:\n  "
                                     "train: [\"a/text\", {prefix: b, weight: 0.25}]\n  val: c\n");
  auto config = tessera::LoadConfig(path, {"model.n_layers=3", "train.lr=0.005"});
  CATCH_REQUIRE(config.ok());
  CATCH_CHECK(config->model.dim == 128);     // from the base
  CATCH_CHECK(config->model.n_layers == 3);  // from --set
  CATCH_CHECK(config->train.lr == 0.005);    // --set wins over the file, which won over the base
  CATCH_CHECK(config->train.min_lr == 0.001);
  CATCH_CHECK(config->train.precision == tessera::Precision::kBf16);
  CATCH_CHECK((config->data.train == std::vector<tessera::CorpusEntry>{{"a/text", 1.0}, {"b", 0.25}}));
  CATCH_CHECK((config->data.val == std::vector<tessera::CorpusEntry>{{"c", 1.0}}));
}

CATCH_TEST_CASE("corpus lists: blends round-trip, bad entries name the key and what was expected") {
  auto config = tessera::ConfigFromOverrides(
      {"data.train=[{prefix: t, weight: 0.7}, {prefix: c, weight: 0.3}]", "train.eval_every=0"});
  CATCH_REQUIRE(config.ok());
  CATCH_CHECK(config->data.train.size() == 2);
  CATCH_CHECK(config->data.train[1].weight == 0.3);
  auto again = tessera::LoadConfig(WriteYaml("blend.yaml", tessera::ConfigToYaml(*config)), {});
  CATCH_REQUIRE(again.ok());
  CATCH_CHECK((again->data.train == config->data.train));
  auto negative =
      tessera::ConfigFromOverrides({"data.train=[{prefix: t, weight: -1}]", "train.eval_every=0"});
  CATCH_REQUIRE_FALSE(negative.ok());
  CATCH_CHECK(
      Contains(std::string(negative.status().message()), "corpus 't' has weight -1: expected a weight >= 0"));
  auto zeros = tessera::ConfigFromOverrides({"data.train=[{prefix: t, weight: 0}]", "train.eval_every=0"});
  CATCH_REQUIRE_FALSE(zeros.ok());
  CATCH_CHECK(Contains(std::string(zeros.status().message()), "every corpus has weight 0"));
  auto typo = tessera::ConfigFromOverrides({"data.train=[{prefix: t, wieght: 2}]", "train.eval_every=0"});
  CATCH_REQUIRE_FALSE(typo.ok());
  CATCH_CHECK(Contains(std::string(typo.status().message()), "unexpected 'wieght: 2' in a corpus entry"));
  auto no_prefix = tessera::ConfigFromOverrides({"data.train=[{weight: 2}]", "train.eval_every=0"});
  CATCH_REQUIRE_FALSE(no_prefix.ok());
  CATCH_CHECK(Contains(std::string(no_prefix.status().message()), "has no prefix"));
}

CATCH_TEST_CASE("parallel keys that depend on the model are checked with the numbers") {
  auto heads = tessera::ConfigFromOverrides({"data.train=x", "train.eval_every=0", "parallel.tp=3"});
  CATCH_REQUIRE_FALSE(heads.ok());
  CATCH_CHECK(
      Contains(std::string(heads.status().message()), "parallel.tp = 3 does not divide model.n_heads = 8"));
  auto sp = tessera::ConfigFromOverrides({"data.train=x", "train.eval_every=0", "parallel.tp=4",
                                          "parallel.sequence_parallel=true", "train.seq_len=30"});
  CATCH_REQUIRE_FALSE(sp.ok());
  CATCH_CHECK(
      Contains(std::string(sp.status().message()), "train.seq_len = 30 to be divisible by parallel.tp = 4"));
  auto chunks = tessera::ConfigFromOverrides(
      {"data.train=x", "train.eval_every=0", "parallel.pp=4", "parallel.virtual_stages=2"});
  CATCH_REQUIRE_FALSE(chunks.ok());
  CATCH_CHECK(Contains(std::string(chunks.status().message()), "= 8 model chunks, but model.n_layers = 4"));
  auto bucket = tessera::ConfigFromOverrides({"data.train=x", "train.eval_every=0", "parallel.bucket_mb=0"});
  CATCH_REQUIRE_FALSE(bucket.ok());
  CATCH_CHECK(Contains(std::string(bucket.status().message()), "parallel.bucket_mb"));
}

CATCH_TEST_CASE("the effective config dump loads back to the same config") {
  auto config =
      tessera::LoadConfig(WriteYaml("v.yaml", kValid),
                          {"train.lr=0.00123", "model.tie_embeddings=false", "train.run_dir=some dir/x"});
  CATCH_REQUIRE(config.ok());
  const std::string dumped = tessera::ConfigToYaml(*config);
  auto again = tessera::LoadConfig(WriteYaml("dumped.yaml", dumped), {});
  CATCH_REQUIRE(again.ok());
  CATCH_CHECK(tessera::ConfigToYaml(*again) == dumped);
  CATCH_CHECK(again->train.lr == 0.00123);
  CATCH_CHECK(again->train.run_dir == "some dir/x");
}

CATCH_TEST_CASE("an unknown key names the file, the line and a suggestion") {
  const std::string msg =
      LoadError("data:\n  train: [x]\n  val: [y]\ntrain:\n  steps: 5\n  lerning_rate: 3\n  lrr: 1\n");
  CATCH_CHECK(Contains(msg, "bad.yaml:6"));
  CATCH_CHECK(Contains(msg, "unknown key 'train.lerning_rate'"));
  const std::string typo = LoadError("train:\n  lrr: 1\n");
  CATCH_CHECK(Contains(typo, "did you mean 'train.lr'"));
  const std::string section = LoadError("trian:\n  lr: 1\n");
  CATCH_CHECK(Contains(section, "unknown key 'trian'"));
  const std::string set = LoadError(kValid, {"model.dimm=3"});
  CATCH_CHECK(Contains(set, "--set model.dimm=3: unknown key 'model.dimm' (did you mean 'model.dim'?)"));
}

CATCH_TEST_CASE("a value of the wrong type names the key, the value and the expected type") {
  CATCH_CHECK(Contains(LoadError("model:\n  dim: wide\n"),
                       "bad.yaml:2: key 'model.dim' expects integer, got 'wide'"));
  CATCH_CHECK(Contains(LoadError("model:\n  dim: 2.5\n"), "expects integer, got '2.5'"));
  CATCH_CHECK(Contains(LoadError("train:\n  lr: [1, 2]\n"), "key 'train.lr' expects number"));
  CATCH_CHECK(Contains(LoadError("model:\n  tie_embeddings: maybe\n"), "expects boolean"));
  CATCH_CHECK(Contains(LoadError("train:\n  precision: fp8\n"), "expects one of fp32 | bf16, got 'fp8'"));
  CATCH_CHECK(Contains(LoadError(kValid, {"train.steps=ten"}),
                       "--set train.steps=ten: key 'train.steps' expects integer"));
  CATCH_CHECK(Contains(LoadError("model: 3\n"), "'model' is a section"));
  CATCH_CHECK(Contains(LoadError("model:\n  dim: [\n"), "not valid YAML"));
  CATCH_CHECK(Contains(LoadError(kValid, {"train.lr"}), "expected KEY=VALUE"));
}

CATCH_TEST_CASE("closed choices are enums spelled as in YAML and pp_layers is a list of integers") {
  auto config = tessera::ConfigFromOverrides({"train.eval_every=0", "data.train=[x]", "train.precision=bf16",
                                              "train.device=cpu", "train.on_divergence=rollback",
                                              "parallel.backend=mpi", "parallel.order=dp-pp-tp",
                                              "parallel.pp_schedule=zb-h1", "parallel.pp_layers=[3, 1]"});
  CATCH_REQUIRE(config.ok());
  CATCH_CHECK(config->train.precision == tessera::Precision::kBf16);
  CATCH_CHECK(config->train.device == tessera::DeviceChoice::kCpu);
  CATCH_CHECK(config->train.on_divergence == tessera::DivergencePolicy::kRollback);
  CATCH_CHECK(config->parallel.backend == tessera::CommBackend::kMpi);
  CATCH_CHECK(config->parallel.order == "dp-pp-tp");
  CATCH_CHECK(config->parallel.pp_schedule.kind == tessera::PipelineScheduleKind::kZbH1);
  CATCH_CHECK(config->parallel.pp_layers == std::vector<int64_t>{3, 1});
  // The effective config spells them as before and reads back the same.
  const std::string yaml = tessera::ConfigToYaml(*config);
  CATCH_CHECK(Contains(yaml, "  precision: \"bf16\"\n"));
  CATCH_CHECK(Contains(yaml, "  order: \"dp-pp-tp\"\n"));
  CATCH_CHECK(Contains(yaml, "  pp_schedule: \"zb-h1\"\n"));
  CATCH_CHECK(Contains(yaml, "  pp_layers: [3, 1]\n"));
  auto again = tessera::ConfigFromYamlString(yaml, "effective");
  CATCH_REQUIRE(again.ok());
  CATCH_CHECK(tessera::ConfigToYaml(*again) == yaml);
  // A schedule that is not a name is a file's path; quoted integers (older config.yaml) still read.
  auto file =
      tessera::ConfigFromOverrides({"train.eval_every=0", "data.train=[x]",
                                    "parallel.pp_schedule=my/sched.txt", "parallel.pp_layers=[\"2\", 2]"});
  CATCH_REQUIRE(file.ok());
  CATCH_CHECK(file->parallel.pp_schedule.kind == tessera::PipelineScheduleKind::kFile);
  CATCH_CHECK(file->parallel.pp_schedule.Text() == "my/sched.txt");
  CATCH_CHECK(file->parallel.pp_layers == std::vector<int64_t>{2, 2});
  CATCH_CHECK(Contains(LoadError(kValid, {"parallel.pp_layers=[2, two]"}),
                       "key 'parallel.pp_layers' expects list of integers, got '[2, two]'"));
  CATCH_CHECK(
      Contains(LoadError("train:\n  on_divergence: retry\n"), "expects one of stop | rollback, got 'retry'"));
  CATCH_CHECK(
      Contains(LoadError(kValid, {"train.device=gpu"}), "expects one of auto | cpu | cuda, got 'gpu'"));
  CATCH_CHECK(
      Contains(LoadError(kValid, {"parallel.backend=gloo"}), "expects one of auto | local | mpi | nccl"));
}

CATCH_TEST_CASE("values out of range name the key, the value and the range") {
  CATCH_CHECK(Contains(LoadError(kValid, {"model.dim=0"}),
                       "key 'model.dim' = 0 is out of range: expected a value in [1, "));
  CATCH_CHECK(Contains(LoadError(kValid, {"train.lr=-1"}), "key 'train.lr' = -1"));
  CATCH_CHECK(Contains(LoadError(kValid, {"train.beta2=1.5"}), "'train.beta2'"));
}

CATCH_TEST_CASE("sizes that do not fit are rejected with the numbers") {
  CATCH_CHECK(Contains(LoadError(kValid, {"model.dim=100", "model.n_heads=8"}),
                       "model.dim = 100 is not divisible by model.n_heads = 8"));
  CATCH_CHECK(Contains(LoadError(kValid, {"model.n_heads=8", "model.n_kv_heads=3"}),
                       "model.n_heads = 8 is not divisible by model.n_kv_heads = 3"));
  CATCH_CHECK(Contains(LoadError(kValid, {"model.dim=24", "model.n_heads=8", "model.n_kv_heads=8"}),
                       "head dimension model.dim / model.n_heads = 3 is odd"));
  CATCH_CHECK(Contains(LoadError(kValid, {"train.global_batch=10", "train.micro_batch=4"}),
                       "train.global_batch = 10 is not a multiple of train.micro_batch = 4"));
  CATCH_CHECK(Contains(LoadError(kValid, {"train.min_lr=1", "train.lr=0.1"}), "train.min_lr = 1"));
  CATCH_CHECK(Contains(LoadError("data:\n  train: [x]\n"), "train.eval_every = 100 needs held-out data"));
  CATCH_CHECK(Contains(LoadError("train:\n  eval_every: 0\n"), "no training data"));
}

CATCH_TEST_CASE("rotary scaling needs exactly its keys, and head_dim may differ from dim / n_heads") {
  const std::vector<std::string> llama3 = {"model.rope_scaling=llama3", "model.rope_factor=8",
                                           "model.rope_low_freq_factor=1", "model.rope_high_freq_factor=4",
                                           "model.rope_original_max_position_embeddings=8192"};
  auto loaded = tessera::LoadConfig(WriteYaml("rope.yaml", kValid), llama3);
  CATCH_REQUIRE(loaded.ok());
  CATCH_CHECK(loaded->model.rope_scaling == tessera::RopeScaling::kLlama3);
  CATCH_CHECK(loaded->model.rope_original_max_position_embeddings == 8192);
  const auto without = [&](size_t skipped) {
    std::vector<std::string> o;
    for (size_t i = 0; i < llama3.size(); ++i)
      if (i != skipped) o.push_back(llama3[i]);
    return o;
  };
  CATCH_CHECK(
      Contains(LoadError(kValid, without(1)),
               "model.rope_scaling = llama3 needs model.rope_factor > 0; model.rope_factor = 0.0 (unset)"));
  CATCH_CHECK(Contains(LoadError(kValid, without(4)),
                       "needs model.rope_original_max_position_embeddings > 0; "
                       "model.rope_original_max_position_embeddings = 0 (unset)"));
  std::vector<std::string> crossed = llama3;
  crossed.push_back("model.rope_low_freq_factor=4");
  CATCH_CHECK(Contains(LoadError(kValid, crossed),
                       "model.rope_low_freq_factor = 4.0 is not below model.rope_high_freq_factor = 4.0"));
  CATCH_CHECK(Contains(LoadError(kValid, {"model.rope_scaling=yarn"}), "'model.rope_scaling'"));
  CATCH_CHECK(Contains(LoadError(kValid, {"model.rope_scaling=yarn"}), "yarn"));
  CATCH_CHECK(Contains(LoadError(kValid, {"model.rope_factor=-2"}), "key 'model.rope_factor' = -2.0"));
  CATCH_CHECK(Contains(LoadError(kValid, {"model.rope_scaling=linear"}),
                       "model.rope_scaling = linear needs model.rope_factor > 0"));
  CATCH_CHECK(Contains(LoadError(kValid, {"model.rope_factor=8"}),
                       "model.rope_factor = 8.0 has no effect under model.rope_scaling = none"));
  CATCH_CHECK(Contains(LoadError(kValid, {"model.rope_scaling=linear", "model.rope_factor=2",
                                          "model.rope_high_freq_factor=4"}),
                       "model.rope_high_freq_factor = 4.0 has no effect under model.rope_scaling = linear"));
  CATCH_CHECK(tessera::LoadConfig(WriteYaml("linear.yaml", kValid),
                                  {"model.rope_scaling=linear", "model.rope_factor=2"})
                  .ok());

  // head_dim: any even width, dim no longer divisible by n_heads; auto derives it.
  auto wide =
      tessera::LoadConfig(WriteYaml("head_dim.yaml", kValid),
                          {"model.dim=96", "model.n_heads=4", "model.n_kv_heads=2", "model.head_dim=32"});
  CATCH_REQUIRE(wide.ok());
  CATCH_CHECK(wide->model.head_dim() == 32);
  CATCH_CHECK(wide->model.attention_dim() == 128);
  CATCH_CHECK(tessera::ConfigToYaml(*wide).find("  head_dim: 32\n") != std::string::npos);
  CATCH_CHECK(tessera::ConfigToYaml(tessera::Config{}).find("  head_dim: auto\n") != std::string::npos);
  CATCH_CHECK(Contains(LoadError(kValid, {"model.head_dim=33"}), "model.head_dim = 33 is odd"));
  CATCH_CHECK(Contains(LoadError(kValid, {"model.dim=100", "model.n_heads=8"}), "or model.head_dim set"));
}

CATCH_TEST_CASE("a missing config file or base file is named") {
  auto missing = tessera::LoadConfig("/nonexistent/tessera.yaml", {});
  CATCH_REQUIRE_FALSE(missing.ok());
  CATCH_CHECK(Contains(std::string(missing.status().message()),
                       "config file '/nonexistent/tessera.yaml' does not exist"));
  CATCH_CHECK(Contains(LoadError("base: no_such_base.yaml\n"), "no_such_base.yaml' does not exist"));
  CATCH_CHECK(Contains(LoadError("base: bad.yaml\n"), "includes itself"));
}

CATCH_TEST_CASE("docs/config.md is the schema's own reference, up to date") {
  auto doc = tessera::ReadFileToString(std::string(TESSERA_SOURCE_DIR) + "/docs/config.md");
  CATCH_REQUIRE(doc.ok());
  // If this fails: build/tessera config --markdown > docs/config.md
  CATCH_CHECK(*doc == tessera::ConfigSchemaMarkdown());
}

// Fuzz: random mutations of a valid config (values replaced by values of other types or out of
// range, keys misspelt, lines deleted, duplicated or garbled, indentation broken) never crash
// the loader, and every outcome is either a config that passed validation or an error that
// names where (the file and line) or what (a key) is wrong.
CATCH_TEST_CASE("config fuzz: mutated configs load and validate, or name the offending key or line") {
  tessera::Config base;
  base.data.train = {{"corpus/text", 0.7}, {"corpus/code", 0.3}};
  base.data.val = {{"corpus/val", 1.0}};
  const std::string valid = tessera::ConfigToYaml(base);
  CATCH_REQUIRE(tessera::LoadConfig(WriteYaml("fuzz_valid.yaml", valid), {}).ok());
  std::vector<std::string> lines;
  for (size_t start = 0; start < valid.size();) {
    size_t end = valid.find('\n', start);
    lines.push_back(valid.substr(start, end - start));
    start = end == std::string::npos ? valid.size() : end + 1;
  }
  const std::vector<std::string> values = {"abc",    "-1",  "1e99",  "[1, 2]",
                                           "{a: 1}", "",    "true",  "0",
                                           "nan",    "0.5", "\"x\"", "[{prefix: p, weight: -3}]",
                                           "auto",   "~",   "9e18"};
  std::mt19937 rng(20261130);
  int loaded = 0, refused = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<std::string> mutated = lines;
    const int mutations = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < mutations; ++k) {
      const size_t i = rng() % mutated.size();
      std::string& line = mutated[i];
      switch (rng() % 6) {
        case 0: {  // another value
          const size_t colon = line.find(": ");
          if (colon != std::string::npos) line = line.substr(0, colon + 2) + values[rng() % values.size()];
          break;
        }
        case 1:  // a misspelt key
          if (line.size() > 3)
            line.insert(2 + rng() % (line.size() - 2), 1, static_cast<char>('a' + rng() % 26));
          break;
        case 2:
          mutated.erase(mutated.begin() + i);
          break;
        case 3:
          mutated.insert(mutated.begin() + i, line);
          break;
        case 4:
          line = std::string(rng() % 4, ' ') + line;
          break;
        default:
          line = "%&*: ][";
          break;
      }
      if (mutated.empty()) mutated.push_back("model:");
    }
    std::string text;
    for (const std::string& l : mutated) text += l + "\n";
    const std::string path = WriteYaml("fuzz.yaml", text);
    auto config = tessera::LoadConfig(path, {});
    if (config.ok()) {
      ++loaded;
      CATCH_CHECK(tessera::ValidateConfig(*config).ok());
      continue;
    }
    ++refused;
    const std::string message(config.status().message());
    const bool names_place = message.find("fuzz.yaml") != std::string::npos;
    const bool names_key =
        message.find("key '") != std::string::npos || message.find("model.") != std::string::npos ||
        message.find("train.") != std::string::npos || message.find("data.") != std::string::npos ||
        message.find("parallel.") != std::string::npos;
    if (!names_place && !names_key)
      CATCH_FAIL("an error that names neither file nor key: " << message << "\n" << text);
  }
  CATCH_INFO(loaded << " mutated configs loaded, " << refused << " refused");
  CATCH_CHECK(refused > 100);  // the mutations do break most configs
}

CATCH_TEST_CASE("hostile YAML: deep nesting is an error, not a stack overflow") {
  std::string block;
  for (int i = 0; i < 100000; ++i) block += "- ";
  std::string mapping;
  for (int i = 0; i < 100000; ++i) mapping += "{a: ";
  std::string indented;
  for (int i = 0; i < 3000; ++i) indented += std::string(i, ' ') + "a:\n";
  for (const std::string& deep : {std::string(100000, '['), "model: " + std::string(100000, '['), block + "x",
                                  mapping, "train:\n  lr: " + std::string(100000, '{'), indented}) {
    // yaml-cpp's own depth guard stops these before its recursion exhausts the stack; the
    // message says so instead of yaml-cpp's "bad file".
    auto config = tessera::ConfigFromYamlString(deep, "deep.yaml");
    CATCH_REQUIRE_FALSE(config.ok());
    CATCH_CHECK(Contains(std::string(config.status().message()), "deep.yaml:"));
    CATCH_CHECK(Contains(std::string(config.status().message()),
                         ": not valid YAML: nested too deeply (the YAML parser stops at a depth of "));
    CATCH_CHECK(Contains(LoadError(deep), "bad.yaml:"));
  }
  // The message quotes the start of the assignment, not all 100000 characters.
  const std::string set_error = LoadError(kValid, {"parallel.pp_layers=" + std::string(100000, '[')});
  CATCH_CHECK(set_error.rfind("--set parallel.pp_layers=" + std::string(98, '[') +
                                  "...: value is not valid YAML: nested too deeply (the YAML parser stops at "
                                  "a depth of ",
                              0) == 0);
  CATCH_CHECK(set_error.size() < 300);
}

CATCH_TEST_CASE("hostile YAML: integers beyond int64 and list entries that would overflow a sum") {
  for (const char* big : {"9223372036854775808", "-9223372036854775809", "99999999999999999999999", "1e19"}) {
    CATCH_CAPTURE(big);
    CATCH_CHECK(Contains(LoadError(kValid, {std::string("train.seed=") + big}),
                         std::string("--set train.seed=") + big + ": key 'train.seed' = " + big +
                             " does not fit a 64-bit integer"));
  }
  // INT64_MAX itself fits, and is then out of the key's range.
  CATCH_CHECK(Contains(LoadError(kValid, {"model.dim=9223372036854775807"}),
                       "key 'model.dim' = 9223372036854775807 is out of range"));
  CATCH_CHECK(Contains(LoadError(kValid, {"model.dim=-9223372036854775808"}), "is out of range"));
  CATCH_CHECK(Contains(LoadError(kValid, {"parallel.pp_layers=[9223372036854775807, 9223372036854775807]"}),
                       "parallel.pp_layers entry 0 = 9223372036854775807 exceeds model.n_layers = 4"));
  CATCH_CHECK(Contains(LoadError(kValid, {"parallel.pp_layers=[1, 92233720368547758070]"}),
                       "key 'parallel.pp_layers' expects list of integers"));
}

CATCH_TEST_CASE("packed-document options need the end-of-document token, and name the keys") {
  for (const char* option : {"data.document_mask=true", "data.reset_position_ids=true"}) {
    auto missing = tessera::ConfigFromOverrides({"data.train=x", "train.eval_every=0", option});
    CATCH_REQUIRE_FALSE(missing.ok());
    const std::string message(missing.status().message());
    CATCH_CHECK(Contains(message, std::string(option).substr(0, std::string(option).find('='))));
    CATCH_CHECK(Contains(message, "set data.eod_token"));
  }
  auto beyond = tessera::ConfigFromOverrides(
      {"data.train=x", "train.eval_every=0", "data.document_mask=true", "data.eod_token=512"});
  CATCH_REQUIRE_FALSE(beyond.ok());
  CATCH_CHECK(
      Contains(std::string(beyond.status().message()), "data.eod_token = 512 is not below model.vocab_size"));
  auto fine = tessera::ConfigFromOverrides(
      {"data.train=x", "train.eval_every=0", "data.document_mask=true", "data.eod_token=511"});
  CATCH_CHECK(fine.ok());
  CATCH_CHECK(fine->data.document_mask);
  CATCH_CHECK(fine->data.eod_token == 511);
  CATCH_CHECK_FALSE(fine->data.reset_position_ids);
}
