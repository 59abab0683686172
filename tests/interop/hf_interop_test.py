"""Hugging Face interop of Tessera checkpoints, against transformers itself.

For small random Llama models (tied and untied embeddings, grouped-query attention with 1 and 2
kv heads, random norm weights so that swapped norms would show):

  (b) transformers saves the model; `tessera import-hf` makes a Tessera checkpoint of it;
      `tessera logits` on that checkpoint equals transformers' logits;
  (a) `tessera export-hf` of that checkpoint reproduces every tensor of transformers' files
      bit for bit (fp32), LlamaForCausalLM.from_pretrained of the export gives the same logits as
      Tessera's forward pass, and a bf16 export sharded by --max-shard-size loads too, with each
      tensor equal to torch's bf16 rounding of the original.

Tolerance: Tessera and transformers compute the same fp32 function in different orders (fused
q/k/v and gate/up products, rotary tables, attention kernels), so logits differ by float32
rounding only: 4.8e-7 measured here (a few ulps of these O(1) logits after 2 layers of 64- and
96-wide sums). 1e-5 leaves a 20x margin for other CPUs and BLAS libraries and still fails on
any mapping error (a swapped, transposed or permuted weight changes logits by ~0.1 or more).

transformers and safetensors are installed on first use (hf_checks.py).

usage: hf_interop_test.py TESSERA_BINARY
"""
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_checks as hf  # noqa: E402  (the runners, the round trips and transformers' install)

TOLERANCE = 1e-5


def check_case(binary, work, name, tie, kv_heads):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(sum(map(ord, name)))
    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=kv_heads, vocab_size=101, rms_norm_eps=1e-5, rope_theta=10000.0,
                         max_position_embeddings=64, tie_word_embeddings=tie, initializer_range=0.05,
                         bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    hf.randomize_norms(model)
    hf_dir, ckpt, out, out16 = (os.path.join(work, name, d) for d in ("hf", "ckpt", "export", "export-bf16"))
    model.save_pretrained(hf_dir)
    sequences = [[1, 2, 3], [int(t) for t in torch.randint(0, 101, (17,))], [0]]
    reference = hf.hf_logits(model, sequences)
    label = "[hf] " + name

    # (b) transformers' files -> Tessera checkpoint -> Tessera's logits.
    ours, diff_b = hf.import_and_compare(binary, hf_dir, ckpt, sequences, reference, TOLERANCE, label)

    # (a) Tessera checkpoint -> export-hf: the same tensors (fp32), the same logits in transformers.
    original = hf.saved_tensors(hf_dir, tie)
    assert all(value.dtype == torch.float32 for value in original.values())
    reloaded, diff_a = hf.export_and_compare(binary, ckpt, out, original, sequences, ours, reference, TOLERANCE,
                                             label)
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}, f.metadata()
    with open(os.path.join(out, "config.json")) as f:
        exported_config = json.load(f)
    assert exported_config["bos_token_id"] == 1 and exported_config["eos_token_id"] == 2, exported_config
    assert reloaded.config.tie_word_embeddings == tie and reloaded.config.num_key_value_heads == kv_heads

    # bf16, sharded by size, with its index.
    hf.run(binary, ["export-hf", os.path.join(work, name, "ckpt", "step-00000000"), "--out", out16, "--dtype",
                    "bf16", "--max-shard-size", "40KB"])
    shards = sorted(f for f in os.listdir(out16) if f.endswith(".safetensors"))
    assert len(shards) > 1 and shards[0] == "model-00001-of-%05d.safetensors" % len(shards), shards
    with open(os.path.join(out16, "model.safetensors.index.json")) as f:
        index = json.load(f)
    assert sorted(index["weight_map"]) == sorted(original)
    for key, value in original.items():
        got = load_file(os.path.join(out16, index["weight_map"][key]))[key]
        assert got.dtype == torch.bfloat16 and torch.equal(got, value.to(torch.bfloat16)), "%s (bf16) differs" % key
    half = LlamaForCausalLM.from_pretrained(out16, dtype=torch.float32).eval()
    diff_16 = hf.max_diff(hf.hf_logits(half, sequences), reference)
    print("[hf] %s: bf16 export in transformers vs fp32: max |diff| = %.3g (bf16 weights)" % (name, diff_16), flush=True)
    # bf16 keeps 8 bits of mantissa: weights move by up to 2^-9 relative, logits by ~1e-2 here.
    assert diff_16 < 0.1, diff_16
    return max(diff_a, diff_b)


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    hf.ensure_packages()
    start = time.time()
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="tessera-hf-") as work:
        for name, tie, kv in (("tied-gqa2", True, 2), ("untied-gqa1", False, 1), ("untied-mha", False, 4)):
            worst = max(worst, check_case(binary, work, name, tie, kv))
    print("PASS: largest logit difference %.3g (tolerance %g), %.1f s" % (worst, TOLERANCE, time.time() - start))


if __name__ == "__main__":
    main()
