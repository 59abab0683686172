#!/usr/bin/env python3
"""PyTorch's own AdamW step on the CPU, the peer of bench/optimizer_step_bench.cc.

Builds fp32 tensors of the shapes LlamaForCausalLM gives the ~100M case of scripts/bench/vs_hf.sh
(tied embedding; q, k, v, o, gate, up, down and two norms per layer; the final norm) with the
parameter groups of scripts/bench/hf_reference.py (matrices decayed, norms and the embedding
not), gives every tensor a gradient, and times torch.optim.AdamW.step() two ways over the same
tensors, alternating step by step: fused=True (one kernel per tensor) and foreach=True (a list
of whole-tensor ops). Gradient clipping is not part of the step here (HF scales the gradients in
clip_grad_norm_ before it), so the gradients are used as they are.

Also times x.add_(y) over two parameter-sized buffers: 12 bytes per element, each read or written
once, updated in place as AdamW updates its buffers (a copy would also read every destination line
before writing it, traffic its byte count leaves out). It is the streaming bandwidth these threads
reach, the reference a memory-bound step is held against.

Output: `peer params=... tensors=... threads=... torch=...`, `stream gb_per_s=...` and
`step side=fused|foreach ms=...` for every timed step (scripts/bench/optimizer_step.sh reads them).
"""
import argparse
import statistics
import sys
import time

import torch


def shapes(dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab):
    """(shape, decayed) of every parameter in LlamaForCausalLM's order, tied embedding once."""
    kv = dim // n_heads * n_kv_heads
    out = [((vocab, dim), False)]  # embed_tokens, also the head
    for _ in range(n_layers):
        out += [((dim,), False), ((dim, dim), True), ((kv, dim), True), ((kv, dim), True), ((dim, dim), True),
                ((dim,), False), ((ffn_dim, dim), True), ((ffn_dim, dim), True), ((dim, ffn_dim), True)]
    out.append(((dim,), False))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--dim", type=int, default=768)
    a("--layers", type=int, default=14)
    a("--heads", type=int, default=12)
    a("--kv-heads", type=int, default=4)
    a("--ffn", type=int, default=2432)
    a("--vocab", type=int, default=512)
    a("--threads", type=int, default=0, help="torch.set_num_threads; 0 = leave torch's default")
    a("--warmup", type=int, default=2, help="untimed steps of each side first")
    a("--steps", type=int, default=5, help="timed steps of each side")
    a("--first", choices=["fused", "foreach"], default="fused")
    a("--lr", type=float, default=3e-4)
    a("--weight-decay", type=float, default=0.1)
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1234)

    params, decay, no_decay = [], [], []
    for shape, decayed in shapes(args.dim, args.layers, args.heads, args.kv_heads, args.ffn, args.vocab):
        t = torch.empty(shape).normal_(0.0, 0.02).requires_grad_()
        t.grad = torch.empty(shape).normal_(0.0, 1e-2)
        params.append(t)
        (decay if decayed else no_decay).append(t)
    numel = sum(t.numel() for t in params)
    print(f"peer params={numel} tensors={len(params)} threads={torch.get_num_threads()} "
          f"torch={torch.__version__}", flush=True)

    x, y = torch.zeros(numel), torch.zeros(numel)
    x.add_(y)  # touches every page first
    passes = []
    for _ in range(5):
        start = time.perf_counter()
        x.add_(y)
        passes.append(time.perf_counter() - start)
    print(f"stream gb_per_s={12 * numel / statistics.median(passes) / 1e9:.2f} "
          f"(x.add_(y): read x, y, write x, 12 B/element)", flush=True)
    del x, y

    def adamw(**impl):
        groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, **impl)

    # Separate state per optimizer over the same parameters and gradients.
    sides = {"fused": adamw(fused=True), "foreach": adamw(foreach=True)}
    order = [args.first, "foreach" if args.first == "fused" else "fused"]
    with torch.no_grad():
        for i in range(2 * (args.warmup + args.steps)):
            side = order[i % 2]
            start = time.perf_counter()
            sides[side].step()
            ms = (time.perf_counter() - start) * 1e3
            if i >= 2 * args.warmup:
                print(f"step side={side} ms={ms:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
