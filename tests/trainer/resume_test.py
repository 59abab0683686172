#!/usr/bin/env python3
"""Checkpoints end to end, with real processes under mpirun:

  * init_from (in the reshard suite): a checkpoint's weights alone start a run at step 1, in
    another layout, and a restart resumes from the run's own checkpoint instead;
  * exact resume: in every parallel mode, a run of N steps and the same run stopped at step k and
    resumed from its checkpoint give bit-identical losses and gradient norms for steps k+1..N
    (same layout, same arithmetic: nothing may differ at all), and end in bit-identical state:
    both save a checkpoint after step N, and the digest of every parameter and AdamW moment
    (`tessera checkpoint digest`: a 64-bit hash of each whole tensor's bytes) must be equal;
  * resharding: a checkpoint saved with TP2 x PP2 x DP2 continues under other layouts (1 rank,
    TP4 x DP2, PP4 x DP2, CP4, and from CP4 on into CP2 x DP2 at ZeRO 1) within the
    layout-parity tolerance of the uninterrupted run;
  * zero 3 (parameters sharded between uses): exact resume zero 3 -> zero 3 in fp32 and bf16 and
    in TP2 x PP2 x DP2, and
    resharding zero 3 <-> zero 1 at DP 2 (the same arithmetic: exact too, but for the gradient
    norm's last bits) and zero 3 at DP 2 -> DP 4 and one process (within the layout tolerances);
  * preemption: SIGTERM to a 2-rank run makes every rank save a complete checkpoint and exit
    with 75 (requeue); rerunning the same command resumes and reaches the uninterrupted run's
    final loss and final state (every tensor's digest) exactly.

metrics.jsonl holds every number in its shortest round-trip form, so the loss and gradient-norm
comparisons below are comparisons of the doubles themselves.

Usage: resume_test.py TESSERA MPIEXEC SUITE   (SUITE: exact | reshard | zero3 | signal)
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

TESSERA, MPIEXEC, SUITE = sys.argv[1], sys.argv[2], sys.argv[3]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.environ.get("TESSERA_SAMPLE_DATA", os.path.join(ROOT, ".cache", "sample_data"))
STEPS = 12
BASE = ["model.dim=64", "model.n_layers=8", "model.n_heads=4", "model.n_kv_heads=2", "model.ffn_dim=160",
        "model.vocab_size=4224", "train.seq_len=32", "train.global_batch=8", f"train.steps={STEPS}",
        "train.warmup_steps=3", "train.lr=3e-3", "train.min_lr=3e-4", "train.log_every=1", "train.eval_every=0",
        "train.threads=1", "train.peak_tflops=1", "checkpoint.keep=0", "checkpoint.at_end=true",
        f"data.train=[{{prefix: {DATA}/text, weight: 0.6}}, {{prefix: {DATA}/code, weight: 0.4}}]"]
# As in layout_parity_test.py: fp32 reassociation across layouts, amplified by AdamW over steps.
LOSS_ATOL, GRAD_NORM_RTOL = 2e-4, 3e-3
MPI_ENV = dict(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none", OMPI_MCA_rmaps_base_oversubscribe="1")
failures = []


def command(ranks, run_dir, overrides):
    args = [TESSERA, "train", "--set", f"train.run_dir={run_dir}"]
    for o in BASE + overrides:
        args += ["--set", o]
    if ranks > 1:
        args = [MPIEXEC, "-np", str(ranks), "--oversubscribe", "--bind-to", "none"] + args
    return args


def train(name, ranks, run_dir, overrides, expect=0):
    p = subprocess.run(command(ranks, run_dir, overrides), capture_output=True, text=True,
                       env=dict(os.environ, **MPI_ENV), timeout=600)
    if p.returncode != expect:
        failures.append(name)
        print(f"FAIL {name}: exit {p.returncode} (expected {expect})\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
        return None
    return p


def metrics(run_dir):
    return {r["step"]: r for r in (json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")))}


def compare(name, full, resumed, first_step, exact, loss_atol=LOSS_ATOL, norm_rtol=GRAD_NORM_RTOL):
    worst_loss = worst_norm = 0.0
    for step in range(first_step, STEPS + 1):
        a, b = full[step], resumed.get(step)
        if b is None:
            failures.append(name)
            print(f"FAIL {name}: step {step} missing after the resume")
            return
        worst_loss = max(worst_loss, abs(a["loss"] - b["loss"]))
        worst_norm = max(worst_norm, abs(a["grad_norm"] - b["grad_norm"]) / max(a["grad_norm"], 1e-12))
    ok = (worst_loss == 0 and worst_norm == 0) if exact else (worst_loss <= loss_atol and worst_norm <= norm_rtol)
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: steps {first_step}..{STEPS}: max |loss diff| {worst_loss:.2e}, "
          f"max grad-norm rel diff {worst_norm:.2e} ({'exact' if exact else f'tol {loss_atol:.0e} / {norm_rtol:.0e}'})")
    if not ok:
        failures.append(name)


def digests(run_dir):
    """{tensor name: (dtype, shape, digest)} of the checkpoint saved after step STEPS."""
    args = [TESSERA, "checkpoint", "digest", os.path.join(run_dir, "checkpoints"), "--step", str(STEPS), "--json"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        print(f"`{' '.join(args)}` exited {p.returncode}: {p.stderr[-2000:]}")
        return None
    return {t["name"]: (t["dtype"], tuple(t["shape"]), t["digest"]) for t in json.loads(p.stdout)["tensors"]}


def compare_state(name, full_dir, resumed_dir):
    """Every parameter and AdamW moment at the end of both runs: bit-identical."""
    a, b = digests(full_dir), digests(resumed_dir)
    if a is None or b is None:
        failures.append(name)
        print(f"FAIL {name}: no final checkpoint to compare")
        return
    differing = sorted(n for n in a.keys() | b.keys() if a.get(n) != b.get(n))
    moments = sum(1 for n in a if n.startswith("optim."))
    ok = not differing and moments > 0 and len(a) > moments
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: final state, {len(a) - moments} parameters and {moments} "
          f"AdamW moments: {len(differing)} digest(s) differ")
    if not ok:
        failures.append(name)
        for n in differing[:10]:
            print(f"    {n}: {a.get(n, 'missing')} vs {b.get(n, 'missing')}")


LAYOUTS = {
    "single": (1, ["train.micro_batch=4"]),
    "dp2-zero0": (2, ["train.micro_batch=2"]),
    "dp2-zero1": (2, ["train.micro_batch=2", "parallel.zero=1"]),
    "dp2-zero2": (2, ["train.micro_batch=2", "parallel.zero=2"]),
    "dp2-zero3": (2, ["train.micro_batch=2", "parallel.zero=3"]),
    "dp4-zero3": (4, ["train.micro_batch=1", "parallel.zero=3"]),
    "tp2-sp": (2, ["train.micro_batch=4", "parallel.tp=2", "parallel.sequence_parallel=true"]),
    "pp2-1f1b": (2, ["train.micro_batch=2", "parallel.pp=2", "parallel.pp_schedule=1f1b"]),
    "pp2-gpipe": (2, ["train.micro_batch=2", "parallel.pp=2", "parallel.pp_schedule=gpipe"]),
    "pp2-zbh1": (2, ["train.micro_batch=2", "parallel.pp=2", "parallel.pp_schedule=zb-h1"]),
    "pp2-interleaved": (2, ["train.micro_batch=2", "parallel.pp=2", "parallel.pp_schedule=interleaved",
                            "parallel.virtual_stages=2"]),
    "3d": (8, ["train.micro_batch=1", "parallel.tp=2", "parallel.pp=2", "parallel.sequence_parallel=true",
               "parallel.zero=1"]),
    "3d-zero3": (8, ["train.micro_batch=1", "parallel.tp=2", "parallel.pp=2", "parallel.sequence_parallel=true",
                     "parallel.zero=3"]),
    "tp4-dp2": (8, ["train.micro_batch=2", "parallel.tp=4"]),
    "pp4-dp2": (8, ["train.micro_batch=1", "parallel.pp=4"]),
    # Context parallelism: the checkpoint holds no trace of it (parameters are not split by cp),
    # and ZeRO's shards span dp x cp.
    "cp2-dp2-zero1": (4, ["train.micro_batch=2", "parallel.cp=2", "parallel.zero=1"]),
    "cp4": (4, ["train.micro_batch=4", "parallel.cp=4"]),
}
# bf16: bf16 weights with the optimizer's fp32 master, which the checkpoint keeps; resuming must
# restore both (the master from the checkpoint, the weights as its rounding) to be exact.
for _name in ("single", "dp2-zero0", "dp2-zero2", "dp2-zero3", "3d"):
    LAYOUTS[_name + "-bf16"] = (LAYOUTS[_name][0], LAYOUTS[_name][1] + ["train.precision=bf16"])


def param_digests(checkpoint_dir, step):
    args = [TESSERA, "checkpoint", "digest", checkpoint_dir, "--step", str(step), "--json"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return None
    return {t["name"]: t["digest"] for t in json.loads(p.stdout)["tensors"] if not t["name"].startswith("optim.")}


def check_init_from(tmp, ckpt):
    """checkpoint.init_from: the weights of `ckpt` (saved by TP2xPP2xDP2 at step 5) start a
    single-process run at step 1. At learning rate 0 AdamW changes nothing, so the run's final
    parameters must be the saved ones bit for bit (resharding reads values, it does not compute);
    the run's own metrics begin at step 1. Run again with more steps, the same command resumes
    from the run's own newest checkpoint, not from init_from."""
    out = os.path.join(tmp, "init-from")
    frozen = LAYOUTS["single"][1] + [f"checkpoint.init_from={ckpt}", "train.lr=0", "train.min_lr=0"]
    p = train("init_from", 1, out, frozen + ["train.steps=2"])
    if p is None:
        return
    saved, started = param_digests(os.path.dirname(ckpt), 5), param_digests(os.path.join(out, "checkpoints"), 2)
    steps = sorted(metrics(out))
    ok = (saved is not None and saved == started and steps == [1, 2] and
          "checkpoint.init_from: weights from" in p.stderr)
    print(f"  {'ok  ' if ok else 'FAIL'} init_from TP2xPP2xDP2 step 5 -> single: {len(saved or {})} parameters "
          f"equal at lr 0: {saved == started}; steps logged {steps}")
    if not ok:
        failures.append("init_from")
    again = train("init_from restarted", 1, out, frozen + ["train.steps=3"])
    if again is not None:
        ok = "resumed from " + os.path.join(out, "checkpoints", "step-00000002") in again.stderr and \
            "checkpoint.init_from" not in again.stderr
        print(f"  {'ok  ' if ok else 'FAIL'} init_from: a restart resumes from the run's own checkpoint")
        if not ok:
            failures.append("init_from restart")
            print(again.stderr[-2000:])
    both = train("init_from beside resume", 1, os.path.join(tmp, "both"),
                 LAYOUTS["single"][1] + [f"checkpoint.init_from={ckpt}", f"checkpoint.resume={ckpt}"], expect=2)
    if both is not None:
        ok = "beside checkpoint.resume" in both.stderr
        print(f"  {'ok  ' if ok else 'FAIL'} init_from beside a resume path is refused")
        if not ok:
            failures.append("init_from beside resume")


def main():
    if not os.path.exists(os.path.join(DATA, "COMPLETE")):
        sys.exit(f"no sample data at {DATA}: run scripts/prepare_sample_data.sh (scripts/test.sh does)")
    with tempfile.TemporaryDirectory(prefix="tessera_resume_") as tmp:
        if SUITE == "exact":
            for name in ["single", "dp2-zero0", "dp2-zero1", "dp2-zero2", "tp2-sp", "pp2-1f1b", "pp2-gpipe",
                         "pp2-zbh1", "pp2-interleaved", "3d", "single-bf16", "dp2-zero0-bf16", "dp2-zero2-bf16",
                         "3d-bf16", "cp2-dp2-zero1"]:
                ranks, layout = LAYOUTS[name]
                full_dir, part_dir = os.path.join(tmp, name + "-full"), os.path.join(tmp, name + "-resumed")
                # The uninterrupted run saves every 5 steps; the resumed one starts from step 5.
                if train(name + " (full)", ranks, full_dir, layout + ["checkpoint.every=5"]) is None:
                    continue
                ckpt = os.path.join(full_dir, "checkpoints", "step-00000005")
                if train(name + " (resumed)", ranks, part_dir, layout + [f"checkpoint.resume={ckpt}"]) is None:
                    continue
                compare(f"{name}: resume at step 5", metrics(full_dir), metrics(part_dir), 6, exact=True)
                compare_state(f"{name}: resume at step 5", full_dir, part_dir)
            # An asynchronous save of the same state writes the same tensors: resuming from it is
            # just as exact.
            ranks, layout = LAYOUTS["dp2-zero1"]
            async_dir = os.path.join(tmp, "async")
            if train("async", ranks, async_dir, layout + ["checkpoint.every=5", "checkpoint.async=true"]) is not None:
                ckpt = os.path.join(async_dir, "checkpoints", "step-00000005")
                resumed = os.path.join(tmp, "async-resumed")
                if train("async (resumed)", ranks, resumed, layout + [f"checkpoint.resume={ckpt}"]) is not None:
                    compare("async save, resume at step 5", metrics(async_dir), metrics(resumed), 6, exact=True)
                    compare_state("async save, resume at step 5", async_dir, resumed)
        elif SUITE == "reshard":
            reference = os.path.join(tmp, "reference")
            if train("reference", 1, reference, LAYOUTS["single"][1]) is None:
                sys.exit(1)
            ref = metrics(reference)
            saved = os.path.join(tmp, "saved-3d")
            if train("saved 3d", 8, saved, LAYOUTS["3d"][1] + ["checkpoint.every=5"]) is None:
                sys.exit(1)
            ckpt = os.path.join(saved, "checkpoints", "step-00000005")
            for name in ["single", "tp4-dp2", "pp4-dp2", "dp2-zero2", "cp4"]:
                ranks, layout = LAYOUTS[name]
                out = os.path.join(tmp, "into-" + name)
                if train(f"3d -> {name}", ranks, out, layout + [f"checkpoint.resume={ckpt}", "checkpoint.every=8"]) is None:
                    continue
                compare(f"TP2xPP2xDP2 -> {name}", ref, metrics(out), 6, exact=False)
            # And back: from a single-process checkpoint into the 3D layout.
            back = os.path.join(tmp, "back")
            one = os.path.join(tmp, "into-single", "checkpoints", "step-00000008")
            if os.path.isdir(one) and train("single -> 3d", 8, back, LAYOUTS["3d"][1] + [f"checkpoint.resume={one}"]) is not None:
                compare("single -> TP2xPP2xDP2", ref, metrics(back), 9, exact=False)
            # Out of context parallelism: CP4's step-8 checkpoint into CP2 x DP2 at ZeRO 1.
            cp4 = os.path.join(tmp, "into-cp4", "checkpoints", "step-00000008")
            out = os.path.join(tmp, "cp4-to-cp2-dp2")
            ranks, layout = LAYOUTS["cp2-dp2-zero1"]
            if os.path.isdir(cp4) and train("cp4 -> cp2 x dp2", ranks, out, layout + [f"checkpoint.resume={cp4}"]) is not None:
                compare("CP4 -> CP2xDP2 zero 1", ref, metrics(out), 9, exact=False)
            elif not os.path.isdir(cp4):
                failures.append("no CP4 checkpoint at step 8")
            # bf16: the checkpoint holds the fp32 master, so it reshards as fp32 does. Two checks:
            #  - the first step after the resume: its loss is a forward pass of the saved weights,
            #    so it must match the saving run's own step 6 up to the layouts' bf16 forward
            #    noise (TP rounds row-parallel partial products to bf16 before their sum): measured
            #    1.1e-5, allowed 2e-4; a block in the wrong place moves it by far more. (That the
            #    master itself is restored, not its bf16 rounding, is the exact suite's check.)
            #  - the run after it, against an uninterrupted single-process bf16 run: this 8-layer
            #    model passes through gradient-norm spikes where bf16 layouts differ by up to 30%
            #    in the norm (measured, with or without a resume), so only the losses are compared:
            #    measured 5.7e-3, allowed 2e-2.
            bf16_ref = os.path.join(tmp, "reference-bf16")
            bf16_saved = os.path.join(tmp, "saved-3d-bf16")
            if (train("reference bf16", 1, bf16_ref, LAYOUTS["single-bf16"][1]) is not None and
                    train("saved 3d bf16", 8, bf16_saved, LAYOUTS["3d-bf16"][1] + ["checkpoint.every=5"]) is not None):
                ckpt16 = os.path.join(bf16_saved, "checkpoints", "step-00000005")
                out = os.path.join(tmp, "into-single-bf16")
                if train("3d bf16 -> single", 1, out, LAYOUTS["single-bf16"][1] + [f"checkpoint.resume={ckpt16}"]) is not None:
                    first = abs(metrics(out)[6]["loss"] - metrics(bf16_saved)[6]["loss"])
                    ok = first <= 2e-4
                    print(f"  {'ok  ' if ok else 'FAIL'} bf16 TP2xPP2xDP2 -> single: step 6 loss {first:.2e} from the "
                          f"saving run's (tol 2e-4)")
                    if not ok:
                        failures.append("bf16 reshard first step")
                    compare("bf16 TP2xPP2xDP2 -> single", metrics(bf16_ref), metrics(out), 6, exact=False,
                            loss_atol=2e-2, norm_rtol=float("inf"))
            check_init_from(tmp, ckpt)
            # A checkpoint of another model shape is refused, naming the key.
            p = train("other shape", 1, os.path.join(tmp, "other"), LAYOUTS["single"][1] +
                      [f"checkpoint.resume={ckpt}", "model.n_layers=6"], expect=2)
            if p is not None:
                ok = "model.n_layers = 8, this run's = 6" in p.stderr
                print(f"  {'ok  ' if ok else 'FAIL'} another model shape is refused: {p.stderr.strip().splitlines()[-1]}")
                if not ok:
                    failures.append("other shape message")
        elif SUITE == "zero3":
            # Exact resume at zero 3, fp32 and bf16 (the fp32 master and the bf16 shards).
            full = {}
            for name in ("dp2-zero3", "dp2-zero3-bf16", "3d-zero3", "dp2-zero1"):
                ranks, layout = LAYOUTS[name]
                full[name] = os.path.join(tmp, name + "-full")
                if train(name + " (full)", ranks, full[name], layout + ["checkpoint.every=5"]) is None:
                    full[name] = None
                    continue
                if name == "dp2-zero1":
                    continue
                part_dir = os.path.join(tmp, name + "-resumed")
                ckpt = os.path.join(full[name], "checkpoints", "step-00000005")
                if train(name + " (resumed)", ranks, part_dir, layout + [f"checkpoint.resume={ckpt}"]) is None:
                    continue
                compare(f"{name}: resume at step 5", metrics(full[name]), metrics(part_dir), 6, exact=True)
                compare_state(f"{name}: resume at step 5", full[name], part_dir)
            # zero 3 <-> zero 1 at DP 2: the same arithmetic on every gradient and weight (only the
            # norm sums its squares in other buckets: rel 1e-12 allows its last bits), so the
            # resumed run continues the other layout's uninterrupted run bit for bit.
            for source, target in (("dp2-zero3", "dp2-zero1"), ("dp2-zero1", "dp2-zero3")):
                if full[source] is None or full[target] is None:
                    failures.append(f"{source} -> {target}")
                    continue
                ranks, layout = LAYOUTS[target]
                out = os.path.join(tmp, f"{source}-into-{target}")
                ckpt = os.path.join(full[source], "checkpoints", "step-00000005")
                if train(f"{source} -> {target}", ranks, out, layout + [f"checkpoint.resume={ckpt}"]) is None:
                    continue
                compare(f"{source} -> {target}: losses", metrics(full[target]), metrics(out), 6, exact=False,
                        loss_atol=0.0, norm_rtol=1e-12)
                compare_state(f"{source} -> {target}", full[target], out)
            # zero 3 at DP 2 into DP 4 (zero 3) and one process: other reduction orders, so the
            # layout tolerances against the uninterrupted DP 2 run.
            if full["dp2-zero3"] is not None:
                ckpt = os.path.join(full["dp2-zero3"], "checkpoints", "step-00000005")
                for target in ("dp4-zero3", "single"):
                    ranks, layout = LAYOUTS[target]
                    out = os.path.join(tmp, "dp2-zero3-into-" + target)
                    if train(f"dp2-zero3 -> {target}", ranks, out, layout + [f"checkpoint.resume={ckpt}"]) is None:
                        continue
                    compare(f"dp2-zero3 -> {target}", metrics(full["dp2-zero3"]), metrics(out), 6, exact=False)
        elif SUITE == "signal":
            ranks, layout = LAYOUTS["dp2-zero1"]
            # Longer sequences: ~1 s steps, so the signal lands mid-run.
            layout = layout + ["train.seq_len=256"]
            full = os.path.join(tmp, "full")
            if train("uninterrupted", ranks, full, layout) is None:
                sys.exit(1)
            run_dir = os.path.join(tmp, "preempted")
            args = command(ranks, run_dir, layout)
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=dict(os.environ, **MPI_ENV), start_new_session=True)
            metrics_path = os.path.join(run_dir, "metrics.jsonl")
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None:
                if os.path.exists(metrics_path) and sum(1 for _ in open(metrics_path)) >= 3:
                    break
                time.sleep(0.05)
            # Like Slurm's --signal=B:TERM to the tasks: every rank gets it (not mpirun itself, which
            # would tear the job down on its own).
            ranks_pids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                                        text=True).stdout.split()
            for pid in ranks_pids:
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except ProcessLookupError:
                    pass
            out, _ = proc.communicate(timeout=120)
            ok = proc.returncode == 75 and "checkpoint saved" in out
            print(f"  {'ok  ' if ok else 'FAIL'} SIGTERM to {len(ranks_pids)} rank(s): exit {proc.returncode} (75 expected)")
            if not ok:
                failures.append("signal exit")
                print(out[-3000:])
            else:
                done = max(metrics(run_dir))
                again = train("rerun after the signal", ranks, run_dir, layout)
                if again is not None:
                    ok = "resumed from" in again.stderr and metrics(run_dir)[STEPS]["loss"] == metrics(full)[STEPS]["loss"]
                    print(f"  {'ok  ' if ok else 'FAIL'} rerun resumes after step {done} and ends with the "
                          f"uninterrupted run's final loss ({metrics(run_dir)[STEPS]['loss']} vs {metrics(full)[STEPS]['loss']})")
                    if not ok:
                        failures.append("signal resume")
                    compare_state("rerun after the signal", full, run_dir)
        else:
            sys.exit(f"unknown suite {SUITE}")
    if failures:
        print(f"{len(failures)} failure(s): {', '.join(failures)}")
        sys.exit(1)
    print("all checkpoint cases pass")


main()
