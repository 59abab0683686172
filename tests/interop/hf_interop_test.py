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

transformers (5.x, as scripts/bench/hf_reference.py uses) and safetensors are pip-installed into
the running python on first use, with torch pinned to the installed version.

usage: hf_interop_test.py TESSERA_BINARY
"""
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

TOLERANCE = 1e-5
TRANSFORMERS_SPEC = os.environ.get("TESSERA_TRANSFORMERS_SPEC", "transformers==5.24.0")


def ensure_packages():
    missing = []
    for module, spec in (("transformers", TRANSFORMERS_SPEC), ("safetensors", "safetensors")):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(spec)
    if not missing:
        return
    import torch
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("torch==%s\n" % torch.__version__)
        constraint = f.name
    print("[hf] installing %s (torch pinned to %s)" % (", ".join(missing), torch.__version__), flush=True)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-c", constraint] + missing)
    os.unlink(constraint)
    importlib.invalidate_caches()


def run(binary, args):
    p = subprocess.run([binary] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit("FAIL: tessera %s exited %d:\n%s" % (" ".join(args), p.returncode, p.stderr))
    return p.stdout


def tessera_logits(binary, checkpoint, sequences):
    import torch
    args = [checkpoint]
    for s in sequences:
        args += ["--tokens", ",".join(map(str, s))]
    lines = [json.loads(line) for line in run(binary, ["logits"] + args).splitlines() if line.strip()]
    assert [line["tokens"] for line in lines] == sequences, "logits answered other sequences"
    return [torch.tensor(line["logits"], dtype=torch.float32) for line in lines]


def hf_logits(model, sequences):
    import torch
    with torch.no_grad():
        return [model(torch.tensor([s])).logits[0].float() for s in sequences]


def max_diff(xs, ys):
    return max(float((x - y).abs().max()) for x, y in zip(xs, ys))


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
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "norm" in key:
                p.uniform_(0.5, 1.5)
    hf_dir, ckpt, out, out16 = (os.path.join(work, name, d) for d in ("hf", "ckpt", "export", "export-bf16"))
    model.save_pretrained(hf_dir)
    sequences = [[1, 2, 3], [int(t) for t in torch.randint(0, 101, (17,))], [0]]
    reference = hf_logits(model, sequences)

    # (b) transformers' files -> Tessera checkpoint -> Tessera's logits.
    run(binary, ["import-hf", hf_dir, "--out", ckpt])
    ours = tessera_logits(binary, ckpt, sequences)
    diff_b = max_diff(ours, reference)
    print("[hf] %s: import-hf logits vs transformers: max |diff| = %.3g" % (name, diff_b), flush=True)
    assert diff_b < TOLERANCE, "%s: Tessera's logits of the imported model differ by %g" % (name, diff_b)

    # (a) Tessera checkpoint -> export-hf: the same tensors, the same logits in transformers.
    run(binary, ["export-hf", ckpt, "--out", out])
    original = load_file(os.path.join(hf_dir, "model.safetensors"))
    exported = load_file(os.path.join(out, "model.safetensors"))
    if tie:
        original.pop("lm_head.weight", None)
    assert sorted(exported) == sorted(original), "tensor names differ: %s" % (set(exported) ^ set(original))
    for key, value in original.items():
        assert exported[key].dtype == torch.float32 and torch.equal(exported[key], value), "%s differs" % key
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}, f.metadata()
    with open(os.path.join(out, "config.json")) as f:
        exported_config = json.load(f)
    assert exported_config["bos_token_id"] == 1 and exported_config["eos_token_id"] == 2, exported_config
    reloaded = LlamaForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.tie_word_embeddings == tie and reloaded.config.num_key_value_heads == kv_heads
    theirs = hf_logits(reloaded, sequences)
    diff_a = max_diff(theirs, ours)
    print("[hf] %s: export-hf in transformers vs Tessera: max |diff| = %.3g" % (name, diff_a), flush=True)
    assert diff_a < TOLERANCE, "%s: transformers' logits of the export differ by %g" % (name, diff_a)
    assert max_diff(theirs, reference) == 0.0, "the export changed a weight"

    # bf16, sharded by size, with its index.
    run(binary, ["export-hf", os.path.join(work, name, "ckpt", "step-00000000"), "--out", out16, "--dtype", "bf16",
                 "--max-shard-size", "40KB"])
    shards = sorted(f for f in os.listdir(out16) if f.endswith(".safetensors"))
    assert len(shards) > 1 and shards[0] == "model-00001-of-%05d.safetensors" % len(shards), shards
    with open(os.path.join(out16, "model.safetensors.index.json")) as f:
        index = json.load(f)
    assert sorted(index["weight_map"]) == sorted(original)
    for key, value in original.items():
        got = load_file(os.path.join(out16, index["weight_map"][key]))[key]
        assert got.dtype == torch.bfloat16 and torch.equal(got, value.to(torch.bfloat16)), "%s (bf16) differs" % key
    half = LlamaForCausalLM.from_pretrained(out16, dtype=torch.float32).eval()
    diff_16 = max_diff(hf_logits(half, sequences), reference)
    print("[hf] %s: bf16 export in transformers vs fp32: max |diff| = %.3g (bf16 weights)" % (name, diff_16), flush=True)
    # bf16 keeps 8 bits of mantissa: weights move by up to 2^-9 relative, logits by ~1e-2 here.
    assert diff_16 < 0.1, diff_16
    return max(diff_a, diff_b)


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    ensure_packages()
    start = time.time()
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="tessera-hf-") as work:
        for name, tie, kv in (("tied-gqa2", True, 2), ("untied-gqa1", False, 1), ("untied-mha", False, 4)):
            worst = max(worst, check_case(binary, work, name, tie, kv))
    print("PASS: largest logit difference %.3g (tolerance %g), %.1f s" % (worst, TOLERANCE, time.time() - start))


if __name__ == "__main__":
    main()
