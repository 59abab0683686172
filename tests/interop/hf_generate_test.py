"""Greedy generation: `tessera generate --temperature 0` against transformers' generate.

For small random Llama models (grouped-query attention with an untied head; a tied head with
Llama 3.1's rope scaling, its original context shorter than the generated text so the scaled
frequencies matter), made by transformers and imported with `tessera import-hf`:
`tessera export-hf` writes the Tessera checkpoint as a Hugging Face model, transformers loads
that export and generates greedily (do_sample=False, its own KV cache) from the prompt ids that
`tessera generate` encoded, and both must choose the same ids, token for token, for at least 32
new tokens (both stop at the end-of-text token; the models here rarely choose it).

The tokenizer is byte-level: a rank file of the 256 single bytes (ids 0-255, <|endoftext|> 256),
so the vocabulary is 257 and the prompt's ids are its UTF-8 bytes.

Near-ties: both sides compute in fp32, in different orders, so their logits differ by ~1e-6
(hf_interop_test.py measures 4.8e-7). A choice whose top-1 and top-2 logits are closer than
TIE_MARGIN could honestly go either way: a mismatch there is reported as a near-tie (and fails,
naming the step and the margin, since this seed would then not prove anything); a run whose
smallest margin falls below it while still matching is reported too.

usage: hf_generate_test.py TESSERA_BINARY
"""
import base64
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_checks as hf  # noqa: E402  (the runners and transformers' install)

NEW_TOKENS = 40
MIN_COMPARED = 32
TIE_MARGIN = 1e-4
EOD = 256
PROMPTS = ["The quick brown fox", "int main(void) {", "Once upon a time, "]

CASES = {
    "untied-gqa": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
    "tied-llama3-rope": dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
                             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
}


def write_byte_tokenizer(path):
    with open(path, "w") as f:
        for b in range(256):
            f.write("%s %d\n" % (base64.b64encode(bytes([b])).decode(), b))


def random_model(name, extra, hf_dir):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(sum(map(ord, name)))
    # initializer_range 0.2 (not 0.02) so that the logits are O(1) and far from uniform: the
    # greedy choices are then clear, rarely near a tie.
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=257,
                         rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=128,
                         initializer_range=0.2, bos_token_id=EOD, eos_token_id=EOD, **extra)
    model = LlamaForCausalLM(config).eval()
    hf.randomize_norms(model)
    model.save_pretrained(hf_dir)


def run_generate(binary, args):
    """Runs tessera; its text of random bytes need not be UTF-8, so stdout is kept as bytes."""
    import subprocess
    p = subprocess.run([binary] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise SystemExit("FAIL: tessera %s exited %d:\n%s" % (" ".join(args), p.returncode,
                                                              p.stderr.decode(errors="replace")))
    return p.stdout, p.stderr.decode(errors="replace")


def hf_greedy(model, prompt):
    """transformers' greedy ids and each step's top-1 minus top-2 logit."""
    import torch
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             do_sample=False, max_new_tokens=NEW_TOKENS, eos_token_id=EOD, pad_token_id=EOD,
                             return_dict_in_generate=True, output_logits=True)
    ids = [int(t) for t in out.sequences[0][len(prompt):]]
    margins = []
    for logits in out.logits:
        top = torch.topk(logits[0].double(), 2).values
        margins.append(float(top[0] - top[1]))
    return ids, margins


def check_case(binary, work, name, extra, tokenizer):
    from transformers import LlamaForCausalLM
    hf_dir, ckpt, export = (os.path.join(work, name, d) for d in ("hf", "ckpt", "export"))
    random_model(name, extra, hf_dir)
    hf.run(binary, ["import-hf", hf_dir, "--out", ckpt])
    hf.run(binary, ["export-hf", ckpt, "--out", export])
    model = LlamaForCausalLM.from_pretrained(export).eval()
    ids_file = os.path.join(work, name, "ids.jsonl")
    args = ["generate", ckpt, "--tokenizer", tokenizer, "--temperature", "0", "--max-new-tokens", str(NEW_TOKENS),
            "--ids-out", ids_file]
    for prompt in PROMPTS:
        run_generate(binary, args + ["--prompt", prompt])
        with open(ids_file) as f:
            record = json.loads(f.readline())
        assert record["prompt"] == list(prompt.encode()), "prompt ids %s" % record["prompt"]
        ours = record["tokens"]
        theirs, margins = hf_greedy(model, record["prompt"])
        smallest = min(margins)
        for step, (a, b) in enumerate(zip(ours, theirs)):
            if a != b:
                kind = "a near-tie" if margins[step] < TIE_MARGIN else "not a tie"
                raise SystemExit("FAIL: %s, prompt %r: new token %d is %d in Tessera, %d in transformers; the "
                                 "top-2 margin there is %.3g (%s)" % (name, prompt, step, a, b, margins[step], kind))
        assert len(ours) == len(theirs), "%s: %d vs %d tokens" % (name, len(ours), len(theirs))
        assert len(ours) >= MIN_COMPARED or ours[-1] == EOD, "%s: only %d new tokens" % (name, len(ours))
        note = " (below %g: a near-tie that matched)" % TIE_MARGIN if smallest < TIE_MARGIN else ""
        print("[generate] %s, prompt %r: %d tokens equal; smallest top-2 margin %.3g (Tessera %.3g)%s"
              % (name, prompt, len(ours), smallest, record["min_margin"], note), flush=True)
        yield len(ours)


def run_failing(binary, args):
    import subprocess
    p = subprocess.run([binary] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.returncode != 0, "tessera %s succeeded" % " ".join(args)
    return p.returncode, p.stderr


def check_errors(binary, work, tokenizer):
    """A checkpoint of another vocabulary and a missing checkpoint are clear errors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    small = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, vocab_size=101,
                                         bos_token_id=1, eos_token_id=2))
    hf_dir, ckpt = os.path.join(work, "small", "hf"), os.path.join(work, "small", "ckpt")
    small.save_pretrained(hf_dir)
    hf.run(binary, ["import-hf", hf_dir, "--out", ckpt])
    code, err = run_failing(binary, ["generate", ckpt, "--tokenizer", tokenizer, "--prompt", "hi"])
    assert code == 2 and "model.vocab_size = 101" in err and "vocab_size = 257" in err, (code, err)
    missing = os.path.join(work, "no-such-checkpoint")
    code, err = run_failing(binary, ["generate", missing, "--tokenizer", tokenizer, "--prompt", "hi"])
    assert code == 2 and missing in err, (code, err)
    print("[generate] errors: %s" % err.strip().splitlines()[0], flush=True)


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    hf.ensure_packages()
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="tessera-generate-") as work:
        tokenizer = os.path.join(work, "bytes.tiktoken")
        write_byte_tokenizer(tokenizer)
        check_errors(binary, work, tokenizer)
        lengths = []
        for name, extra in CASES.items():
            lengths += list(check_case(binary, work, name, extra, tokenizer))
    assert max(lengths) >= MIN_COMPARED, "no prompt reached %d new tokens: %s" % (MIN_COMPARED, lengths)
    print("PASS: %d generations equal token for token (%d tokens), %.1f s" % (len(lengths), sum(lengths),
                                                                              time.time() - start))


if __name__ == "__main__":
    main()
