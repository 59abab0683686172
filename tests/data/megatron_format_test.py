"""Checks `tessera preprocess` output against FORMATS.md with an independent reader (numpy), and
that Tessera reads a Megatron-format file written here by hand.

1. A small cl100k-tokenized JSONL corpus (int32 tokens, vocabulary >= 65500) and a corpus
   tokenized with a freshly trained 1000-rank vocabulary (uint16): every header field, array and
   byte of the .idx/.bin is recomputed here from the documents' token ids (tiktoken's ids for
   cl100k, `tessera tokenize` for the trained vocabulary) plus the end-of-document id.
2. FORMATS.md's test vector, written with numpy, equals its published hex, and `tessera dataset
   dump` reads the right documents from it.

usage: megatron_format_test.py TESSERA_BINARY VOCAB_DIR
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tiktoken_parity_test import ensure_tiktoken, reference  # noqa: E402

DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}


def run(binary, args, data=b""):
    p = subprocess.run([binary] + args, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit("tessera %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr.decode(errors="replace")))
    return p.stdout.decode(), p.stderr.decode()


def check_files(prefix, documents, eod, expect_dtype):
    """Parses PREFIX.idx/.bin per FORMATS.md and compares with the expected documents."""
    idx = open(prefix + ".idx", "rb").read()
    binary = open(prefix + ".bin", "rb").read()
    assert idx[:9] == b"MMIDIDX\x00\x00", "magic"
    assert np.frombuffer(idx, np.uint64, 1, 9)[0] == 1, "version"
    code = idx[17]
    assert code == expect_dtype, "dtype code %d, expected %d" % (code, expect_dtype)
    s = int(np.frombuffer(idx, np.uint64, 1, 18)[0])
    d = int(np.frombuffer(idx, np.uint64, 1, 26)[0])
    expected = [doc + [eod] for doc in documents]
    assert s == len(expected), "S = %d, expected %d" % (s, len(expected))
    assert d == s + 1, "D"
    assert len(idx) == 34 + 12 * s + 8 * d, "idx length"
    sizes = np.frombuffer(idx, np.int32, s, 34)
    pointers = np.frombuffer(idx, np.int64, s, 34 + 4 * s)
    doc_idx = np.frombuffer(idx, np.int64, d, 34 + 12 * s)
    itemsize = np.dtype(DTYPES[code]).itemsize
    assert list(sizes) == [len(e) for e in expected], "sizes"
    assert list(pointers) == list(np.concatenate([[0], np.cumsum(sizes[:-1], dtype=np.int64) * itemsize])), "pointers"
    assert list(doc_idx) == list(range(s + 1)), "document indices"
    tokens = np.frombuffer(binary, DTYPES[code])
    assert len(binary) == int(sizes.sum()) * itemsize, "bin length"
    flat = [t for e in expected for t in e]
    assert tokens.tolist() == flat, "tokens"
    # Byte for byte: rebuild both files from the documents and compare.
    rebuilt_idx = (b"MMIDIDX\x00\x00" + np.uint64(1).tobytes() + bytes([code]) + np.uint64(s).tobytes() +
                   np.uint64(d).tobytes() + sizes.astype("<i4").tobytes() + pointers.astype("<i8").tobytes() +
                   np.arange(s + 1, dtype="<i8").tobytes())
    assert rebuilt_idx == idx, "idx bytes"
    assert np.array(flat, dtype=DTYPES[code]).astype(np.dtype(DTYPES[code]).newbyteorder("<")).tobytes() == binary
    print("[format] %s: %d documents, %d tokens, dtype code %d: byte-exact" % (os.path.basename(prefix), s, len(flat), code))


def main():
    binary, vocab_dir = sys.argv[1], sys.argv[2]
    ensure_tiktoken()
    tmp = tempfile.mkdtemp(prefix="tessera_format_")
    texts = ["Hello, world!", "Ünïcödé and emoji 🌍 in a second document.\nWith two lines.",
             "def f(x):\n    return x * 2\n", "  leading spaces", "数字 12345 and <|endoftext|> as text"]
    jsonl = os.path.join(tmp, "in.jsonl")
    with open(jsonl, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "text": t}) + "\n")
            if i == 1:
                f.write("this line is not json\n")
    # 1a. cl100k (int32).
    cl100k = "cl100k_base:" + os.path.join(vocab_dir, "cl100k_base.tiktoken")
    _, err = run(binary, ["preprocess", "--tokenizer", cl100k, "--output-prefix", os.path.join(tmp, "cl"),
                          "--workers", "2", "--no-progress", jsonl])
    assert "1 malformed JSON" in err, err
    enc = reference("cl100k_base", vocab_dir, "tiktoken_ext")
    check_files(os.path.join(tmp, "cl"), [enc.encode_ordinary(t) for t in texts], 100257, 4)
    # 1b. A trained small vocabulary (uint16).
    corpus_dir = os.path.join(tmp, "train")
    os.makedirs(corpus_dir)
    for i in range(5):
        with open(os.path.join(corpus_dir, "%d.txt" % i), "w", encoding="utf-8") as f:
            f.write(" ".join(texts) * (i + 3))
    vocab = os.path.join(tmp, "small.tiktoken")
    run(binary, ["tokenizer", "train", "--vocab-size", "1000", "--output", vocab, corpus_dir])
    run(binary, ["preprocess", "--tokenizer", vocab, "--output-prefix", os.path.join(tmp, "small"), "--workers", "3",
                 "--no-progress", jsonl])
    ids, _ = run(binary, ["tokenize", "--tokenizer", vocab, "--null"], b"".join(t.encode() + b"\0" for t in texts))
    documents = [[int(x) for x in line.split()] for line in ids.splitlines()]
    info, _ = run(binary, ["tokenizer", "info", "--tokenizer", vocab])
    eod = int(info.split("eod: <|endoftext|> = ")[1].split()[0])
    check_files(os.path.join(tmp, "small"), documents, eod, 8)
    # 2. FORMATS.md's vector, written here with numpy.
    docs = [[1, 2, 3, 50256], [4, 5, 50256], [65000, 50256]]
    sizes = np.array([len(d) for d in docs], "<i4")
    pointers = np.concatenate([[0], np.cumsum(sizes[:-1]) * 2]).astype("<i8")
    idx = (b"MMIDIDX\x00\x00" + np.uint64(1).tobytes() + bytes([8]) + np.uint64(3).tobytes() + np.uint64(4).tobytes() +
           sizes.tobytes() + pointers.tobytes() + np.arange(4, dtype="<i8").tobytes())
    binary_data = np.array([t for d in docs for t in d], "<u2").tobytes()
    assert binary_data.hex() == "01000200030050c40400050050c4e8fd50c4"
    assert idx.hex() == ("4d4d4944494458000001000000000000000803000000000000000400000000000000040000000300000002000000"
                         "000000000000000008000000000000000e0000000000000000000000000000000100000000000000020000000000"
                         "00000300000000000000")
    hand = os.path.join(tmp, "hand")
    open(hand + ".idx", "wb").write(idx)
    open(hand + ".bin", "wb").write(binary_data)
    out, _ = run(binary, ["dataset", "dump", hand])
    assert [[int(x) for x in l.split()] for l in out.splitlines()] == docs, out
    print("[format] FORMATS.md test vector: numpy bytes equal the published hex; tessera reads its documents")
    subprocess.run(["rm", "-rf", tmp])
    print("[format] all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
