// Tests of trainer/cuda_graph_policy: train.cuda_graphs is on exactly where the layout allows,
// each rule that rules it out gives its own reason naming the key or the layout, auto stays
// quiet where it is off, true names every reason, false is off, and the log line reads as the
// start-up log prints it.
#include "trainer/cuda_graph_policy.h"

#include <string>
#include <vector>

#include "tests/catch_compat.h"

namespace {

using tessera::CudaGraphLayout;
using tessera::CudaGraphsMode;

tessera::Config WithMode(CudaGraphsMode mode) {
  tessera::Config config;
  config.train.cuda_graphs = mode;
  return config;
}

constexpr CudaGraphLayout kSingleGpu{/*cuda=*/true, /*tp=*/1, /*pp=*/1, /*dp=*/1};

bool AnyReasonHas(const tessera::CudaGraphDecision& d, const std::string& text) {
  for (const std::string& r : d.reasons) {
    if (r.find(text) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

CATCH_TEST_CASE("cuda graphs are on for one GPU and for data parallelism at zero 0 and 1") {
  for (CudaGraphsMode mode : {CudaGraphsMode::kAuto, CudaGraphsMode::kTrue}) {
    for (int64_t dp : {1, 8}) {
      for (int64_t zero : {0, 1}) {
        tessera::Config config = WithMode(mode);
        config.parallel.zero = zero;
        CudaGraphLayout layout = kSingleGpu;
        layout.dp = dp;
        const tessera::CudaGraphDecision d = tessera::DecideCudaGraphs(config, layout);
        CATCH_INFO("dp " << dp << ", zero " << zero);
        CATCH_CHECK(d.on);
        CATCH_CHECK(d.reasons.empty());
        CATCH_CHECK(d.log);
        CATCH_CHECK(d.LogLine() == "cuda graphs: on (micro-step captured after 3 warm-up steps)");
      }
    }
  }
}

CATCH_TEST_CASE("each rule that rules cuda graphs out gives its own reason") {
  struct Case {
    std::string name;
    void (*change)(tessera::Config&, CudaGraphLayout&);
    std::string names;  // what the reason must name
  };
  const std::vector<Case> cases = {
      {"cpu", [](tessera::Config&, CudaGraphLayout& l) { l.cuda = false; }, "CPU"},
      {"pp", [](tessera::Config&, CudaGraphLayout& l) { l.pp = 2; }, "pipeline parallel (pp = 2)"},
      {"tp", [](tessera::Config&, CudaGraphLayout& l) { l.tp = 4; }, "tensor parallel (tp = 4)"},
      {"cp", [](tessera::Config&, CudaGraphLayout& l) { l.cp = 2; }, "context parallel (cp = 2)"},
      {"zero 2", [](tessera::Config& c, CudaGraphLayout&) { c.parallel.zero = 2; }, "parallel.zero = 2"},
      {"zero 3", [](tessera::Config& c, CudaGraphLayout&) { c.parallel.zero = 3; }, "parallel.zero = 3"},
      {"document mask", [](tessera::Config& c, CudaGraphLayout&) { c.data.document_mask = true; },
       "data.document_mask"},
      {"reset positions", [](tessera::Config& c, CudaGraphLayout&) { c.data.reset_position_ids = true; },
       "data.reset_position_ids"},
      {"profile", [](tessera::Config& c, CudaGraphLayout&) { c.train.profile_step = 5; },
       "train.profile_step"},
  };
  for (const Case& c : cases) {
    CATCH_INFO(c.name);
    // true: off, logged, with exactly this one reason.
    tessera::Config config = WithMode(CudaGraphsMode::kTrue);
    CudaGraphLayout layout = kSingleGpu;
    c.change(config, layout);
    const tessera::CudaGraphDecision d = tessera::DecideCudaGraphs(config, layout);
    CATCH_CHECK_FALSE(d.on);
    CATCH_CHECK(d.log);
    CATCH_REQUIRE(d.reasons.size() == 1);
    CATCH_CHECK(AnyReasonHas(d, c.names));
    CATCH_CHECK(d.LogLine() == "cuda graphs: off (" + d.reasons[0] + ")");
    // auto: off as well, and quiet.
    config.train.cuda_graphs = CudaGraphsMode::kAuto;
    const tessera::CudaGraphDecision quiet = tessera::DecideCudaGraphs(config, layout);
    CATCH_CHECK_FALSE(quiet.on);
    CATCH_CHECK_FALSE(quiet.log);
    CATCH_CHECK(quiet.reasons == d.reasons);
  }
}

CATCH_TEST_CASE("every reason is listed, in the log line's order, when several apply") {
  tessera::Config config = WithMode(CudaGraphsMode::kTrue);
  config.parallel.zero = 3;
  const tessera::CudaGraphDecision d =
      tessera::DecideCudaGraphs(config, CudaGraphLayout{/*cuda=*/true, /*tp=*/2, /*pp=*/4, /*dp=*/2});
  CATCH_CHECK_FALSE(d.on);
  CATCH_REQUIRE(d.reasons.size() == 3);
  const std::string line = d.LogLine();
  CATCH_INFO(line);
  const size_t pp = line.find("pipeline parallel (pp = 4)"), tp = line.find("tensor parallel (tp = 2)");
  const size_t zero = line.find("parallel.zero = 3");
  CATCH_CHECK(line.rfind("cuda graphs: off (pipeline parallel", 0) == 0);
  CATCH_CHECK(pp < tp);
  CATCH_CHECK(tp < zero);
  CATCH_CHECK(zero != std::string::npos);
  CATCH_CHECK(line.find("; ") != std::string::npos);
}

CATCH_TEST_CASE("train.cuda_graphs = false is off on a layout that allows graphs, and says so if asked") {
  const tessera::CudaGraphDecision d =
      tessera::DecideCudaGraphs(WithMode(CudaGraphsMode::kFalse), kSingleGpu);
  CATCH_CHECK_FALSE(d.on);
  CATCH_CHECK_FALSE(d.log);
  CATCH_CHECK(d.LogLine() == "cuda graphs: off (train.cuda_graphs = false)");
}

CATCH_TEST_CASE("train.cuda_graphs reads auto, true and false from YAML and --set, and nothing else") {
  for (const std::string word : {"auto", "true", "false"}) {
    CATCH_INFO(word);
    tessera::Config set;
    CATCH_REQUIRE(tessera::ApplyOverride(set, "train.cuda_graphs=" + word).ok());
    CATCH_CHECK(tessera::EnumName(set.train.cuda_graphs) == word);
    // In YAML, true and false are booleans' spellings: the key still reads them as its words.
    auto yaml = tessera::ConfigFromYamlString("train:\n  cuda_graphs: " + word + "\n", "test.yaml");
    CATCH_REQUIRE(yaml.ok());
    CATCH_CHECK(yaml->train.cuda_graphs == set.train.cuda_graphs);
  }
  CATCH_CHECK(tessera::Config().train.cuda_graphs == CudaGraphsMode::kFalse);
  tessera::Config config;
  const absl::Status bad = tessera::ApplyOverride(config, "train.cuda_graphs=yes");
  CATCH_REQUIRE_FALSE(bad.ok());
  const std::string message(bad.message());
  CATCH_INFO(message);
  CATCH_CHECK(message.find("train.cuda_graphs") != std::string::npos);
  CATCH_CHECK(message.find("auto | true | false") != std::string::npos);
}
