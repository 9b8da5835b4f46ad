"""Warm worker starts: a fork server that imported torch and the harness once, per run.

    with ForkServer(run_dir) as server:     # the server starts with the first worker, or .spawn()
        proc = server.start([POINT_JSON, RESULT_JSON], env=env, cwd=work_dir, log=worker_log)
        proc.pid; proc.wait(timeout_s) -> exit code (-N: killed by signal N)   # like Popen

The server is ``python -m harness.run.forkserver SOCKET_DIR RUN_DIR MODULE`` (its command line,
which every forked worker inherits, names the run folder and the module its workers run). It
imports ``PRELOAD`` (torch, numpy, the model code, the measuring harness) and then only waits on
a Unix socket in a private 0700 folder. Each request forks one worker, which runs exactly what
``python -m MODULE ARGS`` runs in a fresh process (``runpy``, ``__name__ == "__main__"``), in a
new session (its own process group, so ``kill_group`` reaches it and nothing else), with the
request's environment, working folder and ``worker.log`` as stdout and stderr; it ends with
``os._exit`` (no interpreter shutdown: the worker's result is already fsync'ed).

What isolation holds (tests/test_forkserver.py checks each):
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

Lifetime: the server dies with the runner (PR_SET_PDEATHSIG when started from the main thread,
and a pidfd on ``TBENCH_RUNNER_PID`` in its loop); each worker dies with the server
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

# what every worker imports (found by diffing sys.modules around a worker's run): imported
# once here, a forked worker finds them loaded; importing initialises no device
PRELOAD = ("numpy", "numpy.random", "torch", "implementations.registry", "implementations.ops",
           "implementations.memory", "harness.measure.measurement", "harness.measure.budget",
           "harness.measure.worker", "harness.suite.point")
WORKER_MODULE = "harness.measure.worker"
READY_TIMEOUT_S = 300.0  # importing torch on a loaded 2-core machine can take tens of seconds


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


class ForkedWorker:
    """One forked worker, seen from the runner: ``pid`` and ``wait`` like ``subprocess.Popen``."""

    def __init__(self, conn: socket.socket, pid: int):
        self.conn, self.pid = conn, pid
        self.returncode: int | None = None
        self.lost = False  # the server died before it could report the exit
        self._buf = b""

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"forked worker {self.pid}", timeout)
            ready, _, _ = select.select([self.conn], [], [], left)
            if not ready:
                continue
            chunk = self.conn.recv(4096)
            if not chunk:  # the server is gone; its PDEATHSIG killed this worker
                self.lost, self.returncode = True, -int(signal.SIGKILL)
                self.conn.close()
                return self.returncode
            self._buf += chunk
        self.returncode = int(json.loads(self._buf.split(b"\n", 1)[0])["rc"])
        self.conn.close()
        return self.returncode


class ForkServer:
    """The runner's handle on one fork server (see the module docstring). Thread-safe ``start``."""

    def __init__(self, run_dir, module: str = WORKER_MODULE, env: dict[str, str] | None = None):
        self.run_dir, self.module = Path(run_dir), module
        self.env = dict(os.environ if env is None else env)
        self.env[RUNNER_PID_ENV] = str(os.getpid())
        root = str(Path(__file__).resolve().parents[2])  # the server imports the harness from here
        self.env["PYTHONPATH"] = root + os.pathsep + self.env.get("PYTHONPATH", "")
        self.folder = Path(tempfile.mkdtemp(prefix="tbench-fs-"))  # 0700: only we may connect
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
                [sys.executable, "-m", "harness.run.forkserver", str(self.folder), str(self.run_dir),
                 self.module, str(ready_w)], env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, pass_fds=(ready_w,), start_new_session=True,
                preexec_fn=pdeathsig_hook() if main_thread else None)
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
        """Fork one worker running ``python -m MODULE *argv`` (see the module docstring)."""
        with self._lock:
            if self.proc is None:  # the first worker: start the server now
                self._spawn()
            self._await_ready()
            if not self.alive():
                self.restarts += 1
                notice = (f"tbench: the fork server died (exit {self.proc.returncode}); starting it "
                          "again")
                print(notice, file=sys.stderr, flush=True)
                with contextlib.suppress(OSError), open(self.log_path, "a") as server_log:
                    server_log.write(notice + "\n")  # RUN_DIR/forkserver.log keeps it too
                self._spawn()
                self._await_ready()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(self.socket_path))
        request = {"argv": [str(a) for a in argv], "env": env, "cwd": str(cwd), "log": str(log)}
        conn.sendall(json.dumps(request).encode() + b"\n")
        reply = b""
        while b"\n" not in reply:
            chunk = conn.recv(4096)
            if not chunk:
                conn.close()
                raise ServerError(f"the fork server refused to fork: {last_line(self.log_path)}")
            reply += chunk
        head, rest = reply.split(b"\n", 1)
        worker = ForkedWorker(conn, int(json.loads(head)["pid"]))
        worker._buf = rest
        return worker

    def close(self, grace_s: float = 2.0) -> None:
        """Stop the server (its workers, if any were left, die with it) and remove its socket."""
        if self._ready_r is not None:
            os.close(self._ready_r)
            self._ready_r = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size and self.run_dir.is_dir():
                shutil.copyfile(self.log_path, self.run_dir / "forkserver.log")
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


# --- the server process -------------------------------------------------------------------

def cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def run_child(module: str, request: dict) -> None:
    """In the forked child: become the worker the request describes, then ``os._exit``."""
    rc = 1
    try:
        parent = os.getppid()
        os.setsid()
        hook = pdeathsig_hook()
        if hook is not None:
            hook()  # die with the server
            if os.getppid() != parent:  # it died before the hook was armed: die now
                os._exit(1)
        # every handler the server (or submitit in a Slurm job: SIGUSR2) installed goes back to
        # the default; what is ignored (SIGPIPE, as in any Python process) stays ignored
        for sig in signal.valid_signals():
            with contextlib.suppress(OSError, ValueError):
                if callable(signal.getsignal(sig)):
                    signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, 1 << 16)  # the listener, other clients' sockets, the wake-up pipe
        # a fresh process's sys.stdout / sys.stderr on fds 1 and 2 (not the parent's objects: they
        # may hold its unflushed output, or wrap an fd just closed, as under pytest's capture)
        sys.stdout = sys.__stdout__ = open(1, "w", closefd=False)
        sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [module, *request["argv"]]
        import runpy

        sys.modules.pop(module, None)  # runpy runs it afresh as __main__ (no double-import warning)
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            rc = 0
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 -- a worker's crash is reported by its exit code
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(rc)


def serve(folder: str, module: str, ready_fd: int) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    importlib.import_module(module)
    if cuda_initialized():
        raise SystemExit("fork server: importing the preload initialised CUDA; refusing to fork")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(folder, "s"))
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *a: None)
    runner = os.environ.get(RUNNER_PID_ENV)
    try:
        runner_fd = os.pidfd_open(int(runner)) if runner and runner.isdigit() else None
    except (AttributeError, OSError):
        runner_fd = None
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    clients: dict[int, socket.socket] = {}
    watched = [listener, wake_r] + ([runner_fd] if runner_fd is not None else [])
    while True:
        ready, _, _ = select.select(watched, [], [], 5.0)
        if runner_fd is not None and runner_fd in ready:  # the runner is gone (kill -9?)
            shutil.rmtree(folder, ignore_errors=True)  # what its close() would have removed
            os._exit(0)  # workers die with us
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        reap(clients)
        if listener in ready:
            conn, _ = listener.accept()
            fork_one(conn, module, clients)


def read_request(conn: socket.socket) -> dict:
    conn.settimeout(30.0)
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the client closed before its request was complete")
        data += chunk
    return json.loads(data.split(b"\n", 1)[0])


def fork_one(conn, module, clients) -> None:
    try:
        request = read_request(conn)
    except (OSError, ValueError) as exc:
        print(f"fork server: bad request: {exc}", file=sys.stderr, flush=True)
        conn.close()
        return
    if cuda_initialized():  # never: but a worker must not inherit a CUDA context
        print("fork server: CUDA is initialised here; refusing to fork", file=sys.stderr, flush=True)
        conn.close()
        os._exit(3)
    pid = os.fork()
    if pid == 0:
        run_child(module, request)
    clients[pid] = conn
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")


def reap(clients: dict[int, socket.socket]) -> None:
    """Collect every exited child and tell its client the exit code (-N: signal N)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = clients.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"rc": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
            conn.close()


def main(argv: list[str]) -> None:
    folder, _run_dir, module, ready_fd = argv  # the run folder only names the server in ps
    serve(folder, module, int(ready_fd))


if __name__ == "__main__":
    main(sys.argv[1:])
