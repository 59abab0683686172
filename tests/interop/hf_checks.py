"""What the Hugging Face interop tests share: transformers installed on first use, the tessera
binary run, logits on both sides, and the two round trips checked against transformers:

  import_and_compare: `tessera import-hf` of transformers' files, then `tessera logits` on the
                      checkpoint against transformers' logits of the model it saved;
  export_and_compare: `tessera export-hf` of a checkpoint, every tensor against the files it
                      came from, bit for bit, and transformers' logits of the export against
                      Tessera's (compare_logits, also for exports checked otherwise).

Each test states its own tolerance and why; these functions only apply it.

transformers (5.x, as scripts/bench/hf_reference.py uses) and safetensors are pip-installed into
the running python on first use, with torch pinned to the installed version.
"""
import importlib
import json
import os
import subprocess
import sys
import tempfile

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


def randomize_norms(model):
    """Norm weights drawn from [0.5, 1.5] instead of transformers' ones, so that a swapped or
    misplaced norm changes the logits."""
    import torch
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "norm" in key:
                p.uniform_(0.5, 1.5)


def saved_tensors(hf_dir, tied):
    """The tensors transformers saved in hf_dir, less lm_head.weight for tied embeddings (an export
    writes the shared matrix once, as the embedding)."""
    from safetensors.torch import load_file
    tensors = load_file(os.path.join(hf_dir, "model.safetensors"))
    if tied:
        tensors.pop("lm_head.weight", None)
    return tensors


def import_and_compare(binary, hf_dir, ckpt, sequences, reference, tolerance, label):
    """`tessera import-hf HF_DIR --out CKPT`, then Tessera's logits of CKPT against transformers'
    (`reference`, of the model saved in hf_dir). Returns Tessera's logits and the largest difference."""
    run(binary, ["import-hf", hf_dir, "--out", ckpt])
    ours = tessera_logits(binary, ckpt, sequences)
    diff = max_diff(ours, reference)
    print("%s: import-hf logits vs transformers: max |diff| = %.3g" % (label, diff), flush=True)
    assert diff < tolerance, "%s: Tessera's logits of the imported model differ by %g (tolerance %g)" % (
        label, diff, tolerance)
    return ours, diff


def compare_logits(model, sequences, ours, tolerance, label):
    """transformers' logits of `model` (an export loaded) against Tessera's (`ours`). Returns
    transformers' logits and the largest difference."""
    theirs = hf_logits(model, sequences)
    diff = max_diff(theirs, ours)
    print("%s: export-hf in transformers vs Tessera: max |diff| = %.3g" % (label, diff), flush=True)
    assert diff < tolerance, "%s: transformers' logits of the export differ from Tessera's by %g (tolerance %g)" % (
        label, diff, tolerance)
    return theirs, diff


def export_and_compare(binary, ckpt, out, original, sequences, ours, reference, tolerance, label):
    """`tessera export-hf CKPT --out OUT`, checked against the model the checkpoint came from: every
    tensor equal to `original` (saved_tensors) bit for bit, in its dtype; transformers' logits of
    the export within `tolerance` of Tessera's (`ours`) and equal to its logits of the original
    model (`reference`): the export changed no weight. Returns the loaded export and the largest
    logit difference."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM
    run(binary, ["export-hf", ckpt, "--out", out])
    exported = load_file(os.path.join(out, "model.safetensors"))
    assert sorted(exported) == sorted(original), "tensor names differ: %s" % (set(exported) ^ set(original))
    for key, value in original.items():
        assert exported[key].dtype == value.dtype and torch.equal(exported[key], value), "%s differs" % key
    reloaded = LlamaForCausalLM.from_pretrained(out).eval()
    theirs, diff = compare_logits(reloaded, sequences, ours, tolerance, label)
    assert max_diff(theirs, reference) == 0.0, "%s: the export changed a weight" % label
    return reloaded, diff
