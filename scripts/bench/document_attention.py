#!/usr/bin/env python3
"""Document-masked attention on the CPU: one causal SDPA call per document against one SDPA call
with a boolean block-diagonal causal mask, forward + backward, through the same ATen kernels
LibTorch runs (kernels/document_attention.cc). Plain causal attention over the whole sequence is
timed beside them as the cost without documents. Prints medians of alternating rounds.

Usage: .venv/bin/python scripts/bench/document_attention.py [--seq 2048] [--docs 4] [--dim 512]
       [--heads 8] [--kv-heads 8] [--batch 1] [--threads 1] [--rounds 7]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def boundaries(seq, docs):
    # Unequal documents, as packing produces: lengths in the ratio 1 : 2 : ... : docs.
    weights = list(range(1, docs + 1))
    cuts, acc = [0], 0
    for w in weights[:-1]:
        acc += seq * w // sum(weights)
        cuts.append(acc)
    return cuts + [seq]


def per_document(q, k, v, bounds):
    parts = [F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True,
                                            enable_gqa=True) for s, e in zip(bounds, bounds[1:])]
    return torch.cat(parts, 2)


def masked(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def causal(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def time_one(fn, q, k, v, grad):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    start = time.perf_counter()
    fn(q, k, v).backward(grad)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--docs", type=int, default=4)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    hd = a.dim // a.heads
    bounds = boundaries(a.seq, a.docs)
    segments = torch.zeros(a.seq, dtype=torch.long)
    for i, s in enumerate(bounds[1:-1]):
        segments[s:] = i + 1
    mask = (segments[:, None] == segments[None, :]) & torch.ones(a.seq, a.seq, dtype=torch.bool).tril()
    print(f"torch {torch.__version__}, threads {a.threads}, batch {a.batch}, seq {a.seq}, documents {bounds}, "
          f"heads {a.heads} (kv {a.kv_heads}) x {hd}")
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator().manual_seed(0)
        q = torch.randn(a.batch, a.heads, a.seq, hd, generator=g).to(dtype)
        k = torch.randn(a.batch, a.kv_heads, a.seq, hd, generator=g).to(dtype)
        v = torch.randn(a.batch, a.kv_heads, a.seq, hd, generator=g).to(dtype)
        grad = torch.randn(a.batch, a.heads, a.seq, hd, generator=g).to(dtype)
        cases = {"per-document loop": lambda q, k, v: per_document(q, k, v, bounds),
                 "boolean mask": lambda q, k, v: masked(q, k, v, mask),
                 "causal, no documents": causal}
        # The two document paths agree (fp32: to rounding).
        ref = masked(q.double(), k.double(), v.double(), mask)
        for name in ("per-document loop", "boolean mask"):
            err = (cases[name](q, k, v).double() - ref).abs().max().item()
            print(f"  {str(dtype):15s} {name:22s} max |diff| vs fp64 mask {err:.2e}")
        times = {n: [] for n in cases}
        for n, fn in cases.items():
            time_one(fn, q, k, v, grad)  # warm-up
        for _ in range(a.rounds):
            for n, fn in cases.items():
                times[n].append(time_one(fn, q, k, v, grad))
        for n in cases:
            print(f"  {str(dtype):15s} {n:22s} forward+backward median {1e3 * statistics.median(times[n]):8.2f} ms "
                  f"(min {1e3 * min(times[n]):.2f}, {a.rounds} rounds)")


if __name__ == "__main__":
    main()
