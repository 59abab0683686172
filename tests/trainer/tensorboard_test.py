"""Reads Tessera's TensorBoard event files with TensorBoard's own reader (EventAccumulator).

1. Scalars: tensorboard_driver writes a few hundred scalars given here (several tags, unicode,
   negative and huge steps, 0, NaN, infinities, float32 overflow and subnormals, explicit wall
   times) with TensorBoardWriter::AddScalar; every one must come back with its tag, step, wall
   time and value (the value rounded to float32, TensorBoard's simple_value).
2. A run directory: tensorboard_driver writes metrics.jsonl and events for the same StepMetrics
   records (MetricsJsonLine and WriteStepScalars), and check_run_dir finds them equal; a
   metrics.jsonl with one value changed or one key removed must fail the same check.

check_run_dir(run_dir) is the comparison for any run directory (the trainer's test can call it
once the trainer writes events); `tensorboard_test.py --check-run RUN_DIR` runs it alone.

usage: tensorboard_test.py TENSORBOARD_DRIVER
       tensorboard_test.py --check-run RUN_DIR
"""
import glob
import importlib
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile

TENSORBOARD_VERSION = "2.21.0"


def ensure_tensorboard():
    """Imports tensorboard, pip-installing the pinned version into this interpreter if missing."""
    try:
        import tensorboard  # noqa: F401
        return
    except ImportError:
        pass
    pins = []
    try:
        from importlib.metadata import version
        pins.append("torch==" + version("torch"))  # never let pip change the project's LibTorch
    except Exception:
        pass
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(pins) + "\n")
        constraint = f.name
    print("[tensorboard] installing tensorboard==%s with pip" % TENSORBOARD_VERSION, flush=True)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-c", constraint,
                           "tensorboard==" + TENSORBOARD_VERSION])
    os.unlink(constraint)
    importlib.invalidate_caches()


def load_scalars(path):
    """{tag: [ScalarEvent(wall_time, step, value), ...]} of the event files in `path` (a
    directory: its events.out.tfevents.* files in name order; or one file), every event kept."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    acc = ea.EventAccumulator(path, size_guidance={ea.SCALARS: 0})
    acc.Reload()
    assert acc.file_version == 2.0, "file_version %r, expected brain.Event:2" % acc.file_version
    return {tag: acc.Scalars(tag) for tag in acc.Tags()[ea.SCALARS]}


def f32(x):
    """x as TensorBoard stores it: rounded to float32 (IEEE, overflow to infinity)."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def next_f32(x, direction):
    """The float32 neighbour of float32 x towards +inf (direction 1) or -inf (-1)."""
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    if x == 0:
        return direction * 1.4e-45
    bits += direction if x > 0 else -direction
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def same_run_value(event_value, json_value):
    """A trainer writes the event from the double (rounded once to float32) and metrics.jsonl
    from the same double printed with 9 significant digits; rounding that text to float32 can
    land one float32 step away from rounding the double. Equal, or one ulp of float32 apart."""
    want = f32(json_value)
    if same(event_value, want) or math.isinf(want):
        return same(event_value, want)
    return event_value in (next_f32(want, 1), next_f32(want, -1))


def check_run_dir(run_dir):
    """Checks that the TensorBoard scalars of RUN_DIR equal its metrics.jsonl: the same tags as
    the JSON keys other than "step", and per tag the same (step, value) sequence, in file order,
    with values compared after rounding to float32. Returns the number of scalars compared;
    raises AssertionError naming the first difference."""
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    expected = {}
    with open(metrics_path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            assert "step" in record, "%s:%d has no step" % (metrics_path, number)
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    expected.setdefault(key, []).append((record["step"], float(value)))
    files = sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")))
    assert files, "no events.out.tfevents.* file in %s" % run_dir
    actual = load_scalars(run_dir)
    only_events = sorted(set(actual) - set(expected))
    only_json = sorted(set(expected) - set(actual))
    assert not only_events and not only_json, "%s: tags only in the events: %s; keys only in metrics.jsonl: %s" % (
        run_dir, only_events, only_json)
    compared = 0
    for tag in sorted(expected):
        want, got = expected[tag], actual[tag]
        assert len(want) == len(got), "%s: tag %r has %d events but %d metrics.jsonl values" % (
            run_dir, tag, len(got), len(want))
        for (step, value), event in zip(want, got):
            assert event.step == step, "%s: tag %r: event step %d where metrics.jsonl has step %d" % (
                run_dir, tag, event.step, step)
            assert same_run_value(event.value, value), "%s: tag %r step %d: event value %r, metrics.jsonl %r" % (
                run_dir, tag, step, event.value, value)
            compared += 1
    return compared


def run(cmd, stdin=b""):
    p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.decode(errors="replace")))
    return p.stdout.decode().strip()


def check_scalars(driver, tmp):
    special = [0.0, -0.0, 1.0, -2.5, 0.1, 1e-3, 123456.789, 3.0e38, 1e39, -1e39, 1e-45, 1e-50,
               math.nan, math.inf, -math.inf]
    spec = []
    tags = ["loss", "train/lr", "eval/loss", "\u00fc/\u635f\u5931 with spaces"]
    for i in range(300):
        tag = tags[i % len(tags)]
        step = [i, -7, 2 ** 40 + i, 0][i % 4] if i < 40 else i
        value = special[i % len(special)] if i < 60 else math.sin(i) * 10 ** (i % 7 - 3)
        spec.append((tag, step, value, 1.7e9 + i * 0.125))
    text = "".join("%s\t%d\t%r\t%r\n" % s for s in spec)
    out_dir = os.path.join(tmp, "scalars")
    path = run([driver, "scalars", out_dir, ".rank7"], text.encode())
    name = os.path.basename(path)
    assert re.fullmatch(r"events\.out\.tfevents\.\d+\.%s\.rank7" % re.escape(socket.gethostname()), name), name
    actual = load_scalars(out_dir)
    assert sorted(actual) == sorted(tags), sorted(actual)
    for tag in tags:
        want = [s for s in spec if s[0] == tag]
        got = actual[tag]
        assert len(got) == len(want), "%r: %d events, wrote %d" % (tag, len(got), len(want))
        for (_, step, value, wall_time), event in zip(want, got):
            assert event.step == step, (tag, event, step)
            assert event.wall_time == wall_time, (tag, event, wall_time)
            assert same(event.value, f32(value)), (tag, step, event.value, value)
    print("[tensorboard] %d scalars of %d tags read back by EventAccumulator: tag, step, wall time, value exact"
          % (len(spec), len(tags)))


def check_run(driver, tmp):
    run_dir = os.path.join(tmp, "run")
    run([driver, "run", run_dir])
    compared = check_run_dir(run_dir)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = f.read().splitlines()
    keys = set(json.loads(lines[4]))  # step 5 has an eval
    assert keys == {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "step_time_s", "memory_mb",
                    "data_wait_s", "skipped_steps", "eval_loss"}, sorted(keys)
    assert compared == 20 * 9 + 4, compared
    print("[tensorboard] run directory: %d scalars equal metrics.jsonl (tags = JSON keys)" % compared)
    # The comparison must be able to fail: a changed value, then a missing key.
    for name, edit in [("changed value", lambda r: r.update(loss=r["loss"] * 1.001)),
                       ("missing key", lambda r: r.pop("eval_loss"))]:
        bad = os.path.join(tmp, "bad_run")
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(run_dir, bad)
        records = [json.loads(l) for l in lines]
        edit(records[9])  # step 10, which has an eval_loss
        with open(os.path.join(bad, "metrics.jsonl"), "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
        try:
            check_run_dir(bad)
        except AssertionError as e:
            print("[tensorboard] %s detected: %s" % (name, e))
        else:
            sys.exit("check_run_dir accepted a metrics.jsonl with a %s" % name)


def main():
    ensure_tensorboard()
    if len(sys.argv) == 3 and sys.argv[1] == "--check-run":
        print("[tensorboard] %d scalars equal metrics.jsonl" % check_run_dir(sys.argv[2]))
        return 0
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    driver = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="tessera_tensorboard_")
    try:
        check_scalars(driver, tmp)
        check_run(driver, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("[tensorboard] all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
