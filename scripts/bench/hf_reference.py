#!/usr/bin/env python3
"""Reference training-throughput run: Hugging Face transformers' LlamaForCausalLM on CPU.

This is the "other side" of scripts/bench/vs_hf.sh. It trains a randomly initialised
LlamaForCausalLM (attn_implementation="sdpa") with exactly the recipe Tessera uses, so that the
two programs do the same work per optimizer step and their tokens/s can be compared:

  * model:     Llama config built from the arguments (RMSNorm, SwiGLU, RoPE, GQA, no biases),
               fp32 weights, optional tied input/output embeddings.
  * precision: fp32, or bf16 = torch.autocast("cpu", dtype=torch.bfloat16) around forward+loss
               with fp32 master weights, fp32 optimizer state and an fp32 loss.
  * optimizer: torch.optim.AdamW on its fastest path, fused=True (torch >= 2.4 fuses AdamW on CPU
               too; measured here on 26M parameters: fused 39 ms, foreach 309 ms, for-loop 490 ms
               per step), or --adamw-impl foreach / forloop; weight decay only on >=2-D
               weights that are not embeddings; linear warmup then cosine decay to --min-lr;
               global-norm gradient clipping (torch.nn.utils.clip_grad_norm_).
  * batching:  --global-batch sequences per optimizer step, as global_batch/micro_batch
               gradient-accumulation micro-batches; loss = mean CE over the micro-batch's target
               tokens divided by the number of accumulation steps.

Data contract (shared with Tessera's data.token_file): FILE is raw little-endian uint16 token
ids. Let n_seq = (len(tokens) - 1) // seq_len be the number of whole sequences that fit (each
needs seq_len + 1 tokens). Micro-batch k of the run (k = 0, 1, 2, ... counted across all optimizer
steps) holds sequences j = k*micro_batch ... k*micro_batch + micro_batch - 1; sequence j reads
tokens[s : s + seq_len + 1] with s = (j mod n_seq) * seq_len; inputs are the first seq_len of
those tokens and targets the last seq_len.

Timing: each optimizer step (data gather, all micro-batch forward/backward passes, clipping,
optimizer step, zero_grad) is timed with time.perf_counter. The first --warmup-steps-excluded
steps are dropped; tokens_per_s = global_batch * seq_len * timed_steps / sum(timed step times),
which is the same formula vs_hf.sh applies to Tessera's metrics.jsonl step_time_s values.

Output: one line per step `step=N loss=... tokens_per_s=...`, then one JSON line
{"impl":"hf","tokens_per_s":X,"step_time_s":Y,"params":P,"final_loss":L,"peak_rss_mib":M, ...};
peak_rss_mib is the process's peak resident set (VmHWM), what Tessera logs as its peak memory
on the CPU. --gradient-checkpointing 1 recomputes each decoder layer in backward.
"""
import argparse
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--dim", type=int, required=True)
    a("--n-layers", type=int, required=True)
    a("--n-heads", type=int, required=True)
    a("--n-kv-heads", type=int, required=True)
    a("--ffn-dim", type=int, required=True)
    a("--vocab-size", type=int, required=True)
    a("--seq-len", type=int, required=True)
    a("--micro-batch", type=int, required=True)
    a("--global-batch", type=int, required=True, help="sequences per optimizer step")
    a("--steps", type=int, required=True)
    a("--warmup-steps", type=int, default=0, help="LR warmup steps")
    a("--adamw-impl", choices=["fused", "foreach", "forloop"], default="fused",
      help="torch.optim.AdamW's implementation (default: fused, its fastest on CPU and GPU)")
    a("--lr", type=float, default=3e-4)
    a("--min-lr", type=float, default=3e-5)
    a("--weight-decay", type=float, default=0.1)
    a("--beta1", type=float, default=0.9)
    a("--beta2", type=float, default=0.95)
    a("--eps", type=float, default=1e-8)
    a("--grad-clip", type=float, default=1.0, help="global grad-norm clip; <= 0 disables")
    a("--rope-theta", type=float, default=500000.0)
    a("--norm-eps", type=float, default=1e-5)
    a("--tie-embeddings", type=int, choices=(0, 1), default=0)
    a("--precision", choices=("fp32", "bf16"), default="fp32")
    a("--threads", type=int, default=0, help="torch.set_num_threads; 0 = leave torch's default")
    a("--data", required=True, help="raw little-endian uint16 token file")
    a("--seed", type=int, default=1234)
    a("--profile-step", type=int, default=0,
      help="1-based optimizer step to record with torch.profiler as a Chrome trace (0 = off)")
    a("--profile-out", default="hf_profile_step.json", help="where --profile-step writes its trace")
    a("--gradient-checkpointing", type=int, choices=(0, 1), default=0,
      help="1: model.gradient_checkpointing_enable() (each decoder layer recomputed in backward)")
    a("--warmup-steps-excluded", type=int, default=2,
      help="number of initial optimizer steps excluded from the throughput figure")
    args = p.parse_args(argv)
    if args.global_batch % args.micro_batch:
        p.error("--global-batch must be a multiple of --micro-batch")
    if args.dim % args.n_heads or args.n_heads % args.n_kv_heads:
        p.error("--dim must be divisible by --n-heads, and --n-heads by --n-kv-heads")
    if args.steps <= args.warmup_steps_excluded:
        p.error("--steps must exceed --warmup-steps-excluded (no timed steps otherwise)")
    return args


def lr_at(step, args):
    """LR for 0-based optimizer step: linear warmup to --lr, then cosine decay to --min-lr."""
    if args.warmup_steps > 0 and step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    decay_steps = max(1, args.steps - args.warmup_steps)
    progress = min(1.0, (step - args.warmup_steps) / decay_steps)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1.0 + math.cos(math.pi * progress))


class TokenSequences:
    """Sequential micro-batches over a uint16 token file (see the data contract above)."""

    def __init__(self, path, seq_len, micro_batch, vocab_size):
        self.tokens = np.fromfile(path, dtype="<u2")
        self.seq_len = seq_len
        self.micro_batch = micro_batch
        self.n_seq = (len(self.tokens) - 1) // seq_len
        if self.n_seq < 1:
            sys.exit(f"error: {path} has {len(self.tokens)} tokens, fewer than seq_len+1={seq_len + 1}")
        top = int(self.tokens.max())
        if top >= vocab_size:
            sys.exit(f"error: {path} holds token id {top} >= --vocab-size {vocab_size}")
        self.k = 0  # next micro-batch index of the run

    def next(self):
        L = self.seq_len
        rows = []
        for j in range(self.k * self.micro_batch, (self.k + 1) * self.micro_batch):
            s = (j % self.n_seq) * L
            rows.append(self.tokens[s:s + L + 1])
        self.k += 1
        batch = torch.from_numpy(np.stack(rows).astype(np.int64))
        return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()


def build_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(
        vocab_size=args.vocab_size,
        hidden_size=args.dim,
        intermediate_size=args.ffn_dim,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_kv_heads,
        hidden_act="silu",
        max_position_embeddings=args.seq_len,
        rms_norm_eps=args.norm_eps,
        tie_word_embeddings=bool(args.tie_embeddings),
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        use_cache=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    try:  # transformers >= 4.56 / 5.x: RoPE settings live in rope_parameters
        config = LlamaConfig(**cfg, rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta})
    except TypeError:
        config = LlamaConfig(**cfg, rope_theta=args.rope_theta)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).to(torch.float32)
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != "sdpa":
        sys.exit(f"error: model uses attention implementation {impl!r}, expected 'sdpa'")
    if bool(args.tie_embeddings) != (model.lm_head.weight is model.model.embed_tokens.weight):
        sys.exit("error: embedding tying did not come out as requested")
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    return model


def build_optimizer(model, args):
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay = [], []
    for _, prm in model.named_parameters():  # named_parameters() yields a tied tensor once
        if not prm.requires_grad:
            continue
        (decay if prm.dim() >= 2 and id(prm) not in embedding_ids else no_decay).append(prm)
    groups = [
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    impl = {"fused": {"fused": True}, "foreach": {"foreach": True}, "forloop": {"foreach": False}}[args.adamw_impl]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps, **impl)


def main(argv=None):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    import transformers

    model = build_model(args)
    params = model.num_parameters()
    opt = build_optimizer(model, args)
    data = TokenSequences(args.data, args.seq_len, args.micro_batch, args.vocab_size)
    accum = args.global_batch // args.micro_batch
    tokens_per_step = args.global_batch * args.seq_len
    amp = args.precision == "bf16"

    print(f"hf_reference: transformers {transformers.__version__}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, precision {args.precision}, params {params:,}, "
          f"{accum} micro-batches of {args.micro_batch}x{args.seq_len} per step, "
          f"data {len(data.tokens):,} tokens ({data.n_seq:,} sequences)", flush=True)

    step_times, loss_val = [], float("nan")
    for step in range(args.steps):
        profiler = None
        if step + 1 == args.profile_step:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            profiler.__enter__()
        t0 = time.perf_counter()
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = 0.0
        for _ in range(accum):
            x, y = data.next()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                logits = model(input_ids=x, use_cache=False).logits
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
                loss = loss / accum
            loss.backward()
            loss_sum += loss.item()
        if args.grad_clip > 0:
            gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip))
        else:
            gnorm = float(torch.norm(torch.stack([p.grad.norm() for p in model.parameters()
                                                  if p.grad is not None])))
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if profiler is not None:
            profiler.__exit__(None, None, None)
            profiler.export_chrome_trace(args.profile_out)
            print(f"profile of step {step + 1} written to {args.profile_out}", flush=True)
        step_times.append(dt)
        loss_val = loss_sum
        tag = " (excluded)" if step < args.warmup_steps_excluded else ""
        print(f"step={step + 1} loss={loss_val:.4f} tokens_per_s={tokens_per_step / dt:.1f} "
              f"step_time_s={dt:.4f} lr={lr:.3e} grad_norm={gnorm:.4f}{tag}", flush=True)

    timed = step_times[args.warmup_steps_excluded:]
    peak_rss_mib = float("nan")
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak_rss_mib = int(line.split()[1]) / 1024.0
    result = {
        "impl": "hf",
        "tokens_per_s": tokens_per_step * len(timed) / sum(timed),
        "step_time_s": sum(timed) / len(timed),
        "params": params,
        "final_loss": loss_val,
        "peak_rss_mib": peak_rss_mib,
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "timed_steps": len(timed),
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
