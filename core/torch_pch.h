// The LibTorch headers, precompiled once and reused by every target that includes LibTorch
// (LibTorch headers dominate compile time otherwise).
#pragma once
#include <torch/torch.h>
