"""Compares `tessera tokenize` with Python tiktoken on a varied corpus of over 1 MB and on every
cl100k_base / o200k_base vector of tests/data/vocab/TestPlans.txt, and checks decode(encode(x)) == x
through `tessera detokenize`.

Each encoding is checked twice: (a) as tiktoken's own package defines it (tiktoken_ext's pattern
and specials, ranks read from the local file so nothing is downloaded) against Tessera's named
tokenizer NAME:FILE, and (b) as the .json beside the rank file defines it (its spelled-out
pattern) against Tessera given just the rank file (which reads that .json).

usage: tiktoken_parity_test.py TESSERA_BINARY VOCAB_DIR
Installs tiktoken into the running Python (the project's .venv) if it is missing, pinning the
installed torch so pip cannot change it.
"""
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tokenizer_corpus  # noqa: E402

os.environ["TIKTOKEN_CACHE_DIR"] = ""  # no cache files, no downloads


def ensure_tiktoken():
    try:
        import tiktoken  # noqa: F401
        return
    except ImportError:
        pass
    pins = []
    try:
        from importlib.metadata import version
        pins.append("torch==" + version("torch"))
    except Exception:  # torch absent: nothing to protect
        pass
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(pins) + "\n")
        constraint = f.name
    print("[parity] installing tiktoken with pip (constraint: %s)" % (pins or "none"), flush=True)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-c", constraint, "tiktoken"])
    os.unlink(constraint)
    importlib.invalidate_caches()


def reference(name, vocab_dir, form):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    path = os.path.join(vocab_dir, name + ".tiktoken")
    if form == "json":
        with open(os.path.join(vocab_dir, name + ".json"), encoding="utf-8") as f:
            meta = json.load(f)
        return tiktoken.Encoding(name=name + "_json", pat_str=meta["pat_str"],
                                 mergeable_ranks=load_tiktoken_bpe(path),
                                 special_tokens=meta["special_tokens"])
    import tiktoken_ext.openai_public as public
    original = public.load_tiktoken_bpe
    public.load_tiktoken_bpe = lambda url, expected_hash=None: original(path, expected_hash=expected_hash)
    try:
        params = getattr(public, name)()
    finally:
        public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**params)


def run_tessera(binary, args, data):
    p = subprocess.run([binary] + args, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit("tessera %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr.decode(errors="replace")))
    return p.stdout


def encode_all(binary, tokenizer, texts, allow_special=False):
    data = b"".join(t.encode("utf-8") + b"\x00" for t in texts)
    args = ["tokenize", "--tokenizer", tokenizer, "--null"] + (["--allow-special"] if allow_special else [])
    lines = run_tessera(binary, args, data).decode().split("\n")
    assert lines[-1] == "", "output must end with a newline"
    lines = lines[:-1]
    if len(lines) != len(texts):
        sys.exit("tessera printed %d lines for %d texts" % (len(lines), len(texts)))
    return [[int(x) for x in line.split()] for line in lines]


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def compare(label, texts, ours, theirs, enc):
    bad = 0
    for k, (text, a, b) in enumerate(zip(texts, ours, theirs)):
        if a != b:
            bad += 1
            if bad <= 3:
                i = first_difference(a, b)
                context = enc.decode(b[max(0, i - 3):i + 3]) if b else ""
                print("[parity] MISMATCH %s text %d (%d bytes) at token %d: tessera %s tiktoken %s near %r"
                      % (label, k, len(text.encode()), i, a[max(0, i - 3):i + 3], b[max(0, i - 3):i + 3], context))
    return bad


def test_plan_vectors(vocab_dir, name):
    samples = []
    with open(os.path.join(vocab_dir, "TestPlans.txt"), encoding="utf-8") as f:
        blocks = f.read().split("\n\n")
    for block in blocks:
        lines = block.strip("\n").split("\n")
        if len(lines) < 3 or lines[0] != "EncodingName: " + name:
            continue
        sample = lines[1][len("Sample: "):]
        encoded = json.loads(lines[2][len("Encoded: "):])
        samples.append((sample, encoded))
    return samples


def verify_checksums(vocab_dir):
    """The rank files must be the official ones (tiktoken checks the same sha256 for its
    encodings): a damaged or replaced file fails here, by name, before any comparison."""
    import hashlib
    with open(os.path.join(vocab_dir, "SHA256SUMS"), encoding="utf-8") as f:
        for line in f:
            expected, name = line.split()
            with open(os.path.join(vocab_dir, name), "rb") as g:
                actual = hashlib.sha256(g.read()).hexdigest()
            if actual != expected:
                sys.exit("%s/%s: sha256 %s, expected %s" % (vocab_dir, name, actual, expected))


def main():
    binary, vocab_dir = sys.argv[1], sys.argv[2]
    verify_checksums(vocab_dir)
    ensure_tiktoken()
    texts = tokenizer_corpus.documents()
    corpus_bytes = sum(len(t.encode("utf-8")) for t in texts)
    print("[parity] corpus: %d texts, %d bytes" % (len(texts), corpus_bytes), flush=True)
    failures = 0
    for name in ("cl100k_base", "o200k_base"):
        rank_file = os.path.join(vocab_dir, name + ".tiktoken")
        for form, tokenizer in (("tiktoken_ext", name + ":" + rank_file), ("json", rank_file)):
            enc = reference(name, vocab_dir, form)
            t0 = time.time()
            ours = encode_all(binary, tokenizer, texts)
            t1 = time.time()
            theirs = [enc.encode_ordinary(t) for t in texts]
            t2 = time.time()
            bad = compare("%s/%s" % (name, form), texts, ours, theirs, enc)
            print("[parity] %s (%s pattern): %d/%d texts differ, %d tokens (tessera %.2fs incl. startup, tiktoken %.2fs)"
                  % (name, form, bad, len(texts), sum(map(len, theirs)), t1 - t0, t2 - t1), flush=True)
            failures += bad
            # Special tokens where allowed.
            special_texts = ["a<|endoftext|>b", "<|endoftext|><|endoftext|>", "x <|endofprompt|>\n y",
                             "<|endoftext", "|>", "<|fim_prefix|>def<|fim_suffix|>", "🌍<|endoftext|> 🌍"]
            ours_s = encode_all(binary, tokenizer, special_texts, allow_special=True)
            theirs_s = [enc.encode(t, allowed_special="all") for t in special_texts]
            bad = compare("%s/%s specials" % (name, form), special_texts, ours_s, theirs_s, enc)
            print("[parity] %s (%s) with specials allowed: %d/%d differ" % (name, form, bad, len(special_texts)))
            failures += bad
        # Published vectors.
        vectors = test_plan_vectors(vocab_dir, name)
        assert vectors, "no %s vectors in TestPlans.txt" % name
        ours = encode_all(binary, name + ":" + rank_file, [s for s, _ in vectors])
        bad = sum(1 for (s, expected), got in zip(vectors, ours) if got != expected)
        for (s, expected), got in zip(vectors, ours):
            if got != expected:
                print("[parity] TestPlans %s %r: expected %s, tessera %s" % (name, s, expected, got))
        print("[parity] %s TestPlans.txt: %d/%d vectors differ" % (name, bad, len(vectors)), flush=True)
        failures += bad
        # Line mode: one line of ids per input line (the newline itself is not encoded).
        lines_in = ["first line", "", "  second\tline  ", "🌍 third", "last without newline"]
        out = run_tessera(binary, ["tokenize", "--tokenizer", name + ":" + rank_file],
                          "\n".join(lines_in).encode()).decode().split("\n")[:-1]
        enc = reference(name, vocab_dir, "tiktoken_ext")
        ok = [[int(x) for x in l.split()] for l in out] == [enc.encode_ordinary(l) for l in lines_in]
        print("[parity] %s line mode: %s" % (name, "ok" if ok else "FAILED"))
        failures += 0 if ok else 1
        # Round trip through detokenize, NUL-containing text included.
        all_texts = texts + [tokenizer_corpus.nul_document()]
        ids = encode_all(binary, name + ":" + rank_file, texts)
        nul_ids = run_tessera(binary, ["tokenize", "--tokenizer", name + ":" + rank_file, "--whole"],
                              all_texts[-1].encode()).decode().split()
        lines = "".join(" ".join(map(str, i)) + "\n" for i in ids + [[int(x) for x in nul_ids]])
        decoded = run_tessera(binary, ["detokenize", "--tokenizer", name + ":" + rank_file], lines.encode())
        expected = b"".join(t.encode("utf-8") + b"\n" for t in all_texts)
        ok = decoded == expected
        print("[parity] %s round trip decode(encode(x)) == x: %s" % (name, "ok" if ok else "FAILED"), flush=True)
        failures += 0 if ok else 1
    if failures:
        print("[parity] FAILED: %d mismatches" % failures)
        return 1
    print("[parity] all equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
