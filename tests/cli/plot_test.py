"""End-to-end test of `tessera plot`: two small hand-written runs become a PNG of the asked
size (read from its IHDR header; the image data decompresses to that size and is not blank),
and bad input stops with the documented exit code and a message naming the file, line or value.

usage: plot_test.py TESSERA_BINARY
"""
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

failures = []
passes = 0


def check(ok, what):
    global passes
    if ok:
        passes += 1
    else:
        failures.append(what)
        print("FAIL: " + what)


def tessera(binary, args, env=None):
    p = subprocess.run([binary, "plot"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout.decode() + p.stderr.decode()


def expect(binary, code, pattern, args, env=None):
    rc, out = tessera(binary, args, env)
    check(rc == code and pattern in out, "tessera plot %s -> exit %d (want %d), output %r, expected to contain %r"
          % (" ".join(args), rc, code, out.strip()[:400], pattern))
    return out


def png_info(path):
    """(width, height, distinct rows of filtered image data) of a non-interlaced 8-bit PNG."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG: %r" % data[:8]
    assert data[12:16] == b"IHDR"
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    assert depth == 8 and interlace == 0, (depth, interlace)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    idat, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + width * channels
    assert len(raw) == height * stride, "image data of %d bytes for %dx%d" % (len(raw), width, height)
    rows = {raw[i * stride:(i + 1) * stride] for i in range(height)}
    return width, height, len(rows)


def write_run(path, lines, unfinished=""):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.write("".join(l + "\n" for l in lines) + unfinished)


def main():
    binary = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="tessera_plot_")
    try:
        run_a, run_b = os.path.join(tmp, "run_a"), os.path.join(tmp, "run b's")  # quote and space in a title
        lines_a = []
        for step in range(1, 31):
            line = '{"step": %d, "loss": %.6f, "lr": 0.0003, "tokens_per_s": %.1f' % (
                step, 10 * math.exp(-step / 10) + 2, 50000 + 1000 * math.sin(step))
            if step % 10 == 0:
                line += ', "eval_loss": %.6f' % (10 * math.exp(-step / 10) + 2.2)
            lines_a.append(line + "}")
        lines_b = ['{"step": %d, "loss": %s, "tokens_per_s": %d, "phase": "warmup", "ok": true}'
                   % (s, "NaN" if s == 4 else "%.4f" % (9 - s * 0.3), 40000 + s) for s in range(1, 13)]
        write_run(run_a, lines_a)
        write_run(run_b, lines_b, unfinished='{"step": 13, "lo')  # a live run writing its next line

        out = os.path.join(tmp, "two.png")
        msg = expect(binary, 0, "wrote " + out + " (900x600): loss, eval_loss, tokens_per_s for 2 runs",
                     [run_a, run_b, "--out", out, "--width", "900", "--height=600"])
        check("left out the unfinished last line" in msg, "note on the unfinished line of run b: %r" % msg)
        if os.path.exists(out):
            width, height, rows = png_info(out)
            check((width, height) == (900, 600), "PNG is %dx%d, expected 900x600" % (width, height))
            # Background rows repeat; axes, curves and labels make many different rows.
            check(rows > 50, "the image looks blank: %d distinct rows" % rows)
            check(os.path.getsize(out) > 1000, "PNG of %d bytes" % os.path.getsize(out))
        check(sorted(os.listdir(tmp)) == ["run b's", "run_a", "two.png"], "leftovers in %s: %s" % (tmp, os.listdir(tmp)))

        # Defaults: 1200x800; --metrics picks any key; replacing an existing file.
        cwd_out = os.path.join(tmp, "metrics.png")
        p = subprocess.run([binary, "plot", run_a], cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        check(p.returncode == 0 and os.path.exists(cwd_out), "default --out metrics.png: %r" % p.stderr)
        if os.path.exists(cwd_out):
            check(png_info(cwd_out)[:2] == (1200, 800), "default size %s" % (png_info(cwd_out)[:2],))
        expect(binary, 0, "lr for 1 run", [run_a, "--metrics", "lr", "--out", cwd_out, "--width", "400",
                                            "--height", "300"])
        check(png_info(cwd_out)[:2] == (400, 300), "replaced PNG size %s" % (png_info(cwd_out)[:2],))
        # eval_loss (a default) is absent from run b alone: its panel is left out, not an error.
        expect(binary, 0, "loss, tokens_per_s for 1 run", [run_b, "--out", os.path.join(tmp, "b.png")])

        # Bad command lines and input: exit 2.
        expect(binary, 2, "give at least one run directory", [])
        missing = os.path.join(tmp, "no_such_run")
        expect(binary, 2, "run directory '%s' does not exist" % missing, [run_a, missing])
        empty = os.path.join(tmp, "empty_run")
        os.makedirs(empty)
        expect(binary, 2, "'%s/metrics.jsonl' does not exist" % empty, [empty])
        expect(binary, 2, "no run has values of metric 'nope' (they have: eval_loss, loss, lr, tokens_per_s)",
               [run_a, "--metrics", "loss,nope"])
        expect(binary, 2, "--width expects an integer number of pixels in [100, 20000], got '12x'",
               [run_a, "--width", "12x"])
        expect(binary, 2, "--height expects", [run_a, "--height", "50"])
        expect(binary, 2, "unknown option '--colour'", [run_a, "--colour", "red"])
        expect(binary, 2, "--out needs a value", [run_a, "--out"])

        # Malformed metrics: exit 1, naming file, line and column.
        bad = os.path.join(tmp, "bad_run")
        write_run(bad, lines_a[:2] + ['{"step": 3, "loss": 2.0,, "lr": 1}'] + lines_a[3:5])
        expect(binary, 1, "%s/metrics.jsonl:3: column 25: expected a string" % bad, [run_a, bad])
        write_run(bad, lines_a[:1] + ['{"loss": 2.0}'])
        expect(binary, 1, "%s/metrics.jsonl:2: no \"step\" member" % bad, [bad])

        # Runtime failures: exit 1.
        expect(binary, 1, "'/nonexistent/gnuplot' not found", [run_a, "--out", os.path.join(tmp, "g.png")],
               env={"TESSERA_GNUPLOT": "/nonexistent/gnuplot"})
        unwritable = os.path.join(tmp, "no_such_dir", "x.png")
        expect(binary, 1, "gnuplot", [run_a, "--out", unwritable])
        check(not os.path.exists(os.path.dirname(unwritable)), "created the --out directory")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passes, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
