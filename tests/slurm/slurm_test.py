#!/usr/bin/env python3
"""scripts/launch/slurm_train.sbatch end to end on a real one-node Slurm (slurm_cluster.py).

The template is submitted unchanged, as from a fresh clone: from a submit directory that holds
only build/tessera (a link to the binary under test) and a config, with the documented CPU
overrides on sbatch's command line. Two tasks train a tiny model on the sample data.

  complete       a 2-task job runs to completion: output file in the submit directory, the
                 versions line without a NUL byte; its final loss is the reference
  usr1-steps     SIGUSR1 to the tasks (scancel --signal=USR1) -> save, exit 75, requeue ->
                 completion with the reference's final loss, exactly
  usr1-batch     SIGUSR1 to the batch shell (scancel --batch --signal=USR1, as --signal=B:USR1@N)
                 -> the trap forwards it -> the same
  requeue        scontrol requeue -> Slurm's SIGTERM, a save within KillWait -> the same
  time-limit     --time with --signal=USR1@N -> completion after >= 2 requeues
  time-limit-term  (only when named) --time without a save signal: the limit's SIGTERM -> save
                 within KillWait -> requeue -> completion
  no-mpi         srun without an MPI plugin (TESSERA_SRUN_MPI=none) -> exit 2 naming --mpi=pmix
  kill           one rank SIGKILLed under srun --kill-on-bad-exit=1 -> every rank gone within
                 the watchdog's signal grace (10 s) plus slack, its report in the output

Usage: slurm_test.py TESSERA [CASE...]   (default: every case)
Environment: TESSERA_SAMPLE_DATA (default .cache/sample_data); TESSERA_SKIP_SLURM=1 skips the
suite (exit 77) on machines that cannot run slurmd. Without the opt-out, a cluster that does not
start fails the suite with the reason.
"""
import json
import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slurm_cluster import ClusterError, SlurmCluster  # noqa: E402

SKIP = 77
TESSERA = os.path.abspath(sys.argv[1])
CASES = sys.argv[2:] or ["complete", "usr1-steps", "usr1-batch", "requeue", "time-limit", "no-mpi", "kill"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "scripts", "launch", "slurm_train.sbatch")
DATA = os.path.abspath(os.environ.get("TESSERA_SAMPLE_DATA", os.path.join(ROOT, ".cache", "sample_data")))
STEPS = 300
# The documented CPU overrides of the template's GPU defaults (docs/launch.md).
CPU = ["--gpus-per-node=0", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"]
MPI_ENV = dict(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")
# The watchdog's signal grace (parallel.comm: a collective still unfinished 10 s after SIGTERM
# ends the rank) plus slack for srun to notice the death and a loaded machine.
KILL_GRACE_S = 10 + 8
FINAL_STATES = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL"}
failures = []


def config_text(steps):
    return f"""# The tiny model of the Slurm test: seconds per job on 2 cores.
model: {{dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_dim: 160, vocab_size: 4224}}
train: {{seq_len: 32, micro_batch: 2, global_batch: 8, steps: {steps}, warmup_steps: 3, lr: 3.0e-3,
         min_lr: 3.0e-4, log_every: 1, eval_every: 0, threads: 1, peak_tflops: 1}}
checkpoint: {{every: 100, keep: 2}}
data:
  train:
    - {{prefix: {DATA}/text, weight: 0.6}}
    - {{prefix: {DATA}/code, weight: 0.4}}
"""


def check(ok, what, detail=""):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail else ""), flush=True)
    if not ok:
        failures.append(what)
    return ok


class Suite:
    def __init__(self, cluster, work):
        self.cluster = cluster
        self.work = work  # the submit directory
        self.reference = None  # the final loss of the uninterrupted run

    def submit(self, name, options, steps=STEPS, env=None):
        config = os.path.join(self.work, f"{name}.yaml")
        with open(config, "w") as f:
            f.write(config_text(steps))
        job = self.cluster.sbatch(CPU + [f"--job-name={name}"] + options + [TEMPLATE, config],
                                  cwd=self.work, env=dict(MPI_ENV, **(env or {})))
        print(f"  [{name}] job {job}", flush=True)
        return job

    def run_dir(self, name, job):
        return os.path.join(self.work, "runs", f"{name}-{job}")

    def output(self, name, job):
        path = os.path.join(self.work, f"{name}-{job}.out")
        return open(path, "rb").read().decode(errors="replace") if os.path.exists(path) else ""

    def metrics(self, name, job):
        path = os.path.join(self.run_dir(name, job), "metrics.jsonl")
        if not os.path.exists(path):
            return []
        records = []
        for line in open(path):
            try:
                records.append(json.loads(line))
            except ValueError:
                pass  # the line being written
        return records

    def wait_end(self, name, job, timeout):
        info = self.cluster.wait_for(job, lambda i: i.get("JobState") in FINAL_STATES, timeout)
        if info is None:
            info = self.cluster.job(job)
            print(f"  [{name}] still {info.get('JobState')} after {timeout} s; output:\n{self.output(name, job)[-3000:]}")
        return info or {}

    def wait_steps(self, name, job, at_least, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            records = self.metrics(name, job)
            if records and records[-1]["step"] >= at_least:
                return True
            if self.cluster.job(job).get("JobState") in FINAL_STATES:
                break
            time.sleep(0.1)
        print(f"  [{name}] never reached step {at_least}; output:\n{self.output(name, job)[-3000:]}")
        return False

    def check_finished(self, name, job, info, min_restarts, exact=True):
        """A completed job: exit 0, every attempt in one output file, the final loss."""
        out = self.output(name, job)
        restarts = int(info.get("Restarts", "0"))
        if not check(info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0",
                     f"{name}: the job completes", f"{info.get('JobState')} exit {info.get('ExitCode')}"):
            print(out[-4000:])
            return
        check(restarts >= min_restarts, f"{name}: requeued at least {min_restarts} time(s)", f"{restarts} restart(s)")
        attempts = sum(f"attempt {r}:" in out for r in range(restarts + 1))
        check(attempts == restarts + 1, f"{name}: every attempt appends to {name}-{job}.out",
              f"{attempts} of {restarts + 1} attempts in it")
        check("\0" not in out, f"{name}: the output has no NUL byte")
        records = self.metrics(name, job)
        steps = [r["step"] for r in records]
        check(len(steps) == len(set(steps)) and steps and steps[-1] == records[-1]["step"],
              f"{name}: metrics.jsonl holds each step once", f"steps {steps[0] if steps else '-'}..{steps[-1] if steps else '-'}")
        if steps and steps[0] == 1:
            check(steps == list(range(1, steps[-1] + 1)), f"{name}: metrics.jsonl holds every step since step 1")
        if exact and self.reference is not None and records:
            check(records[-1]["loss"] == self.reference, f"{name}: final loss equals the uninterrupted run's exactly",
                  f"{records[-1]['loss']!r} vs {self.reference!r}")
        for record in self.cluster.jobcomp_records(job):
            print(f"    attempt ended: JobState={record.get('JobState')} ExitCode={record.get('ExitCode')}")

    # --- the cases -------------------------------------------------------------------------

    def complete(self):
        job = self.submit("complete", [])
        info = self.wait_end("complete", job, 300)
        out = self.output("complete", job)
        check(os.path.exists(os.path.join(self.work, f"complete-{job}.out")),
              "complete: the output file is in the submit directory", f"complete-{job}.out")
        versions = [line for line in out.splitlines() if "versions: " in line]
        check(bool(versions) and "\0" not in versions[0], "complete: the versions line is text",
              versions[0].strip() if versions else "no versions line")
        self.check_finished("complete", job, info, 0, exact=False)
        records = self.metrics("complete", job)
        if records and records[-1]["step"] == STEPS:
            self.reference = records[-1]["loss"]
            # Seconds per step, for sizing the time-limit case.
            self.step_s = sum(r["step_time_s"] for r in records) / len(records)

    def usr1_steps(self):
        job = self.submit("usr1-steps", [])
        if self.wait_steps("usr1-steps", job, 40):
            p = self.cluster.run(["scancel", "--signal=USR1", job])
            check(p.returncode == 0, "usr1-steps: scancel --signal=USR1", p.stderr.strip())
        self.check_finished("usr1-steps", job, self.wait_end("usr1-steps", job, 300), 1)

    def usr1_batch(self):
        job = self.submit("usr1-batch", [])
        if self.wait_steps("usr1-batch", job, 40):
            p = self.cluster.run(["scancel", "--batch", "--signal=USR1", job])
            check(p.returncode == 0, "usr1-batch: scancel --batch --signal=USR1", p.stderr.strip())
        info = self.wait_end("usr1-batch", job, 300)
        check("received SIGUSR1: asking the tasks to save" in self.output("usr1-batch", job),
              "usr1-batch: the batch shell's trap forwards the signal")
        self.check_finished("usr1-batch", job, info, 1)

    def requeue(self):
        job = self.submit("requeue", [])
        if self.wait_steps("requeue", job, 40):
            p = self.cluster.run(["scontrol", "requeue", job])
            check(p.returncode == 0, "requeue: scontrol requeue", p.stderr.strip())
        info = self.wait_end("requeue", job, 300)
        check("checkpoint saved" in self.output("requeue", job), "requeue: the tasks save on Slurm's SIGTERM")
        self.check_finished("requeue", job, info, 1)

    def time_limit(self):
        # Slurm checks time limits and --signal every 30 s (it may signal up to 60 s early): with
        # --time=0:50 and --signal=USR1@5 an attempt got its SIGUSR1 15 to 55 s after it started.
        # Enough steps for 120 s of training (at the complete case's pace) take 3 attempts or more.
        step_s = getattr(self, "step_s", 0.05)
        steps = int(min(20000, max(600, 120 / max(step_s, 1e-3))))
        print(f"  [time-limit] {steps} steps at ~{step_s:.3f} s/step", flush=True)
        job = self.submit("time-limit", ["--time=0:50", "--signal=USR1@5"], steps=steps)
        info = self.wait_end("time-limit", job, 900)
        self.check_finished("time-limit", job, info, 2, exact=False)
        records = self.metrics("time-limit", job)
        check(bool(records) and records[-1]["step"] == steps, "time-limit: the last attempt reaches the last step")

    def time_limit_term(self):
        # The limit's SIGTERM as the only notice: the template's --signal=USR1@120 is replaced by
        # a signal nobody acts on (SIGURG is ignored by default). The first attempt is stopped at
        # 30 to 60 s, saves within KillWait and is requeued by the batch shell.
        step_s = getattr(self, "step_s", 0.05)
        steps = int(min(20000, max(600, 75 / max(step_s, 1e-3))))
        job = self.submit("time-limit-term", ["--time=0:30", "--signal=URG@1"], steps=steps)
        info = self.wait_end("time-limit-term", job, 900)
        out = self.output("time-limit-term", job)
        check("TimeLimit with exit 75 and a checkpoint saved in this attempt: requeueing" in out,
              "time-limit-term: the tasks save on the limit's SIGTERM and the batch shell requeues")
        self.check_finished("time-limit-term", job, info, 1, exact=False)

    def no_mpi(self):
        job = self.submit("no-mpi", [], env={"TESSERA_SRUN_MPI": "none"})
        info = self.wait_end("no-mpi", job, 120)
        out = self.output("no-mpi", job)
        check(info.get("JobState") == "FAILED" and info.get("ExitCode") == "2:0",
              "no-mpi: srun without an MPI plugin ends the job with exit 2",
              f"{info.get('JobState')} exit {info.get('ExitCode')}")
        check("srun --mpi=pmix" in out and "without an MPI plugin" in out, "no-mpi: the message names --mpi=pmix",
              next((line for line in out.splitlines() if "error:" in line), out[-500:]).strip())
        check("not built with SLURM's PMI support" not in out, "no-mpi: Tessera stops before MPI_Init")

    def kill(self):
        job = self.submit("kill", [], steps=100000)
        if not self.wait_steps("kill", job, 20):
            return
        victim = rank_pid(job, 1)
        if not check(victim is not None, "kill: rank 1's process found"):
            return
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        while time.time() - killed < 120 and any(rank_pid(job, r) for r in (0, 1)):
            time.sleep(0.1)
        gone = time.time() - killed
        check(gone <= KILL_GRACE_S, f"kill: every rank is gone within {KILL_GRACE_S} s of a rank's SIGKILL",
              f"{gone:.1f} s")
        info = self.wait_end("kill", job, 120)
        out = self.output("kill", job)
        report = [line for line in out.splitlines() if "rank 0:" in line and ("waiting" in line or "answer" in line)]
        check(bool(report), "kill: the survivor's watchdog report is in the output",
              report[0].strip() if report else out[-1500:])
        check(info.get("JobState") == "FAILED" and int(info.get("Restarts", "0")) == 0,
              "kill: the job fails and is not requeued", f"{info.get('JobState')} exit {info.get('ExitCode')}")


def rank_pid(job, rank):
    """The pid of the tessera task of `job` with SLURM_PROCID == rank, or None."""
    want = {b"SLURM_JOB_ID=" + job.encode(), b"SLURM_PROCID=" + str(rank).encode()}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if open(f"/proc/{pid}/comm").read().strip() != "tessera":
                continue
            environ = set(open(f"/proc/{pid}/environ", "rb").read().split(b"\0"))
        except OSError:
            continue
        if want <= environ:
            return int(pid)
    return None


def main():
    if os.environ.get("TESSERA_SKIP_SLURM") == "1":
        print("skipped: TESSERA_SKIP_SLURM=1 (the Slurm suite needs root, slurm-wlm and munge)")
        return SKIP
    if not os.path.exists(os.path.join(DATA, "COMPLETE")):
        print(f"no sample data at {DATA}: run scripts/prepare_sample_data.sh (scripts/test.sh does)")
        return 1
    with tempfile.TemporaryDirectory(prefix="tessera_slurm_") as tmp:
        os.chmod(tmp, 0o755)  # munged runs as the user munge and must reach its socket in it
        work = os.path.join(tmp, "submit")
        os.makedirs(os.path.join(work, "build"))
        os.symlink(TESSERA, os.path.join(work, "build", "tessera"))
        started = time.time()
        try:
            cluster = SlurmCluster(os.path.join(tmp, "cluster"))
            os.makedirs(cluster.root)
            cluster.start()
        except ClusterError as e:
            cluster.stop()
            print(f"FAIL: the test cluster did not start: {e}\n"
                  "Set TESSERA_SKIP_SLURM=1 to skip this suite on a machine that cannot run slurmd.")
            return 1
        try:
            print(f"Slurm up in {time.time() - started:.1f} s (node {cluster.node}, {cluster.cpus} CPUs)", flush=True)
            suite = Suite(cluster, work)
            for case in CASES:
                case_start = time.time()
                print(f"{case}:", flush=True)
                getattr(suite, case.replace("-", "_"))()
                print(f"  ({time.time() - case_start:.0f} s)", flush=True)
        finally:
            cluster.stop()
        if failures:
            print(f"slurmctld log:\n{cluster.log('slurmctld.log')}")
            print(f"{len(failures)} failure(s): {', '.join(failures)}")
            return 1
    print(f"all Slurm cases pass ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
