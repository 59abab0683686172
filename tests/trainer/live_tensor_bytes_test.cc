// Tests of trainer/live_tensor_bytes: tensors allocated while it is alive are counted to the
// byte, frees subtract, the peak stays, what existed before is not counted, and a backward
// pass's allocations are seen.
#include "trainer/live_tensor_bytes.h"

#include <torch/torch.h>

#include "tests/catch_compat.h"

CATCH_TEST_CASE("live tensor bytes: allocations and frees to the byte, with the peak") {
  torch::Tensor before = torch::ones({1000});
  tessera::LiveTensorBytes live;
  CATCH_CHECK(live.current() == 0);
  {
    torch::Tensor a = torch::empty({1 << 20}, torch::kFloat);   // 4 MiB
    torch::Tensor b = torch::empty({1 << 18}, torch::kDouble);  // 2 MiB
    CATCH_CHECK(live.current() == (4 << 20) + (2 << 20));
  }
  CATCH_CHECK(live.current() == 0);
  CATCH_CHECK(live.peak() == (4 << 20) + (2 << 20));
  before = torch::Tensor();  // allocated before: its free is not subtracted
  CATCH_CHECK(live.current() == 0);
  live.ResetPeak();
  CATCH_CHECK(live.peak() == 0);
}

CATCH_TEST_CASE("live tensor bytes: a backward pass's saved tensors and gradients are seen") {
  torch::Tensor w = torch::randn({256, 256}, torch::requires_grad());
  tessera::LiveTensorBytes live;
  torch::Tensor x = torch::randn({512, 256});  // 512 KiB
  torch::Tensor y = torch::tanh(torch::matmul(x, w));
  // x (matmul keeps it for w's gradient) and y (tanh keeps its output); the product itself is
  // freed once tanh ran.
  CATCH_CHECK(live.current() == 2 * 512 * 256 * 4);
  y.sum().backward();
  CATCH_CHECK(w.grad().defined());
  // The gradient of w (256 KiB) was allocated during backward and is still alive.
  CATCH_CHECK(live.current() >= 256 * 256 * 4);
  CATCH_CHECK(live.peak() > live.current());
}
