"""DeepSpeed's JIT-compiled C++ extensions (its "ops"): built once per environment, before the
first point, never inside one.

DeepSpeed compiles a C++ op (torch.utils.cpp_extension.load, ninja) the first time a process
uses it. Measured by running ZeRO stages 0-3, with and without optimizer / parameter offload, in
fp32 and bf16, against an empty TORCH_EXTENSIONS_DIR (DeepSpeed 0.19.8, torch 2.13 CPU): a CPU
point builds one op, ``deepspeed_shm_comm`` (the shared-memory collectives that the CPU
accelerator's comm backend loads in ``deepspeed.init_distributed``), 50-165 s on two cores.
Offload builds nothing more: the point keeps the torch optimizer (``zero_force_ds_cpu_optimizer``
False), so no cpu_adam. The strategy declares its ops (``deepspeed_extensions(device)``).

Contract
    extensions_dir(environ) -> Path: where this environment's ops are built. TORCH_EXTENSIONS_DIR
        when the user set it; else ``<sys.prefix>/var/cache/tbench/torch_extensions/torch-<version>``
        (it goes with the virtualenv), or where sys.prefix is not writable
        ``<user cache>/tbench/torch_extensions/<sha1 of sys.prefix>-torch-<version>``. Never torch's
        default ~/.cache/torch_extensions, which every environment of the user shares.
    extensions_env(device, environ) -> dict: the environment plus TORCH_EXTENSIONS_DIR (and
        DS_ACCELERATOR=cpu on CPU), for the runner's ``worker_env`` and the build child.
    clear_stale_locks(root) -> [removed lock paths]; ``is_stale(lock)``.
    needed_extensions(points) -> {device: op builder names} of the points that will run.
    prepare(points, say) -> bool: the "preparing" phase of ``tbench run``. For each device, a
        child ``python -m harness.run.extensions --device D --ops ...`` clears stale locks and
        loads every op, building it where needed; ``say`` hears one line per step. False if a
        build failed (the points then fail on their own, with the compiler's error).
    ``python -m harness.run.extensions [--device cpu|cuda]``: the same child (install.sh).

Stale locks. torch serialises the builds of an op with ``<root>/<op>/lock``, created O_EXCL and
held open by the building process until it removes the file (torch.utils.file_baton.FileBaton).
Any other process polls while the file exists -- even when the op is built, because the lock
is also taken for ninja's up-to-date check -- so a process killed while holding it (a point's
timeout, SIGTERM) leaves every later one polling until its own timeout. A lock is stale when no
process has it open and none runs in the op's folder (ninja and the compilers run there and
may outlive a killed Python), as psutil reads it from /proc. It is checked twice, ``RECHECK_S`` apart, because
FileBaton closes the file just before it removes it. Not an age threshold: a build on a slow
machine takes minutes, and removing a live lock lets two builds write the same objects. Not
flock: FileBaton takes none, so a lock held by any other torch process would look free. Other
users' processes are hidden in /proc, but they cannot write into this user's folder either.
Where psutil cannot list processes, a lock older than ``NO_PROC_STALE_S`` is stale.
The runner clears stale locks before every point (``worker_env``), so a point killed while it
loaded an op does not hold up the next; a rank then waits only on a live build by another process.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Mapping

from harness.measure import workload

ROOT = Path(__file__).resolve().parents[2]
RECHECK_S = 0.2
NO_PROC_STALE_S = 3600.0
LOCK_NAME = "lock"  # torch.utils.cpp_extension._jit_compile: <build_directory>/lock


def extensions_dir(environ: Mapping[str, str] | None = None) -> Path:
    """This environment's folder of JIT-built ops (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get("TORCH_EXTENSIONS_DIR"):
        return Path(env["TORCH_EXTENSIONS_DIR"])
    torch_tag = f"torch-{metadata.version('torch')}"
    prefix = Path(sys.prefix).resolve()
    if os.access(prefix, os.W_OK):
        return prefix / "var" / "cache" / "tbench" / "torch_extensions" / torch_tag
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(prefix).encode()).hexdigest()[:12]
    return cache / "tbench" / "torch_extensions" / f"{digest}-{torch_tag}"


def extensions_env(device: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) with the extensions folder and DeepSpeed's accelerator set."""
    env = dict(os.environ if environ is None else environ)
    env["TORCH_EXTENSIONS_DIR"] = str(extensions_dir(env))
    if device == "cpu":
        env.setdefault("DS_ACCELERATOR", "cpu")  # read when deepspeed is imported
    return env


def lock_holders(lock: Path) -> set[int] | None:
    """Pids of the processes that have ``lock`` open or run in its folder (psutil); None where
    the platform cannot say (then a lock's age decides)."""
    import psutil

    folder, target = os.path.realpath(lock.parent), os.path.realpath(lock)
    holders = set()
    try:
        procs = list(psutil.process_iter(["pid"]))
    except (psutil.Error, NotImplementedError):
        return None
    for proc in procs:
        try:
            cwd = proc.cwd()
            if cwd == folder or cwd.startswith(folder + os.sep) or any(
                    f.path == target for f in proc.open_files()):
                holders.add(proc.pid)
        except (psutil.Error, OSError):  # exited meanwhile, or another user's process
            continue
    return holders


def is_stale(lock: Path) -> bool:
    """True when ``lock`` exists and no live process holds it (see the module docstring)."""
    try:
        first = lock.stat()
    except FileNotFoundError:
        return False
    holders = lock_holders(lock)
    if holders is None:
        return time.time() - first.st_mtime > NO_PROC_STALE_S
    if holders:
        return False
    time.sleep(RECHECK_S)  # a holder between close() and remove() has gone by now
    try:
        again = lock.stat()
    except FileNotFoundError:
        return False
    same = (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    return same and not lock_holders(lock)


def clear_stale_locks(root: Path) -> list[Path]:
    """Remove every stale ``<root>/<op>/lock``; the paths removed."""
    removed = []
    for lock in sorted(Path(root).glob(f"*/{LOCK_NAME}")):
        if is_stale(lock):
            lock.unlink(missing_ok=True)
            removed.append(lock)
    return removed


def needed_extensions(points) -> dict[str, tuple[str, ...]]:
    """{device: DeepSpeed extension builder names} over the points that will run (supported ones)."""
    needed: dict[str, set[str]] = {}
    for point in points:
        ops = point.strategies.parallel.deepspeed_extensions(point.device)
        if ops and not workload.unsupported_reasons(point):
            needed.setdefault(point.device, set()).update(ops)
    return {device: tuple(sorted(ops)) for device, ops in needed.items()}


def prepare(points, say: Callable[[str], None]) -> bool:
    """Build (or check) the ops the points need, each device in a child process; see the contract."""
    ok = True
    for device, ops in needed_extensions(points).items():
        env = extensions_env(device)
        say(f"preparing: DeepSpeed extensions for {device} ({', '.join(ops)}): built once per "
            "environment, a first build takes minutes")
        proc = subprocess.run([sys.executable, "-m", "harness.run.extensions", "--device", device,
                               "--ops", *ops], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            say(f"preparing: {line}")
        if proc.returncode != 0:
            ok = False
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            say(f"preparing: failed (exit {proc.returncode}: {last}); the points will try to "
                "build the ops themselves")
    return ok


def build(ops: list[str]) -> int:
    """In the child (environment from ``extensions_env``): clear stale locks, then load every op,
    building it where needed; one line each on stdout. 1 if any build failed."""
    root = Path(os.environ["TORCH_EXTENSIONS_DIR"])
    for lock in clear_stale_locks(root):
        print(f"removed the stale lock {lock} (left by a killed build)", flush=True)
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    failed = 0
    for name in ops:
        builder = get_accelerator().create_op_builder(name)
        if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
            print(f"{name}: not used here (DeepSpeed runs without it)", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            builder.load(verbose=False)
        except Exception as exc:  # noqa: BLE001 -- reported, the other ops still build
            failed += 1
            print(f"{builder.NAME}: build failed: {str(exc).strip()[-2000:]}", flush=True)
            continue
        print(f"{builder.NAME}: ready in {time.perf_counter() - t0:.1f} s", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build DeepSpeed's extensions into this environment's folder.")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--ops", nargs="*", help="op builder names [default: what a ZeRO point needs]")
    args = ap.parse_args(argv)
    os.environ.update(extensions_env(args.device))  # before deepspeed is imported
    ops = args.ops
    if ops is None:
        from implementations import registry

        ops = list(registry.create("parallel", "zero").deepspeed_extensions(args.device))
    print(f"extensions folder: {os.environ['TORCH_EXTENSIONS_DIR']}", flush=True)
    return build(ops)


if __name__ == "__main__":
    sys.exit(main())
