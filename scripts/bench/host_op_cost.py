#!/usr/bin/env python3
"""The host's cost of one LibTorch operator, without the device: dispatch, autograd's recording
and the backward node, timed on tiny CPU tensors so that the arithmetic is negligible. It is the
part of a kernel launch that a CUDA graph replay removes besides the driver's own launch
(docs/perf.md, "CUDA graphs"). Prints the best of 20 rounds of a 1000-operator chain.

  .venv/bin/python scripts/bench/host_op_cost.py
"""
import time

import torch


def chain(x, w, n):
    y = x
    for _ in range(n):
        y = y * w  # one operator forward, one (mul) in backward
    return y.sum()


def main():
    torch.set_num_threads(1)
    x = torch.randn(8, requires_grad=True)
    w = torch.randn(8)
    for _ in range(50):  # warm-up: the allocator and autograd's first nodes
        chain(x, w, 100).backward()
    forward, both = float("inf"), float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        loss = chain(x, w, 1000)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        forward, both = min(forward, (t1 - t0) / 1000), min(both, (t2 - t0) / 1000)
    print(f"torch {torch.__version__}: {forward * 1e6:.2f} us per forward operator with autograd, "
          f"{both * 1e6:.2f} us per forward + backward pair")


if __name__ == "__main__":
    main()
