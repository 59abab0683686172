#!/usr/bin/env python3
"""`tessera sweep` end to end: a sweep of 4 real runs of a tiny model on the sample data, each
provoking another outcome, run locally, resumed, reported, and turned into a Slurm array script.

  run 0  completed      3 steps of a 1-layer model of width 32
  run 1  diverged       model.init_std=0 with model.norm_eps=0: every weight is zero, so the first
                        RMSNorm divides 0 by 0 and the loss is NaN at step 1; train.max_skips=0
                        lets the spike guard skip no update, so the run stops (exit 4)
  run 2  config_error   model.n_kv_heads=3 does not divide model.n_heads=2 (exit 2)
  run 3  failed         data that is missing at run time: the corpus's .idx is there, its .bin cut
                        short (exit 1; a prefix with no files at all is a config error, exit 2)

Then: rerunning the sweep skips the completed run; --report prints every outcome and its CSV
parses; --slurm writes a job array script that bash can parse; --record-outcome classifies a
preempted run (exit 75); configs/sweeps/example.yaml expands into valid configs. Last, a second
sweep's run is preempted for real (SIGTERM to the sweep, passed on to the run: checkpoint, exit
75, outcome preempted) and a rerun of the sweep resumes it to completion; and a third sweep's
2-rank run loses a rank to SIGKILL mid-training (outcome comm_timeout).

Usage: sweep_test.py TESSERA   Environment: TESSERA_SAMPLE_DATA (default .cache/sample_data).
Fails without the sample data (scripts/prepare_sample_data.sh makes it; scripts/test.sh runs it).
"""
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

TESSERA = os.path.abspath(sys.argv[1])
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.abspath(os.environ.get("TESSERA_SAMPLE_DATA", os.path.join(ROOT, ".cache", "sample_data")))

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAIL:", message)


def tessera(args, cwd):
    start = time.time()
    proc = subprocess.run([TESSERA] + args, cwd=cwd, capture_output=True, text=True, timeout=300)
    print(f"$ tessera {' '.join(args)}  -> exit {proc.returncode} in {time.time() - start:.1f} s")
    return proc


def main():
    if not os.path.exists(os.path.join(DATA, "text.idx")):
        print(f"FAIL: no sample data at {DATA}: run scripts/prepare_sample_data.sh (scripts/test.sh does)")
        return 1
    work = tempfile.mkdtemp(prefix="tessera_sweep_test_")
    try:
        return run(work)
    finally:
        if failures:
            print(f"(kept {work} for inspection)")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(work):
    # The corpus whose .bin went missing: a real .idx beside the first 1000 bytes of its .bin.
    os.makedirs(os.path.join(work, "cut"))
    shutil.copy(os.path.join(DATA, "text.idx"), os.path.join(work, "cut", "text.idx"))
    with open(os.path.join(DATA, "text.bin"), "rb") as f, open(os.path.join(work, "cut", "text.bin"), "wb") as g:
        g.write(f.read(1000))
    with open(os.path.join(work, "base.yaml"), "w") as f:
        f.write(
            "model: {dim: 32, n_layers: 1, n_heads: 2, n_kv_heads: 1, ffn_dim: 64, vocab_size: 4224}\n"
            "train: {seq_len: 16, micro_batch: 2, global_batch: 2, steps: 3, eval_every: 0, log_every: 1,\n"
            "        warmup_steps: 1, threads: 1}\n"
            f"data: {{train: [{{prefix: {DATA}/text, weight: 1}}]}}\n")
    with open(os.path.join(work, "sweep.yaml"), "w") as f:
        f.write(
            "name: outcomes\n"
            "base: base.yaml\n"
            "list:\n"
            "  - {train.lr: 3.0e-3}\n"
            "  - {model.init_std: 0, model.norm_eps: 0, train.max_skips: 0}\n"
            "  - {model.n_kv_heads: 3}\n"
            f"  - {{data.train: [{{prefix: {work}/cut/text, weight: 1}}]}}\n")
    expected = ["completed", "diverged", "config_error", "failed"]

    dry = tessera(["sweep", "sweep.yaml", "--dry-run"], work)
    check(dry.returncode == 0, f"--dry-run exit {dry.returncode}: {dry.stderr}")
    check(dry.stdout.count("train.run_dir=runs/outcomes/outcomes-00") == 4, "--dry-run: 4 commands with run dirs")
    check("invalid config: outcomes-002_n_kv_heads3: " in dry.stdout, "--dry-run flags the invalid config")

    example = tessera(["sweep", os.path.join(ROOT, "configs", "sweeps", "example.yaml"), "--dry-run"], work)
    check(example.returncode == 0 and "invalid" not in example.stdout,
          f"configs/sweeps/example.yaml --dry-run: exit {example.returncode}\n{example.stdout}{example.stderr}")

    start = time.time()
    first = tessera(["sweep", "sweep.yaml"], work)
    print(first.stdout)
    check(first.returncode == 1, f"a sweep with failed runs exits 1, got {first.returncode}: {first.stderr}")
    check("run 4/4" in first.stdout and "ETA" in first.stdout, "progress lines with run i/n and ETA")
    runs_dir = os.path.join(work, "runs", "outcomes")
    names = sorted(os.listdir(runs_dir))
    check(len(names) == 4, f"4 run folders, got {names}")
    for name, want in zip(names, expected):
        with open(os.path.join(runs_dir, name, "outcome.json")) as f:
            outcome = json.load(f)
        print(f"  {name}: {outcome['outcome']} (exit {outcome['exit_code']}): {outcome['reason']}")
        check(outcome["outcome"] == want, f"{name}: outcome {outcome['outcome']}, expected {want}")
        check(outcome["end_unix"] >= outcome["start_unix"], f"{name}: start/end times")
        check(os.path.getsize(os.path.join(runs_dir, name, "stdout.log")) > 0, f"{name}: stdout.log")
    with open(os.path.join(runs_dir, names[1], "outcome.json")) as f:
        diverged = json.load(f)
    print("  the diverged run was classified from " +
          ("its exit code 4" if diverged["exit_code"] == 4 else f"its run folder (exit code {diverged['exit_code']})"))

    again = tessera(["sweep", "sweep.yaml"], work)
    check("1 completed earlier, 3 to run" in again.stdout, f"rerun skips the completed run:\n{again.stdout}")

    report = tessera(["sweep", "sweep.yaml", "--report", "--csv", "report.csv"], work)
    print(report.stdout)
    check(report.returncode == 0, f"--report exit {report.returncode}: {report.stderr}")
    for want in expected:
        check(want in report.stdout, f"--report shows {want}")
    with open(os.path.join(work, "report.csv")) as f:
        rows = list(csv.DictReader(f))
    check([r["outcome"] for r in rows] == expected, f"CSV outcomes {[r['outcome'] for r in rows]}")
    done = rows[0]
    check(done["steps"] == "3", f"completed run: steps {done['steps']}")
    check(math.isfinite(float(done["final_loss"])) and float(done["final_loss"]) > 0, "completed run: final loss")
    check(float(done["tokens_per_s"]) > 0 and float(done["peak_memory_mb"]) > 0, "completed run: tokens/s, memory")
    check(rows[2]["exit_code"] == "2" and "n_kv_heads" in rows[2]["reason"], f"config error reason: {rows[2]['reason']}")

    slurm = tessera(["sweep", "sweep.yaml", "--slurm", "--jobs-dir", "jobs"], work)
    script = os.path.join(work, "jobs", "outcomes.sbatch")
    check(slurm.returncode == 0 and os.path.exists(script), f"--slurm writes {script}: {slurm.stderr}")
    if os.path.exists(script):
        text = open(script).read()
        check("#SBATCH --array=0-3" in text and "--record-outcome" in text, "job array script contents")
        syntax = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
        check(syntax.returncode == 0, f"bash -n {script}: {syntax.stderr}")

    preempted = os.path.join(work, "preempted")
    os.makedirs(preempted)
    rec = tessera(["sweep", "--record-outcome", preempted, "--exit-code", "75"], work)
    check(rec.returncode == 0 and "preempted" in rec.stdout, f"--record-outcome 75: {rec.stdout}{rec.stderr}")

    # Preemption for real: SIGTERM to the sweep while its run trains is passed on to the run,
    # which saves a checkpoint and exits 75; the run is classified preempted, and rerunning the
    # sweep resumes it from that checkpoint to completion.
    with open(os.path.join(work, "preempt.yaml"), "w") as f:
        f.write("name: preempt\nbase: base.yaml\nlist:\n  - {train.steps: 2000, train.seq_len: 64, train.log_every: 1}\n")
    proc = subprocess.Popen([TESSERA, "sweep", "preempt.yaml"], cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    preempt_runs = os.path.join(work, "runs", "preempt")
    run_dir = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = [d for d in (os.listdir(preempt_runs) if os.path.isdir(preempt_runs) else []) if d.startswith("preempt-000")]
        run_dir = os.path.join(preempt_runs, found[0]) if found else None
        metrics_path = os.path.join(run_dir, "metrics.jsonl") if run_dir else ""
        if run_dir and os.path.exists(metrics_path) and sum(1 for _ in open(metrics_path)) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(15)
    out, _ = proc.communicate(timeout=180)
    check(proc.returncode == 75, f"SIGTERM to the sweep: exit {proc.returncode} (75 expected)\n{out[-2000:]}")
    if run_dir and os.path.exists(os.path.join(run_dir, "outcome.json")):
        with open(os.path.join(run_dir, "outcome.json")) as f:
            outcome = json.load(f)
        print(f"  preempt-000: {outcome['outcome']} (exit {outcome['exit_code']})")
        check(outcome["outcome"] == "preempted", f"signalled run: outcome {outcome['outcome']}")
    else:
        check(False, "signalled run: no outcome.json")
    check(run_dir is not None and os.path.isdir(os.path.join(run_dir, "checkpoints")), "signalled run: a checkpoint was saved")
    resumed = tessera(["sweep", "preempt.yaml"], work)
    log = open(os.path.join(run_dir, "stdout.log")).read() if run_dir else ""
    check(resumed.returncode == 0 and "resumed from" in log, f"rerun resumes the preempted run: exit {resumed.returncode}")
    report = tessera(["sweep", "preempt.yaml", "--report"], work)
    check("completed" in report.stdout, f"after the resume the run is completed:\n{report.stdout}")

    # A communication failure for real: a 2-rank run (mpirun) whose rank 1 is killed mid-training.
    # mpirun tears the job down, rank 0 reports the collective it was left waiting in, and the
    # run is classified comm_timeout.
    with open(os.path.join(work, "killed.yaml"), "w") as f:
        f.write("name: killed\nbase: base.yaml\nranks: 2\n"
                "list:\n  - {train.steps: 2000, train.seq_len: 64, train.global_batch: 4, train.log_every: 1, parallel.comm_timeout_s: 10}\n")
    proc = subprocess.Popen([TESSERA, "sweep", "killed.yaml"], cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killed_runs = os.path.join(work, "runs", "killed")
    run_dir, victim = None, None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = [d for d in (os.listdir(killed_runs) if os.path.isdir(killed_runs) else []) if d.startswith("killed-000")]
        run_dir = os.path.join(killed_runs, found[0]) if found else None
        metrics_path = os.path.join(run_dir, "metrics.jsonl") if run_dir else ""
        if run_dir and os.path.exists(metrics_path) and sum(1 for _ in open(metrics_path)) >= 3:
            # sweep -> mpirun -> the two ranks: kill the last-started rank.
            ps = subprocess.run(["ps", "-eo", "pid=,ppid=,comm="], capture_output=True, text=True).stdout.split("\n")
            table = [line.split() for line in ps if line.strip()]
            mpirun = [int(p) for p, pp, c in table if c == "mpirun" and int(pp) in
                      {proc.pid} | {int(q) for q, qq, _ in table if int(qq) == proc.pid}]
            ranks = sorted(int(p) for p, pp, c in table if mpirun and int(pp) == mpirun[0] and c == "tessera")
            if ranks:
                victim = ranks[-1]
                os.kill(victim, 9)
                break
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=180)
    check(victim is not None, "killed run: found a rank to kill")
    if run_dir and os.path.exists(os.path.join(run_dir, "outcome.json")):
        with open(os.path.join(run_dir, "outcome.json")) as f:
            outcome = json.load(f)
        print(f"  killed-000: {outcome['outcome']} (exit {outcome['exit_code']}): {outcome['reason']}")
        check(outcome["outcome"] == "comm_timeout", f"killed rank: outcome {outcome['outcome']}\n{out[-1500:]}")
    else:
        check(False, "killed rank: no outcome.json")

    print(f"{len(failures)} failure(s); {time.time() - start:.1f} s of sweeping")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
