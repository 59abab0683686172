"""docs/continue_pretraining.md, run as written: import a Llama 3.2 1B-shaped Hugging Face model,
tokenize text, plan, train on 2 ranks under mpirun, export, and load the export in transformers.

The page's shell blocks (those after a "Run:" line) are executed verbatim, in order, with bash,
from the repository root; only `build/tessera` becomes the binary under test and the page's
variables get this test's values:

  - HF_DIR: a random LlamaForCausalLM with the key set and values of the released Llama 3.2 1B
    config.json (width 2048, 32 / 8 heads of 64, MLP 8192, vocabulary 128256, tied embeddings,
    llama3 rope scaling with factor 32, bf16 weights) except depth: 2 layers instead of 16;
  - TOKENIZER: cl100k_base from tests/data/vocab (Llama 3's tokenizer.model cannot be carried;
    its first 100256 ranks are cl100k's, so the ids fall inside the model's vocabulary alike);
  - TRAIN_TEXT / VAL_TEXT: the repository's own docs/*.md, one paragraph per JSON line;
  - CONFIG: configs/llama3_2_1b.yaml included as it is (`base:`), with the depth, batch, steps,
    device and precision a 2-core CI machine can run; RANKS = 2.

Then it checks what the page promises:
  1. the run started from the imported weights: it logged checkpoint.init_from, and every
     trained tensor differs from the imported one (so it trained) by at most 3 x train.lr x
     steps per element (AdamW moves an element by about lr per step: |m_hat / sqrt(v_hat)| is 1
     on the first step and stays near it; a fresh initialisation would differ by ~0.02);
  2. the bf16 export is the round-to-nearest-even of the trained fp32 weights, bit for bit, and
     its config.json carries the rope scaling, head_dim, tied embeddings and depth;
  3. transformers' logits of an fp32 export of the same checkpoint equal `tessera logits`,
     within 1e-4 (the same fp32 function in another order; hf_interop_test.py measures 5e-7 at
     width 64, and sums 32x wider add a few ulps; a wrong weight moves logits by ~0.1).

usage: continue_pretraining_test.py TESSERA_BINARY
"""
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_checks as hf  # noqa: E402  (the runners, the round trips and transformers' install)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PAGE = os.path.join(ROOT, "docs", "continue_pretraining.md")
TOLERANCE = 1e-4
STEPS = 2
EXPECTED_BLOCKS = 5  # import, tokenize, plan, train, export

# The released meta-llama/Llama-3.2-1B config.json, depth aside.
RELEASED = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32,
    "num_hidden_layers": 2, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0", "use_cache": True, "vocab_size": 128256,
}

CONFIG = """base: {base}
model:
  n_layers: 2
train:
  seq_len: 128
  micro_batch: 1
  global_batch: 2
  steps: {steps}
  warmup_steps: 0
  precision: fp32
  device: cpu
  log_every: 1
  eval_every: {steps}
  eval_batches: 1
"""


def make_hf_model(hf_dir):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(32)
    fields = {k: v for k, v in RELEASED.items() if k not in ("architectures", "transformers_version")}
    model = LlamaForCausalLM(LlamaConfig(**copy.deepcopy(fields)))  # LlamaConfig edits rope_scaling
    hf.randomize_norms(model)
    model.to(torch.bfloat16).save_pretrained(hf_dir)
    with open(os.path.join(hf_dir, "config.json"), "w") as f:
        json.dump(RELEASED, f, indent=2)  # the released spelling (rope_scaling, 4.x)
    os.makedirs(os.path.join(hf_dir, "original"))
    os.symlink(os.path.join(ROOT, "tests", "data", "vocab", "cl100k_base.tiktoken"),
               os.path.join(hf_dir, "original", "tokenizer.model"))


def write_text(path, paragraphs):
    with open(path, "w") as f:
        for p in paragraphs:
            f.write(json.dumps({"text": p}) + "\n")


def page_blocks():
    with open(PAGE) as f:
        text = f.read()
    blocks = re.findall(r"^Run:\n\n```bash\n(.*?)^```$", text, flags=re.S | re.M)
    assert len(blocks) == EXPECTED_BLOCKS, "%s: %d blocks after 'Run:', expected %d" % (
        PAGE, len(blocks), EXPECTED_BLOCKS)
    return blocks


def run_block(binary, block, env):
    script = block.replace("build/tessera", binary)
    print("[walkthrough] $ " + script.strip().replace("\n", "\n[walkthrough]   "), flush=True)
    start = time.time()
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise SystemExit("FAIL: exit %d from\n%s\n%s" % (p.returncode, script, p.stdout[-6000:]))
    print("[walkthrough]   ok in %.1f s" % (time.time() - start), flush=True)
    return p.stdout


def environment(work):
    paragraphs = []
    for name in sorted(os.listdir(os.path.join(ROOT, "docs"))):
        with open(os.path.join(ROOT, "docs", name)) as f:
            paragraphs += [p.strip() for p in f.read().split("\n\n") if len(p.strip()) > 80]
    write_text(os.path.join(work, "train.jsonl"), paragraphs[:-20])
    write_text(os.path.join(work, "val.jsonl"), paragraphs[-20:])
    with open(os.path.join(work, "config.yaml"), "w") as f:
        f.write(CONFIG.format(base=os.path.join(ROOT, "configs", "llama3_2_1b.yaml"), steps=STEPS))
    hf_dir = os.path.join(work, "Llama-3.2-1B")
    make_hf_model(hf_dir)
    env = dict(os.environ)
    env.update({
        "HF_DIR": hf_dir, "TOKENIZER_FILE": os.path.join(hf_dir, "original", "tokenizer.model"),
        "TRAIN_TEXT": os.path.join(work, "train.jsonl"), "VAL_TEXT": os.path.join(work, "val.jsonl"),
        "WORK": os.path.join(work, "cpt"), "CONFIG": os.path.join(work, "config.yaml"), "RANKS": "2",
        "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    })
    env["TOKENIZER"] = "cl100k_base:" + env["TOKENIZER_FILE"]
    return env


def applied_lr(work):
    """The largest learning rate the run logged (metrics.jsonl: one line per step at log_every 1)."""
    with open(os.path.join(work, "cpt", "run", "metrics.jsonl")) as f:
        rates = [json.loads(line)["lr"] for line in f if '"lr"' in line]
    assert len(rates) >= STEPS, "metrics.jsonl logged %d learning rates for %d steps" % (len(rates), STEPS)
    return max(rates)


def check_started_from_import(binary, work, train_log, lr):
    import torch
    from safetensors.torch import load_file
    assert "checkpoint.init_from: weights from" in train_log, train_log[-4000:]
    imported_dir, trained_dir = os.path.join(work, "imported-fp32"), os.path.join(work, "trained-fp32")
    hf.run(binary, ["export-hf", os.path.join(work, "cpt", "llama3_2_1b"), "--out", imported_dir])
    hf.run(binary, ["export-hf", os.path.join(work, "cpt", "run", "checkpoints"), "--out", trained_dir])
    imported = load_file(os.path.join(imported_dir, "model.safetensors"))
    trained = load_file(os.path.join(trained_dir, "model.safetensors"))
    bound = 3 * lr * STEPS
    worst = 0.0
    for key, before in imported.items():
        moved = float((trained[key] - before).abs().max())
        assert 0 < moved <= bound, "%s moved by %g (expected in (0, %g])" % (key, moved, bound)
        worst = max(worst, moved)
    print("[walkthrough] trained - imported: largest change %.3g (bound %g)" % (worst, bound), flush=True)
    return trained_dir, trained


def check_bf16_export(work, trained):
    import torch
    from safetensors.torch import load_file
    export = os.path.join(work, "cpt", "hf")
    exported = load_file(os.path.join(export, "model.safetensors"))
    assert sorted(exported) == sorted(trained), set(exported) ^ set(trained)
    for key, value in trained.items():
        assert exported[key].dtype == torch.bfloat16 and torch.equal(exported[key], value.to(torch.bfloat16)), key
    with open(os.path.join(export, "config.json")) as f:
        config = json.load(f)
    for key in ("head_dim", "tie_word_embeddings", "num_hidden_layers", "num_key_value_heads", "vocab_size",
                "bos_token_id", "eos_token_id"):
        assert config[key] == RELEASED[key], "%s: %r, expected %r" % (key, config[key], RELEASED[key])
    assert config["rope_scaling"] == RELEASED["rope_scaling"], config["rope_scaling"]
    assert os.path.exists(os.path.join(export, "tokenizer.model")), os.listdir(export)


def check_logits(binary, work, trained_dir):
    import torch
    from transformers import LlamaForCausalLM
    torch.manual_seed(7)
    sequences = [[128000] + [int(t) for t in torch.randint(0, 100256, (47,))], [128000, 791, 3938]]
    ours = hf.tessera_logits(binary, os.path.join(work, "cpt", "run", "checkpoints"), sequences)
    model = LlamaForCausalLM.from_pretrained(trained_dir, dtype=torch.float32).eval()
    hf.compare_logits(model, sequences, ours, TOLERANCE, "[walkthrough] trained checkpoint")


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    hf.ensure_packages()
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="tessera-cpt-") as work:
        env = environment(work)
        env["TESSERA_BIN"] = binary
        outputs = [run_block(binary, block, env) for block in page_blocks()]
        trained_dir, trained = check_started_from_import(binary, work, outputs[3], applied_lr(work))
        check_bf16_export(work, trained)
        check_logits(binary, work, trained_dir)
    print("PASS: the walkthrough's %d steps ran and their results check out, %.1f s" % (EXPECTED_BLOCKS,
                                                                                        time.time() - start))


if __name__ == "__main__":
    main()
