"""The fork server's own process: ``python -m harness.run.forkserver_process SOCKET_DIR RUN_DIR
MODULE READY_FD`` (``harness.run.forkserver`` starts it and is its client).

It imports ``PRELOAD`` (torch, numpy, the model code, the measuring harness), says "ready" on
``READY_FD`` and waits on a Unix socket in the private folder ``SOCKET_DIR``; each request forks
one child that becomes the worker the request describes (``run_child``: a new session, the
request's environment, working folder and log, default signal handlers, fresh stdio) and
runs ``python -m MODULE ARGS`` as a fresh process would (``runpy``), ending with ``os._exit``.
Each child's exit code goes back to its client (``reap``). The server refuses to fork once CUDA
is initialised in it (never, as it runs no model), and exits -- removing its folder -- when the
runner it serves is gone (a pidfd on ``TBENCH_RUNNER_PID``).
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
import sys

from harness.measure.lifeline import RUNNER_PID_ENV, pdeathsig_hook

# what every worker imports (found by diffing sys.modules around a worker's run): imported
# once here, a forked worker finds them loaded; importing initialises no device
PRELOAD = ("numpy", "numpy.random", "torch", "implementations.registry", "implementations.ops",
           "implementations.memory", "harness.measure.measurement", "harness.measure.budget",
           "harness.measure.worker", "harness.suite.point")
WORKER_MODULE = "harness.measure.worker"

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
    def leave(signum, frame) -> None:  # SIGTERM: ForkServer.close, or the runner died (PDEATHSIG)
        shutil.rmtree(folder, ignore_errors=True)
        os._exit(0)  # workers die with us

    signal.signal(signal.SIGTERM, leave)
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
