// Tests of trainer/lr_schedule at hand-computed steps.
#include "trainer/lr_schedule.h"

#include <cmath>

#include "tests/catch_compat.h"

CATCH_TEST_CASE("warmup is linear and cosine decay ends at min_lr") {
  tessera::LrSchedule s{/*peak_lr=*/1.0, /*min_lr=*/0.1, /*warmup_steps=*/10, /*total_steps=*/110};
  CATCH_CHECK(s.At(0) == Approx(0.1));  // (0+1)/10
  CATCH_CHECK(s.At(4) == Approx(0.5));
  CATCH_CHECK(s.At(9) == Approx(1.0));   // peak at the last warmup step
  CATCH_CHECK(s.At(10) == Approx(1.0));  // cosine starts at the peak
  // Halfway through the 100 decay steps: min + (peak - min) / 2.
  CATCH_CHECK(s.At(60) == Approx(0.55));
  // A quarter of the way: min + (peak-min) * (1 + cos(pi/4)) / 2 = 0.1 + 0.9 * 0.853553...
  CATCH_CHECK(s.At(35) == Approx(0.1 + 0.9 * (1 + std::sqrt(0.5)) / 2));
  CATCH_CHECK(s.At(110) == Approx(0.1));
  CATCH_CHECK(s.At(500) == Approx(0.1));
}

CATCH_TEST_CASE("no warmup starts at the peak, and no decay steps stays at the peak") {
  tessera::LrSchedule s{2.0, 0.0, 0, 4};
  CATCH_CHECK(s.At(0) == Approx(2.0));
  CATCH_CHECK(s.At(2) == Approx(1.0));
  tessera::LrSchedule flat{2.0, 0.0, 5, 5};
  CATCH_CHECK(flat.At(7) == Approx(2.0));
}
