#!/usr/bin/env python3
"""Under ZeRO 1 and 2 a step ends with the all-gather of the updated weights still on its way (the
next forward waits for it unit by unit); evaluation and checkpoints right after such a step must
see the gathered weights, not the ones before the update.

The reference is ZeRO 3 in the same layout, which gathers nothing at the end of a step (its
evaluation gathers every unit from the shards; its checkpoints save the shards) and does the same
arithmetic as ZeRO 2 on every gradient and weight (docs/architecture.md): its held-out losses and
checkpointed weights are those ZeRO 1 and 2 must produce, bit for bit. Two ranks under mpirun,
data-parallel, fp32 and bf16, evaluating every other step and saving every third (steps that
neither evaluate nor save leave their gather to the next forward). Checked:
  - every held-out loss equal to ZeRO 3's (the bf16 weights the forward reads are gathered);
  - every checkpoint's parameters equal to ZeRO 3's (`tessera checkpoint diff`, max |diff| 0; the
    fp32 runs save the gathered weights themselves, the bf16 runs the fp32 master);
  - the training losses equal too.
A loop that did not wait for the gather before such a reader fails here: the readers check that
no gather is pending and stop the run (seen with the wait in Trainer::FinishStep removed: the
first checkpoint save stops with "a checkpoint would save weights still being gathered"). Without
that check too, the comparison alone would not catch it on MPI: the collectives the loop issues in
between (the stop-signal all-reduce, evaluation's) let Open MPI complete the gather before the
save reads the weights, which then hold the right values; on NCCL they would race.

Usage: zero_gather_readers_test.py TESSERA MPIEXEC
"""
import json
import os
import subprocess
import sys
import tempfile

TESSERA, MPIEXEC = sys.argv[1], sys.argv[2]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.environ.get("TESSERA_PARITY_DATA", os.path.join(ROOT, "tests", "data", "parity_data"))
STEPS = 6
BASE = [
    "model.dim=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.ffn_dim=160",
    "model.vocab_size=4224", "train.seq_len=32", "train.global_batch=8", "train.micro_batch=2",
    f"train.steps={STEPS}", "train.warmup_steps=2", "train.lr=3e-3", "train.log_every=1", "train.eval_every=2",
    "train.eval_batches=3", "train.peak_tflops=1", "train.threads=1", "checkpoint.every=3",
    "checkpoint.at_end=false", "parallel.bucket_mb=0.05",
    f"data.train=[{{prefix: {DATA}/text, weight: 0.6}}, {{prefix: {DATA}/code, weight: 0.4}}]",
    f"data.val={DATA}/val",
]
failures = []


def run(name, overrides, workdir):
    run_dir = os.path.join(workdir, name)
    args = [MPIEXEC, "-np", "2", "--oversubscribe", "--bind-to", "none", TESSERA, "train",
            "--set", f"train.run_dir={run_dir}", "--set", f"checkpoint.dir={run_dir}/checkpoints"]
    for o in BASE + overrides:
        args += ["--set", o]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none", OMPI_MCA_rmaps_base_oversubscribe="1")
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        print(f"FAIL {name}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        failures.append(name)
        return None
    steps = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    return {"name": name, "steps": steps, "checkpoints": os.path.join(run_dir, "checkpoints")}


def compare(name, got, want):
    if got is None or want is None:
        return
    evals = [(s["step"], s.get("eval_loss")) for s in got["steps"] if "eval_loss" in s]
    want_evals = [(s["step"], s.get("eval_loss")) for s in want["steps"] if "eval_loss" in s]
    ok = len(evals) == STEPS // 2 and evals == want_evals
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: eval losses {evals} (zero 3: {want_evals})")
    if not ok:
        failures.append(f"{name} eval")
    losses = [s["loss"] for s in got["steps"]]
    ok = len(losses) == STEPS and losses == [s["loss"] for s in want["steps"]]
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: training losses {'equal' if ok else 'DIFFER'}")
    if not ok:
        failures.append(f"{name} losses")
    for step in range(3, STEPS + 1, 3):
        args = [TESSERA, "checkpoint", "diff", want["checkpoints"], got["checkpoints"], "--step", str(step),
                "--params-only", "--json"]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
        try:
            tensors = json.loads(proc.stdout)["tensors"]
        except ValueError:
            print(f"FAIL {name}: `{' '.join(args)}` exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            failures.append(f"{name} checkpoint {step}")
            continue
        bad = [t for t in tensors if t["status"] != "compared" or t.get("max_abs_diff") != 0]
        ok = bool(tensors) and not bad
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: checkpoint of step {step}, {len(tensors)} tensors, "
              f"{len(bad)} differ" + (f" (first: {bad[0]['name']}, {bad[0].get('max_abs_diff')})" if bad else ""))
        if not ok:
            failures.append(f"{name} checkpoint {step}")


def main():
    with tempfile.TemporaryDirectory(prefix="tessera_zero_gather_") as workdir:
        for precision in ("fp32", "bf16"):
            p = [f"train.precision={precision}"]
            want = run(f"zero3-{precision}", p + ["parallel.zero=3"], workdir)
            for zero in (1, 2):
                name = f"zero{zero}-{precision}"
                compare(name, run(name, p + [f"parallel.zero={zero}"], workdir), want)
    if failures:
        print("FAILED: " + ", ".join(failures))
        return 1
    print("all ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
