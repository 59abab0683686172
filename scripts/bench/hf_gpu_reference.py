#!/usr/bin/env python3
"""GPU reference run for scripts/bench/gpu_vs_hf.sh: Hugging Face LlamaForCausalLM training steps.

Self-contained (numpy, torch, transformers). It trains a randomly initialised LlamaForCausalLM the
way Tessera trains (eager PyTorch, no torch.compile):

  * model:     LlamaConfig from the arguments (RMSNorm, SwiGLU, RoPE, GQA, no biases),
               attn_implementation="sdpa", fp32 weights, optionally tied embeddings; built directly
               on --device.
  * precision: bf16 = torch.autocast(device, bfloat16) around forward + loss, fp32 master weights,
               fp32 gradients and optimizer state, cross-entropy on fp32 logits (as Tessera does);
               fp32 = no autocast.
  * optimizer: torch.optim.AdamW (PyTorch's default implementation for the device: foreach on
               CUDA), constant --lr, weight decay on >= 2-D non-embedding weights, global-norm
               clipping with torch.nn.utils.clip_grad_norm_.
  * batching:  --global-batch sequences per optimizer step as global/micro gradient-accumulation
               micro-batches, each loss divided by the number of micro-batches.

Data: a raw little-endian uint16 token file, read with Tessera's sequential contract: micro-batch
k of the run holds sequences j = k*micro .. k*micro+micro-1, and sequence j is
tokens[s : s+seq_len+1] with s = (j mod n_windows) * seq_len, n_windows = (len-1) // seq_len.

Timing: each optimizer step (batch transfer, forward/backward of every micro-batch, clipping,
AdamW, zero_grad) is timed with time.perf_counter after a device synchronisation. The first
--warmup-steps-excluded steps are dropped: tokens/s = global*seq_len*timed / sum(timed step
times). MFU = flops_per_token * tokens/s / (peak TFLOP/s * 1e12), with the formula Tessera uses:
flops_per_token = 6 * matmul parameters + 12 * n_layers * dim * seq_len, matmul parameters =
every linear weight of the blocks + the head's vocab*dim (counted even when tied).

Output: one line per step, then one JSON line {"impl": "hf", "tokens_per_s": ..., "mfu": ..., ...}
(also written to --json-out when given).

CPU smoke test of this script's logic (seconds):
  python3 scripts/bench/hf_gpu_reference.py --device cpu --dim 64 --n-layers 2 --n-heads 4 \
      --n-kv-heads 2 --ffn-dim 128 --vocab-size 1024 --seq-len 64 --micro-batch 2 \
      --global-batch 4 --steps 3 --warmup-steps-excluded 1 --data tokens.u16 --peak-tflops 1
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--dim", type=int, default=2048)
    a("--n-layers", type=int, default=16)
    a("--n-heads", type=int, default=32)
    a("--n-kv-heads", type=int, default=8)
    a("--ffn-dim", type=int, default=8192)
    a("--vocab-size", type=int, default=128256)
    a("--tie-embeddings", type=int, choices=(0, 1), default=1)
    a("--rope-theta", type=float, default=500000.0)
    a("--norm-eps", type=float, default=1e-5)
    a("--seq-len", type=int, default=4096)
    a("--micro-batch", type=int, default=1)
    a("--global-batch", type=int, default=4, help="sequences per optimizer step")
    a("--steps", type=int, default=10)
    a("--warmup-steps-excluded", type=int, default=3)
    a("--lr", type=float, default=3e-4)
    a("--weight-decay", type=float, default=0.1)
    a("--grad-clip", type=float, default=1.0, help="<= 0 disables clipping")
    a("--precision", choices=("bf16", "fp32"), default="bf16")
    a("--device", choices=("cuda", "cpu"), default="cuda")
    a("--peak-tflops", type=float, default=None,
      help="dense peak of the device at --precision, TFLOP/s (default: 989 = H100/H200 SXM bf16 "
           "on cuda, 0 = no MFU on cpu)")
    a("--data", required=True, help="raw little-endian uint16 token file")
    a("--seed", type=int, default=1234)
    a("--json-out", default=None, help="also write the result JSON here")
    a("--profile-step", type=int, default=0,
      help="record this step (1-based) with torch.profiler and print its GPU kernels' summary, as "
           "Tessera's train.profile_step does; 0 = off")
    a("--fused-adamw", type=int, choices=(0, 1), default=None,
      help="torch.optim.AdamW(fused=...): default 1 on cuda (its fastest AdamW), 0 on cpu")
    args = p.parse_args(argv)
    if args.global_batch % args.micro_batch:
        p.error("--global-batch must be a multiple of --micro-batch")
    if args.dim % args.n_heads or args.n_heads % args.n_kv_heads:
        p.error("--dim must be divisible by --n-heads, and --n-heads by --n-kv-heads")
    if args.steps <= args.warmup_steps_excluded:
        p.error("--steps must exceed --warmup-steps-excluded")
    if args.fused_adamw is None:
        args.fused_adamw = 1 if args.device == "cuda" else 0
    if args.peak_tflops is None:
        args.peak_tflops = 989.0 if args.device == "cuda" else 0.0
    return args


def matmul_parameters(a):
    hd = a.dim // a.n_heads
    attention = a.dim * (a.n_heads * hd) * 2 + a.dim * (a.n_kv_heads * hd) * 2
    return a.n_layers * (attention + 3 * a.dim * a.ffn_dim) + a.vocab_size * a.dim


def flops_per_token(a):
    return 6.0 * matmul_parameters(a) + 12.0 * a.n_layers * a.dim * a.seq_len


class TokenSequences:
    def __init__(self, path, seq_len, micro_batch, vocab_size):
        self.tokens = np.fromfile(path, dtype="<u2")
        self.seq_len, self.micro_batch = seq_len, micro_batch
        self.windows = (len(self.tokens) - 1) // seq_len
        if self.windows < 1:
            sys.exit(f"error: {path} has {len(self.tokens)} tokens, fewer than seq_len+1 = {seq_len + 1}")
        if int(self.tokens.max()) >= vocab_size:
            sys.exit(f"error: {path} holds token id {int(self.tokens.max())} >= --vocab-size {vocab_size}")
        self.k = 0

    def next(self):
        L = self.seq_len
        rows = [self.tokens[(j % self.windows) * L:(j % self.windows) * L + L + 1]
                for j in range(self.k * self.micro_batch, (self.k + 1) * self.micro_batch)]
        self.k += 1
        batch = torch.from_numpy(np.stack(rows).astype(np.int64))
        return batch[:, :-1], batch[:, 1:]


def build_model(a, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(vocab_size=a.vocab_size, hidden_size=a.dim, intermediate_size=a.ffn_dim,
               num_hidden_layers=a.n_layers, num_attention_heads=a.n_heads,
               num_key_value_heads=a.n_kv_heads, hidden_act="silu", max_position_embeddings=a.seq_len,
               rms_norm_eps=a.norm_eps, tie_word_embeddings=bool(a.tie_embeddings), attention_bias=False,
               mlp_bias=False, attention_dropout=0.0, use_cache=False, bos_token_id=None,
               eos_token_id=None, pad_token_id=None)
    try:  # transformers 5.x: RoPE settings live in rope_parameters
        config = LlamaConfig(**cfg, rope_parameters={"rope_type": "default", "rope_theta": a.rope_theta})
    except TypeError:
        config = LlamaConfig(**cfg, rope_theta=a.rope_theta)
    config._attn_implementation = "sdpa"
    # Built (and initialised) directly on the device: a 1B model's init on the CPU takes longer
    # than the whole benchmark.
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model = model.to(device=device, dtype=torch.float32)
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != "sdpa":
        sys.exit(f"error: the model uses attention implementation {impl!r}, expected 'sdpa'")
    if bool(a.tie_embeddings) != (model.lm_head.weight is model.model.embed_tokens.weight):
        sys.exit("error: embedding tying did not come out as requested")
    model.train()
    return model


def start_profiler(device):
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = profile(activities=activities)
    prof.__enter__()
    return prof


def print_profile(prof, wall_s):
    """The GPU activities of the profiled step, summed by kernel name, as Tessera's log prints them."""
    from torch.autograd import DeviceType

    totals, count, busy = {}, 0, 0.0
    for e in prof.events():
        if e.device_type != DeviceType.CUDA:
            continue
        n, us = totals.get(e.name, (0, 0.0))
        dur = e.time_range.elapsed_us()
        totals[e.name] = (n + 1, us + dur)
        count += 1
        busy += dur
    print(f"profile: {count} GPU activities (kernels, copies, fills) of {len(totals)} kinds, GPU busy "
          f"{busy / 1e3:.1f} ms of a {wall_s * 1e3:.1f} ms step ({100 * busy / 1e6 / wall_s:.0f}%)")
    for name, (n, us) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:20]:
        print(f"profile: {us / 1e3:8.2f} ms {100 * us / max(busy, 1e-9):5.1f}% {n:6d} x  {name[:110]}")


def main(argv=None):
    a = parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device")
    device = torch.device(a.device)
    torch.manual_seed(a.seed)
    import transformers

    model = build_model(a, device)
    params = sum(p.numel() for p in model.parameters())
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay = [p for p in model.parameters() if p.dim() >= 2 and id(p) not in embedding_ids]
    no_decay = [p for p in model.parameters() if not (p.dim() >= 2 and id(p) not in embedding_ids)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95), eps=1e-8,
                            fused=bool(a.fused_adamw))
    data = TokenSequences(a.data, a.seq_len, a.micro_batch, a.vocab_size)
    accum = a.global_batch // a.micro_batch
    tokens_per_step = a.global_batch * a.seq_len
    fpt = flops_per_token(a)
    amp = a.precision == "bf16"

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"hf_gpu_reference: transformers {transformers.__version__}, torch {torch.__version__}, {name}, "
          f"precision {a.precision}, {params:,} parameters ({matmul_parameters(a):,} in matmuls), "
          f"{accum} micro-batch(es) of {a.micro_batch}x{a.seq_len} per step, "
          f"{fpt:.4g} FLOP/token, peak {a.peak_tflops} TFLOP/s", flush=True)

    times, loss_value = [], float("nan")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(a.steps):
        profiler = start_profiler(device) if step + 1 == a.profile_step else None
        sync()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for _ in range(accum):
            x, y = data.next()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(input_ids=x, use_cache=False).logits
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1)) / accum
            loss.backward()
            loss_sum += loss.detach()
            del logits, loss
        if a.grad_clip > 0:
            gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip))
        else:
            gnorm = float("nan")
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_value = float(loss_sum)
        sync()
        dt = time.perf_counter() - t0
        times.append(dt)
        if profiler is not None:
            profiler.__exit__(None, None, None)
            print_profile(profiler, dt)
        tps = tokens_per_step / dt
        mfu = fpt * tps / (a.peak_tflops * 1e12) if a.peak_tflops > 0 else 0.0
        tag = " (not timed)" if step < a.warmup_steps_excluded else ""
        print(f"step={step + 1} loss={loss_value:.4f} step_time_s={dt:.4f} tokens_per_s={tps:.1f} "
              f"mfu={mfu:.4f} grad_norm={gnorm:.3f}{tag}", flush=True)

    timed = times[a.warmup_steps_excluded:]
    tps = tokens_per_step * len(timed) / sum(timed)
    result = {
        "impl": "hf",
        "tokens_per_s": tps,
        "mfu": fpt * tps / (a.peak_tflops * 1e12) if a.peak_tflops > 0 else 0.0,
        "step_time_s": sum(timed) / len(timed),
        "timed_steps": len(timed),
        "params": params,
        "matmul_params": matmul_parameters(a),
        "flops_per_token": fpt,
        "peak_tflops": a.peak_tflops,
        "final_loss": loss_value,
        "memory_allocated_gb": torch.cuda.memory_allocated() / 2**30 if device.type == "cuda" else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "device": name,
        "precision": a.precision,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    line = json.dumps(result)
    print(line, flush=True)
    if a.json_out:
        tmp = a.json_out + ".tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, a.json_out)


if __name__ == "__main__":
    main()
