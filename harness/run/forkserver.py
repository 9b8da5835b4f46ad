"""Warm worker starts: a fork server that imported torch and the harness once, per run.

    with ForkServer(run_dir) as server:     # the server starts with the first worker, or .spawn()
        proc = server.start([POINT_JSON, RESULT_JSON], env=env, cwd=work_dir, log=worker_log)
        proc.pid; proc.wait(timeout_s) -> exit code (-N: killed by signal N)   # like Popen

The server is ``python -m harness.run.forkserver_process SOCKET_DIR RUN_DIR MODULE`` (its command
line, which every forked worker inherits, names the run folder and the module its workers run). It
imports ``PRELOAD`` (torch, numpy, the model code, the measuring harness) and then only waits on
a Unix socket in a private 0700 folder. Each request forks one worker, which runs exactly what
``python -m MODULE ARGS`` runs in a fresh process (``runpy``, ``__name__ == "__main__"``), in a
new session (its own process group, so ``kill_group`` reaches it and nothing else), with the
request's environment, working folder and ``worker.log`` as stdout and stderr; it ends with
``os._exit`` (no interpreter shutdown: the worker's result is already fsync'ed).

What isolation holds (tests/run/test_forkserver.py checks each):
  * every worker is a process of its own: a crash, OOM, hang or timeout kills only it (the
    runner kills its group, as for a fresh process); memory, allocator and globals it changes
    are its own copy-on-write pages -- the next worker starts from the server's untouched state;
  * CUDA is never initialised in the server (checked before every fork; the server refuses to
    fork otherwise), so each worker creates its own CUDA context on the devices its
    ``CUDA_VISIBLE_DEVICES`` (from the request's environment) shows;
  * RNG: Python's ``random`` is reseeded in every child (CPython's at-fork hook) and the worker
    seeds random, numpy and torch from the point's seed before anything else, as a fresh process
    does; no draw happens in the server;
  * environment variables, working folder and arguments are the request's, not the server's;
    every signal handler the parent installed (SIGTERM, SIGCHLD, SIGUSR1/2 -- submitit's in a
    Slurm job) is back to the default, and ``sys.stdout``/``sys.stderr`` are new, on fds 1/2.
What a fork does not give: the server's imports are shared (a module torch would read an
environment variable from at import time reads the server's; ``worker_env`` sets them alike).

Lifetime: the server dies with the runner (PR_SET_PDEATHSIG -- SIGTERM, on which it removes its
folder before exiting -- when started from the main thread, and a pidfd on ``TBENCH_RUNNER_PID``
in its loop); a folder left anyway (the server killed with the runner) is swept by the next
``ForkServer`` once its runner's pid is gone; each worker dies with the server
(PR_SET_PDEATHSIG; a child whose server died before that was set exits at once) and with the
runner (``harness.measure.lifeline.guard``, as before). A server found dead is started again
on the next ``start`` (``restarts`` counts; the notice goes to stderr and to forkserver.log); a
worker whose server died while it ran reads as killed by SIGKILL (what its PDEATHSIG did) with ``lost`` set.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness.measure.lifeline import RUNNER_PID_ENV, pdeathsig_hook
from harness.run.forkserver_process import PRELOAD, WORKER_MODULE, cuda_initialized, run_child

READY_TIMEOUT_S = 300.0  # importing torch on a loaded 2-core machine can take tens of seconds
REQUEST_TIMEOUT_S = 60.0  # a fork is milliseconds; a server silent this long is frozen
REPORT_GRACE_S = 2.0  # how long a worker's exit may go unreported before its server is frozen
FOLDER_PREFIX = "tbench-fs-"  # tbench-fs-<runner pid>-<random>: a dead runner's is swept


class ServerError(RuntimeError):
    """The fork server could not be started, or refused to fork: one line (``tbench run``
    prints it as its ``error:`` line, exit 2; the server's whole log: RUN_DIR/forkserver.log)."""


def last_line(path: Path) -> str:
    """The last non-empty line of the server's log (what went wrong), or a note that it is empty."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    return lines[-1] if lines else "(its log is empty)"


class ServerTimeout(ServerError):
    """The fork server did not answer a request in time (stopped, wedged): it is killed, and the
    next worker starts a new one."""


class ForkedWorker:
    """One forked worker, seen from the runner: ``pid`` and ``wait`` like ``subprocess.Popen``.

    It waits on the server's report of the exit code and on the worker itself (a pidfd): a
    worker that ended while its server could not report it (a stopped server cannot reap) is
    done all the same -- its result file says how it went -- and the server is killed as
    frozen (``unreported``; the next worker starts a new one)."""

    def __init__(self, conn: socket.socket, pid: int, server: "ForkServer | None" = None):
        self.conn, self.pid, self.server = conn, pid, server
        self.returncode: int | None = None
        self.lost = False  # the server died before it could report the exit
        self.unreported = False  # the worker ended, its frozen server never said how
        self._buf = b""
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):  # gone already, or no pidfd: the server's report only
            self._pidfd = None

    def _done(self, rc: int) -> int:
        self.returncode = rc
        self.conn.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return rc

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        exited_at = None
        while b"\n" not in self._buf:
            left = None if deadline is None else deadline - time.monotonic()
            if exited_at is not None:  # the worker is gone: give its server a moment to say so
                grace = REPORT_GRACE_S - (time.monotonic() - exited_at)
                if grace <= 0:
                    self.unreported = True
                    if self.server is not None:
                        self.server.kill_frozen("a worker ended and the server did not report it")
                    return self._done(0)
                left = grace if left is None else min(left, grace)
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"forked worker {self.pid}", timeout)
            watched = [self.conn] + ([self._pidfd] if self._pidfd is not None and exited_at is None else [])
            ready, _, _ = select.select(watched, [], [], left)
            if self._pidfd is not None and self._pidfd in ready:
                exited_at = time.monotonic()
            if self.conn not in ready:
                continue
            chunk = self.conn.recv(4096)
            if not chunk:  # the server is gone; its PDEATHSIG killed this worker
                self.lost = True
                return self._done(-int(signal.SIGKILL))
            self._buf += chunk
        return self._done(int(json.loads(self._buf.split(b"\n", 1)[0])["rc"]))


class ForkServer:
    """The runner's handle on one fork server (see the module docstring). Thread-safe ``start``."""

    def __init__(self, run_dir, module: str = WORKER_MODULE, env: dict[str, str] | None = None):
        self.run_dir, self.module = Path(run_dir), module
        self.env = dict(os.environ if env is None else env)
        self.env[RUNNER_PID_ENV] = str(os.getpid())
        root = str(Path(__file__).resolve().parents[2])  # the server imports the harness from here
        self.env["PYTHONPATH"] = root + os.pathsep + self.env.get("PYTHONPATH", "")
        sweep_stale_folders()
        self.folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))  # 0700: ours
        self.socket_path = self.folder / "s"
        # the server's own output; copied to RUN_DIR/forkserver.log at close when not empty (the
        # run folder may not exist yet when the server starts)
        self.log_path = self.folder / "forkserver.log"
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._lock = threading.Lock()
        self._ready_r: int | None = None

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        ready_r, ready_w = os.pipe()
        main_thread = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "harness.run.forkserver_process", str(self.folder), str(self.run_dir),
                 self.module, str(ready_w)], env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, pass_fds=(ready_w,), start_new_session=True,
                preexec_fn=pdeathsig_hook(signal.SIGTERM) if main_thread else None)
        os.close(ready_w)
        self._ready_r = ready_r

    def spawn(self) -> "ForkServer":
        """Start the server now (it imports torch while this process goes on), not with the
        first worker."""
        with self._lock:
            if self.proc is None:
                self._spawn()
        return self

    def _await_ready(self) -> None:
        if self._ready_r is None:
            return
        fd, self._ready_r = self._ready_r, None
        try:
            ready, _, _ = select.select([fd], [], [], READY_TIMEOUT_S)
            line = os.read(fd, 64) if ready else b""
        finally:
            os.close(fd)
        if line.strip() != b"ready":
            raise ServerError(f"the fork server did not start: {last_line(self.log_path)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, argv: list[str], *, env: dict[str, str], cwd, log) -> ForkedWorker:
        """Fork one worker running ``python -m MODULE *argv`` (see the module docstring); a
        server that does not answer within ``REQUEST_TIMEOUT_S`` is killed (``ServerTimeout``)."""
        with self._lock:
            if self.proc is None:  # the first worker, or after a frozen one: start a server now
                self._spawn()
            self._await_ready()
            if not self.alive():
                self._note(f"the fork server died (exit {self.proc.returncode}); starting it again")
                self.restarts += 1
                self._spawn()
                self._await_ready()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(REQUEST_TIMEOUT_S)
        request = {"argv": [str(a) for a in argv], "env": env, "cwd": str(cwd), "log": str(log)}
        reply = b""
        try:
            conn.connect(str(self.socket_path))
            conn.sendall(json.dumps(request).encode() + b"\n")
            while b"\n" not in reply:
                chunk = conn.recv(4096)
                if not chunk:
                    conn.close()
                    raise ServerError(f"the fork server refused to fork: {last_line(self.log_path)}")
                reply += chunk
        except (socket.timeout, TimeoutError):
            conn.close()
            self.kill_frozen(f"it did not answer a request within {REQUEST_TIMEOUT_S:g} s")
            raise ServerTimeout(f"the fork server did not answer within {REQUEST_TIMEOUT_S:g} s; "
                                "it was killed, and the next point starts a new one") from None
        conn.settimeout(None)
        head, rest = reply.split(b"\n", 1)
        worker = ForkedWorker(conn, int(json.loads(head)["pid"]), self)
        worker._buf = rest
        return worker

    def _note(self, text: str) -> None:
        notice = f"tbench: {text}"
        print(notice, file=sys.stderr, flush=True)
        with contextlib.suppress(OSError), open(self.log_path, "a") as server_log:
            server_log.write(notice + "\n")  # RUN_DIR/forkserver.log keeps it too

    def kill_frozen(self, why: str) -> None:
        """SIGKILL a server that stopped answering (SIGSTOP, a wedged import); the next
        ``start`` spawns a new one. Its running workers die with it (their PDEATHSIG)."""
        with self._lock:
            if self.proc is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10.0)
            self._note(f"the fork server was killed: {why}; the next worker starts a new one")
            self.restarts += 1
            self.proc = None

    def close(self, grace_s: float = 2.0) -> None:
        """Stop the server (its workers, if any were left, die with it) and remove its folder,
        its log first copied to RUN_DIR/forkserver.log when not empty."""
        if self._ready_r is not None:
            os.close(self._ready_r)
            self._ready_r = None
        with contextlib.suppress(OSError):  # before the server's SIGTERM removes its folder
            if self.log_path.stat().st_size and self.run_dir.is_dir():
                shutil.copyfile(self.log_path, self.run_dir / "forkserver.log")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "ForkServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DirectFork:
    """Forks workers straight from this process (a Slurm job: one point per process, no server
    to share), after importing ``PRELOAD`` here; the same child as the server's. This process
    must not have initialised CUDA (``harness.run.env`` reads GPUs through NVML only)."""

    def __init__(self, module: str = WORKER_MODULE):
        self.module = module
        for name in (*PRELOAD, module):
            importlib.import_module(name)

    def start(self, argv: list[str], *, env: dict[str, str], cwd, log) -> "DirectChild":
        if cuda_initialized():
            raise ServerError("CUDA is initialised in this process; a forked worker cannot use it")
        request = {"argv": [str(a) for a in argv], "env": env, "cwd": str(cwd), "log": str(log)}
        pid = os.fork()
        if pid == 0:
            run_child(self.module, request)
        return DirectChild(pid)


class DirectChild:
    """A worker forked by ``DirectFork``: ``pid`` and ``wait`` like ``subprocess.Popen``."""

    def __init__(self, pid: int):
        self.pid, self.returncode, self.lost = pid, None, False

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"forked worker {self.pid}", timeout)
            else:
                time.sleep(0.01)
        return self.returncode


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_folders() -> list[Path]:
    """Remove the fork-server folders of runners that are gone (``kill -9`` of ``tbench``
    leaves its server no time to clean up); the folders removed."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        pid = folder.name[len(FOLDER_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
