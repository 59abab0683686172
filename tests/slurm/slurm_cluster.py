"""A real one-node Slurm for tests: munged, slurmctld and slurmd started in a temporary directory.

Debian's `slurm-wlm` and `munge` (scripts/setup.sh installs them); no systemd, nothing written
outside the temporary directory (keys, sockets, state, spool, logs, slurm.conf all live there;
clients find the cluster through SLURM_CONF). Every daemon is started by this process and
stopped by its PID in stop(), also when a test fails.

Two settings differ from Slurm's defaults, both to keep a test suite short:
  * AuthInfo=cred_expire=5: a requeued job may start again only after the launch credential of
    its previous attempt has expired (slurmctld sets its begin time to now + cred_expire + 1;
    the default window is 120 s, hence the ~2 minutes a requeued job waits on a default
    cluster). 5 s is the smallest value Slurm accepts.
  * SchedulerParameters=sched_interval=2: the main scheduler also runs every 2 s (default 60),
    so a requeued job whose begin time has passed starts without waiting for the next event.

    with SlurmCluster(tmp_dir) as cluster:
        job = cluster.sbatch(["--time=1", "script.sbatch"], cwd=work_dir)
        cluster.wait_for(job, lambda info: info["JobState"] == "COMPLETED", timeout=120)
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "scancel", "squeue", "sinfo")


class ClusterError(Exception):
    """The cluster could not start; the message says why."""


def missing_tools():
    """Names of the programs this cluster needs that are not installed."""
    tools = [t for t in DAEMONS + CLIENTS + ("setpriv",) if shutil.which(t) is None]
    try:
        pwd.getpwnam("munge")
    except KeyError:
        tools.append("the user 'munge' (package munge)")
    return tools


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


class SlurmCluster:
    def __init__(self, root, cpus=None):
        self.root = root
        self.node = socket.gethostname().split(".")[0]
        self.cpus = cpus or max(2, os.cpu_count() or 1)
        self.conf = os.path.join(root, "slurm.conf")
        self.munge_dir = os.path.join(root, "munge")
        self.socket = os.path.join(self.munge_dir, "munge.socket.2")
        self.logs = os.path.join(root, "log")
        self.jobcomp = os.path.join(self.logs, "jobcomp.log")
        self.procs = {}  # daemon name -> Popen, in start order
        # Client commands: this cluster only, never an outer job's or the machine's Slurm.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        self.env["SLURM_CONF"] = self.conf

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    # --- start and stop --------------------------------------------------------------------

    def start(self):
        if os.geteuid() != 0:
            raise ClusterError("slurmd must run as root to start jobs (it switches to the job's user); "
                               f"this test runs as uid {os.geteuid()}")
        missing = missing_tools()
        if missing:
            raise ClusterError(f"not installed: {', '.join(missing)} (scripts/setup.sh installs slurm-wlm and munge)")
        # munged refuses sockets in directories that others cannot enter, and a key that others
        # can read: the root becomes 0755, the key 0400 owned by munge.
        os.chmod(self.root, 0o755)
        parent = os.path.dirname(os.path.abspath(self.root))
        while parent != "/":
            if not os.stat(parent).st_mode & 0o001:
                raise ClusterError(f"munged (user munge) cannot enter {parent} (mode "
                                   f"{oct(os.stat(parent).st_mode & 0o777)}): put the cluster elsewhere")
            parent = os.path.dirname(parent)
        for d in ("state", "spool", "log", "munge"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        munge = pwd.getpwnam("munge")
        key = os.path.join(self.munge_dir, "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        os.chown(key, munge.pw_uid, munge.pw_gid)
        os.chmod(key, 0o400)
        self._write_config()

        self._spawn("munged", ["setpriv", f"--reuid={munge.pw_uid}", f"--regid={munge.pw_gid}", "--init-groups",
                               "munged", "-F", f"--socket={self.socket}", f"--key-file={key}",
                               f"--pid-file={self.munge_dir}/munged.pid", f"--log-file={self.munge_dir}/munged.log",
                               f"--seed-file={self.munge_dir}/munged.seed"])
        self._wait("munged", lambda: os.path.exists(self.socket), 15, f"{self.munge_dir}/munged.log")
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", self.conf])
        self._wait("slurmctld", lambda: self._run(["scontrol", "ping"]).returncode == 0, 30,
                   f"{self.logs}/slurmctld.log")
        self._spawn("slurmd", ["slurmd", "-D", "-f", self.conf, "-N", self.node])
        self._wait("slurmd", lambda: self.node_state() in ("idle", "mixed", "allocated"), 30,
                   f"{self.logs}/slurmd.log")
        # The end-to-end check that a step can start (the daemons up is not enough).
        p = self._run(["srun", "-n", "1", "-t", "1", "true"], timeout=60)
        if p.returncode != 0:
            raise ClusterError(f"srun -n 1 true failed (exit {p.returncode}): {p.stderr.strip()}\n"
                               f"slurmd log:\n{_tail(os.path.join(self.logs, 'slurmd.log'))}")

    def stop(self):
        """Cancels what still runs, then stops every daemon by its PID (SIGTERM, then SIGKILL)."""
        if "slurmd" in self.procs and self.procs["slurmd"].poll() is None and self.job_ids():
            self._run(["scancel", "--full"] + self.job_ids(), timeout=30)
            deadline = time.time() + 60
            while self.job_ids() and time.time() < deadline:
                time.sleep(1)
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()

    def _write_config(self):
        r = self.root
        conf = f"""# A one-node test cluster (tests/slurm/slurm_cluster.py).
ClusterName=tessera-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={self.socket},cred_expire=5
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={self.logs}/slurmctld.log
SlurmdLogFile={self.logs}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=2
JobRequeue=1
MpiDefault=none
ReturnToService=2
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN
PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.conf, "w") as f:
            f.write(conf)
        # Slurm 22.05 has no "disabled" cgroup plugin; autodetect is harmless with task/none.
        with open(os.path.join(r, "cgroup.conf"), "w") as f:
            f.write("CgroupPlugin=autodetect\n")

    def _spawn(self, name, argv):
        out = open(os.path.join(self.logs, f"{name}.out"), "w")
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env, cwd=self.root)

    def _wait(self, name, ready, timeout, log):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.procs[name].poll() is not None:
                raise ClusterError(f"{name} exited with {self.procs[name].returncode} at start-up:\n"
                                   f"{_tail(os.path.join(self.logs, name + '.out'))}{_tail(log)}")
            if ready():
                return
            time.sleep(0.3)
        raise ClusterError(f"{name} not ready after {timeout} s:\n{_tail(log)}")

    # --- clients ---------------------------------------------------------------------------

    def _run(self, argv, timeout=60, **kwargs):
        return subprocess.run(argv, capture_output=True, text=True, env=kwargs.pop("env", self.env),
                              timeout=timeout, **kwargs)

    def run(self, argv, timeout=60, env=None, cwd=None):
        """Runs a Slurm client command against this cluster; `env` adds variables."""
        return self._run(argv, timeout=timeout, env=dict(self.env, **(env or {})), cwd=cwd)

    def node_state(self):
        p = self._run(["sinfo", "-h", "-N", "-o", "%T"])
        return p.stdout.strip().rstrip("*~#") if p.returncode == 0 else ""

    def job_ids(self):
        p = self._run(["squeue", "-h", "-o", "%i"])
        return p.stdout.split() if p.returncode == 0 else []

    def sbatch(self, argv, cwd, env=None):
        p = self.run(["sbatch", "--parsable"] + argv, env=env, cwd=cwd)
        if p.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(argv)} failed: {p.stderr.strip()}")
        return p.stdout.strip().split(";")[0]

    def job(self, job_id):
        """scontrol's fields of the job ({} once Slurm has forgotten it)."""
        p = self._run(["scontrol", "-o", "show", "job", job_id])
        if p.returncode != 0:
            return {}
        info = {}
        for item in p.stdout.split():
            key, _, value = item.partition("=")
            info.setdefault(key, value)
        return info

    def wait_for(self, job_id, done, timeout, poll=0.5):
        """Polls the job until done(info) holds; returns the info, or None after `timeout` s."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.job(job_id)
            if info and done(info):
                return info
            time.sleep(poll)
        return None

    def jobcomp_records(self, job_id):
        """The job's completion records (one per attempt that ended), as dicts of their fields."""
        records = []
        if os.path.exists(self.jobcomp):
            for line in open(self.jobcomp):
                fields = dict(item.partition("=")[::2] for item in line.split())
                if fields.get("JobId") == job_id:
                    records.append(fields)
        return records

    def log(self, name, lines=40):
        return _tail(os.path.join(self.logs, name), lines)
