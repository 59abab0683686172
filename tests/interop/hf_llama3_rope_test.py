"""Llama 3.1 / 3.2 / 3.3 checkpoints (rope scaling "llama3", an explicit head_dim) through
import-hf and export-hf, against transformers itself.

For random small models whose config.json has the key set of the released Llama 3.1 8B, Llama
3.2 1B and Llama 3.3 70B configs (their 4.x spelling: rope_theta beside rope_scaling {rope_type
"llama3", factor, low_freq_factor, high_freq_factor, original_max_position_embeddings}), shrunk in
width and depth:

  - original_max_position_embeddings is 32 and the longest sequence 96 tokens, so positions run
    well past the pretraining context, and head widths of 32 and 64 at rope_theta 500000 put
    frequencies in all three of llama3's bands (kept, blended, divided by the factor);
  - 3.1 8B: untied, factor 8, head_dim derived (hidden_size / num_attention_heads);
  - 3.2 1B: tied embeddings, factor 32, head_dim 64 with hidden_size / num_attention_heads = 24;
  - 3.3 70B: untied, factor 8, head_dim written and equal to hidden_size / num_attention_heads.

Each case: `tessera import-hf` of the released spelling, and of transformers 5's own
save_pretrained spelling (rope_parameters), gives Tessera logits equal to transformers'; `tessera
export-hf` of the checkpoint reproduces every tensor bit for bit, writes the scaling and head_dim
back, and LlamaForCausalLM.from_pretrained of it gives Tessera's logits. The same weights with the
rotary left unscaled give logits far outside the tolerance, so the comparison does test the
scaling.

Tolerance 5e-5 (fp32): Tessera builds its rotary tables in fp64 and rounds cos and sin once to
fp32; transformers computes inv_freq and position x inv_freq in fp32, so its angles at position 95
are off by up to an ulp of 95 (7.6e-6 rad) plus 95 x inv_freq's rounding. That moves q and k by
up to ~1e-5 relative, more than at hf_interop_test.py's 17 positions (4.8e-7 there); the logits
differ by 3.3e-6 at most here (measured, printed below). 5e-5 keeps a 15x margin for other CPUs
and BLAS libraries; the unscaled check shows what the scaling itself moves (0.28 to 2.4), and a
wrong band, factor or head layout moves the logits by that order, not by 1e-5.

usage: hf_llama3_rope_test.py TESSERA_BINARY
"""
import copy
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_checks as hf  # noqa: E402  (the runners, the round trips and transformers' install)

TOLERANCE = 5e-5
ORIGINAL_CONTEXT = 32
SEQUENCE_LENGTHS = (96, 41, 3)


def rope_scaling(factor):
    return {"factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": ORIGINAL_CONTEXT, "rope_type": "llama3"}


def released_key_set(extra):
    """The keys of the released Llama 3.x config.json files, with shrunk values."""
    config = {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "initializer_range": 0.05,
        "max_position_embeddings": 16 * ORIGINAL_CONTEXT, "mlp_bias": False, "model_type": "llama",
        "num_hidden_layers": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
        "torch_dtype": "float32", "transformers_version": "4.45.0", "use_cache": True, "vocab_size": 307,
    }
    config.update(extra)
    return config


# Llama 3.1 8B: 4096 / 32 heads (8 kv), 14336 MLP, untied, factor 8.
# Llama 3.2 1B: 2048 / 32 heads (8 kv), head_dim 64, tied, factor 32.
# Llama 3.3 70B: 8192 / 64 heads (8 kv), head_dim 128, 28672 MLP, untied, factor 8.
CASES = {
    "llama3.1-8b": released_key_set({
        "hidden_size": 128, "intermediate_size": 448, "num_attention_heads": 4, "num_key_value_heads": 1,
        "rope_scaling": rope_scaling(8.0), "tie_word_embeddings": False}),
    "llama3.2-1b": released_key_set({
        "hidden_size": 96, "intermediate_size": 384, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 64, "rope_scaling": rope_scaling(32.0), "tie_word_embeddings": True}),
    "llama3.3-70b": released_key_set({
        "hidden_size": 256, "intermediate_size": 896, "num_attention_heads": 8, "num_key_value_heads": 1,
        "head_dim": 32, "eos_token_id": [2, 3, 4], "rope_scaling": rope_scaling(8.0),
        "tie_word_embeddings": False}),
}


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


def random_model(name, released):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(sum(map(ord, name)))
    fields = {k: v for k, v in released.items() if k not in ("architectures", "transformers_version")}
    model = LlamaForCausalLM(LlamaConfig(**copy.deepcopy(fields))).eval()
    hf.randomize_norms(model)
    rope = model.config.rope_parameters
    assert rope["rope_type"] == "llama3" and rope["factor"] == released["rope_scaling"]["factor"], rope
    assert model.config.head_dim == released.get("head_dim", released["hidden_size"] // released["num_attention_heads"])
    return model


def unscaled_logits(hf_dir, sequences):
    """transformers' logits of the same weights with the rotary unscaled."""
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig.from_pretrained(hf_dir)
    config.rope_parameters = {"rope_type": "default", "rope_theta": config.rope_parameters["rope_theta"]}
    return hf.hf_logits(LlamaForCausalLM.from_pretrained(hf_dir, config=config).eval(), sequences)


def check_export(binary, name, ckpt, out, hf_dir, released, sequences, ours, reference):
    original = hf.saved_tensors(hf_dir, released["tie_word_embeddings"])
    reloaded, diff = hf.export_and_compare(binary, ckpt, out, original, sequences, ours, reference, TOLERANCE,
                                           "[rope] " + name)
    with open(os.path.join(out, "config.json")) as f:
        written = json.load(f)
    want = dict(released["rope_scaling"])
    assert written["rope_scaling"] == want, written["rope_scaling"]
    assert written["rope_parameters"] == dict(want, rope_theta=released["rope_theta"]), written["rope_parameters"]
    head_dim = released.get("head_dim", released["hidden_size"] // released["num_attention_heads"])
    assert written["head_dim"] == head_dim and written["eos_token_id"] == released["eos_token_id"], written
    assert reloaded.config.rope_parameters["rope_type"] == "llama3", reloaded.config.rope_parameters
    assert reloaded.config.head_dim == head_dim
    assert reloaded.config.tie_word_embeddings == released["tie_word_embeddings"]
    return diff



def check_case(binary, work, name, released):
    import torch
    model = random_model(name, released)
    hf_dir = os.path.join(work, name, "hf")
    model.save_pretrained(hf_dir)
    sequences = [[int(t) for t in torch.randint(0, released["vocab_size"], (n,))] for n in SEQUENCE_LENGTHS]
    reference = hf.hf_logits(model, sequences)

    # transformers 5's spelling first (rope_parameters, as save_pretrained wrote it), then the
    # released 4.x spelling over it: the same model either way.
    with open(os.path.join(hf_dir, "config.json")) as f:
        saved = json.load(f)
    assert saved["rope_parameters"]["rope_type"] == "llama3" and "rope_scaling" not in saved, saved
    worst = 0.0
    for spelling in ("rope_parameters", "rope_scaling"):
        if spelling == "rope_scaling":
            write_json(os.path.join(hf_dir, "config.json"), released)
        ckpt = os.path.join(work, name, "ckpt-" + spelling)
        ours, diff = hf.import_and_compare(binary, hf_dir, ckpt, sequences, reference, TOLERANCE,
                                           "[rope] %s (%s)" % (name, spelling))
        worst = max(worst, diff)
    from transformers import LlamaForCausalLM
    assert hf.max_diff(hf.hf_logits(LlamaForCausalLM.from_pretrained(hf_dir).eval(), sequences), reference) == 0.0

    unscaled = hf.max_diff(unscaled_logits(hf_dir, sequences), reference)
    print("[rope] %s: the same weights unscaled differ by %.3g" % (name, unscaled), flush=True)
    assert unscaled > 100 * TOLERANCE, "%s: the scaling changes the logits by only %g" % (name, unscaled)

    export = check_export(binary, name, ckpt, os.path.join(work, name, "export"), hf_dir, released, sequences,
                          ours, reference)
    return max(worst, export)


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    hf.ensure_packages()
    start = time.time()
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="tessera-rope-") as work:
        for name, released in CASES.items():
            worst = max(worst, check_case(binary, work, name, released))
    print("PASS: largest logit difference %.3g (tolerance %g), %.1f s" % (worst, TOLERANCE, time.time() - start))


if __name__ == "__main__":
    main()
