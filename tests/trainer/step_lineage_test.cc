// Tests of trainer/step_lineage: which records of a step-indexed log a resume keeps.
#include "trainer/step_lineage.h"

#include <vector>

#include "tests/catch_compat.h"

using tessera::StepsToKeep;
using Keep = std::vector<bool>;

CATCH_TEST_CASE("an uninterrupted history keeps every step up to the checkpoint's") {
  CATCH_CHECK(StepsToKeep({1, 2, 3, 4, 5}, 5) == Keep{true, true, true, true, true});
  CATCH_CHECK(StepsToKeep({1, 2, 3, 4, 5}, 3) == Keep{true, true, true, false, false});
  CATCH_CHECK(StepsToKeep({1, 10, 20, 30}, 25) == Keep{true, true, true, false});  // log_every 10
  CATCH_CHECK(StepsToKeep({}, 7).empty());
  CATCH_CHECK(StepsToKeep({1, 2}, 0) == Keep{false, false});
}

CATCH_TEST_CASE("a step that goes back abandons the records it repeats") {
  // Attempt 1 logged 1..5 and was stopped; attempt 2 resumed from step 3 without cutting the log.
  CATCH_CHECK(StepsToKeep({1, 2, 3, 4, 5, 4, 5, 6}, 6) ==
              Keep{true, true, true, false, false, true, true, true});
  // A rollback from step 6 (the diverged record included) to the checkpoint of step 2.
  CATCH_CHECK(StepsToKeep({1, 2, 3, 4, 5, 6, 3, 4}, 4) ==
              Keep{true, true, false, false, false, false, true, true});
  // Several restarts; the last resumes from step 2 itself: its records stay, earlier 3s go.
  CATCH_CHECK(StepsToKeep({1, 2, 3, 2, 3, 4, 3}, 3) == Keep{true, false, false, true, false, false, true});
}
