"""A real single-node Slurm cluster for the tests: munged, MariaDB + slurmdbd (accounting),
slurmctld and slurmd, each started here with a slurm.conf generated in a fresh folder.

    with SlurmCluster(tmp_dir) as cluster:   # env: SLURM_CONF (and PATH) to run sbatch & co
        ...
    why_not() -> str | None     why a cluster cannot start here (missing packages, not root)

Accounting is on because submitit reads job states from ``sacct``: without it every state
reads UNKNOWN (TIMEOUT could not become ``timeout``) and results come back slower.
Teardown: cancel every job, wait for an empty queue, then stop slurmd, slurmctld, slurmdbd,
mariadbd and munged in that order, by pid, SIGKILL after a few seconds (a slurmctld stopped
while a step still ends left slurmstepd retrying and slurmd ignoring SIGTERM).
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NEEDED = ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "mariadb-install-db", "sbatch",
          "sacct", "sacctmgr")
CLUSTER = "tbench"


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "the Slurm test cluster needs root (its daemons run as root and munge)"
    missing = [b for b in NEEDED if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing); bash install.sh --test "
                "installs Debian's slurmctld slurmd slurm-client munge slurmdbd mariadb-server")
    for user in ("munge", "mysql"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"no '{user}' user (the munge / mariadb-server packages create it)"
    return None


def binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def wait_for(check, timeout_s: float, every_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return check()


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: dict[str, subprocess.Popen] = {}
        self.pids: dict[str, int] = {}
        self.node = socket.gethostname().split(".")[0]
        self.env = dict(os.environ, SLURM_CONF=str(self.root / "slurm.conf"))
        self.env["PATH"] = "/usr/sbin:/usr/bin:" + self.env.get("PATH", "")

    # --- start ------------------------------------------------------------------------------
    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> str:
        done = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def start(self) -> None:
        os.chmod(self.root, 0o755)  # mysql must reach its folders (parents: world-traversable)
        for sub in ("state", "spool", "log", "run", "db"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.start_munge()
        self.start_mariadb()
        self.write_conf()
        self.daemon("slurmdbd", [binary("slurmdbd"), "-D"])
        if not wait_for(self.dbd_ready, 30, 0.2):
            raise RuntimeError(f"slurmdbd did not answer; {self.log('slurmdbd')}")
        self.daemon("slurmctld", [binary("slurmctld"), "-D", "-i"])
        if not wait_for(lambda: self.run("sacctmgr", "-i", "add", "cluster", CLUSTER,
                                         check=False) is not None and self.cluster_known(), 30, 0.3):
            raise RuntimeError(f"sacctmgr could not add the cluster; {self.log('slurmctld')}")
        self.daemon("slurmd", [binary("slurmd"), "-D"])
        if not wait_for(lambda: self.run("sinfo", "-h", "-o", "%T", check=False).strip() == "idle",
                        30, 0.2):
            raise RuntimeError(f"the node never became idle; {self.log('slurmd')}")

    def cluster_known(self) -> bool:
        return CLUSTER in self.run("sacctmgr", "-n", "-P", "list", "cluster", "format=cluster",
                                   check=False)

    def dbd_ready(self) -> bool:
        return self.procs["slurmdbd"].poll() is None and "slurmdbd version" in self.log("slurmdbd")

    def log(self, name: str) -> str:
        path = self.root / "log" / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def daemon(self, name: str, cmd: list[str], user: str | None = None) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            user=user)
        self.pids[name] = self.procs[name].pid

    def start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        for folder in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
            os.makedirs(folder, exist_ok=True)
            os.chown(folder, munge.pw_uid, munge.pw_gid)
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
            os.chown("/etc/munge/munge.key", munge.pw_uid, munge.pw_gid)
        # munged daemonises; its pid file lives in /run/munge, a folder it may write
        subprocess.run(["runuser", "-u", "munge", "--", binary("munged"), "--force"], check=True,
                       capture_output=True, timeout=30)
        if not wait_for(lambda: Path("/run/munge/munged.pid").exists(), 10):
            raise RuntimeError("munged did not start")
        self.pids["munged"] = int(Path("/run/munge/munged.pid").read_text().split()[0])
        check = subprocess.run("munge -n | unmunge", shell=True, capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"munge does not work: {check.stderr.strip()}")

    def start_mariadb(self) -> None:
        mysql = pwd.getpwnam("mysql")
        run = Path("/run/mysqld")  # slurmdbd 22.05 only knows the default socket path
        run.mkdir(exist_ok=True)
        for folder in (self.root / "db", run):
            os.chown(folder, mysql.pw_uid, mysql.pw_gid)
        subprocess.run([binary("mariadb-install-db"), "--user=mysql", f"--datadir={self.root / 'db'}",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        sock = run / "mysqld.sock"
        if sock.exists():
            raise RuntimeError(f"{sock} exists: another MariaDB server runs here")
        self.daemon("mariadbd", [binary("mariadbd"), "--user=mysql", f"--datadir={self.root / 'db'}",
                                 "--skip-networking", f"--socket={sock}",
                                 f"--pid-file={run / 'mysqld.pid'}",
                                 "--innodb-buffer-pool-size=32M"])
        if not wait_for(sock.exists, 60, 0.1):
            raise RuntimeError("mariadbd did not start; see " + str(self.root / "log" / "mariadbd.out"))
        sql = ("CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';"
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;")
        ok = wait_for(lambda: subprocess.run(["mariadb", f"--socket={sock}", "-uroot", "-e", sql],
                                             capture_output=True).returncode == 0, 30, 0.3)
        if not ok:
            raise RuntimeError("could not create the slurm database user")

    def write_conf(self) -> None:
        r, cpus = self.root, os.cpu_count() or 1
        mem_mb = max(512, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024)
        (r / "slurm.conf").write_text(f"""ClusterName={CLUSTER}
SlurmctldHost={self.node}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=16819
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=2
MinJobAge=300
EnforcePartLimits=ALL
NodeName={self.node} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        dbd = r / "slurmdbd.conf"
        dbd.write_text(f"""AuthType=auth/munge
DbdHost=localhost
DbdPort=16819
SlurmUser=root
LogFile={r}/log/slurmdbd.log
PidFile={r}/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurm
""")
        os.chmod(dbd, 0o600)

    # --- stop -------------------------------------------------------------------------------
    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "-u", "root", check=False)
            wait_for(lambda: not self.run("squeue", "-h", check=False).strip(), 20, 0.3)
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            pid = self.pids.get(name)
            if pid is not None:
                stop_pid(pid, self.procs.get(name))
        for pid in self.leftovers():  # job steps (slurmstepd, srun) outliving a cancelled job
            stop_pid(pid, None, grace_s=1.0)

    def leftovers(self) -> list[int]:
        """Processes started by this cluster that are still alive: those whose environment
        holds this cluster's ``SLURM_CONF`` (slurmstepd inherits it from slurmd, job steps from
        slurmstepd). Never another cluster's processes, nor this test process."""
        mark = f"SLURM_CONF={self.env['SLURM_CONF']}".encode() + b"\0"
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if mark in (entry / "environ").read_bytes() + b"\0":
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def queue(self) -> list[str]:
        return [line for line in self.run("squeue", "-h", "-o", "%i %T", check=False).splitlines()
                if line.strip()]


def stop_pid(pid: int, proc: subprocess.Popen | None, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; reaped when it is our child."""
    def gone() -> bool:
        if proc is not None:
            return proc.poll() is not None
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not wait_for(gone, grace_s, 0.05):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_for(gone, 5.0, 0.05)
