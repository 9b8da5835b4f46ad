"""The fork server (harness.run.forkserver): what isolation a forked worker keeps, and that the
server survives its workers' crashes and is started again when it dies.

Each test runs real processes: a server that imported torch and the harness, forking
``tests.forkserver_probe`` (a worker module that reports what it sees and then leaks state).
The fault tests of the real worker through the server are tests/run/test_faults.py and
tests/run/test_runner.py (raise, OOM, segfault, hang, Ctrl-C, kill -9, resume).
"""
import json
import os
import signal
import time
from pathlib import Path

import pytest

from harness.run import forkserver

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with forkserver.ForkServer(run_dir, module="tests.forkserver_probe", env=env) as started:
        yield started


def probe(server, tmp_path, name: str, *extra: str, wait: bool = True, **env):
    work = tmp_path / name
    work.mkdir()
    worker_env = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    proc = server.start([str(work / "out.json"), *extra], env=worker_env, cwd=work,
                        log=work / "worker.log")
    if not wait:
        return proc, work
    rc = proc.wait(timeout=120)
    seen = json.loads((work / "out.json").read_text()) if (work / "out.json").exists() else None
    return rc, seen, work


def test_a_worker_sees_its_own_request_and_not_the_last_workers_leaks(server, tmp_path):
    rc, first, work = probe(server, tmp_path, "a", PROBE_ENV="first")
    assert rc == 0 and first["leak_seen"] is None
    rc, second, _ = probe(server, tmp_path, "b", PROBE_ENV="second")
    assert rc == 0
    assert second["leak_seen"] is None  # the first worker's global died with it
    assert second["threads"] == first["threads"] != 1  # so did its torch.set_num_threads(1)
    assert second["torch_seed"] == first["torch_seed"] != 1234  # and its torch.manual_seed
    assert second["random"] != first["random"]  # Python's random is reseeded in every child
    assert not first["cuda_initialized"] and not second["cuda_initialized"]
    assert first["own_group"] and second["own_group"]  # a session each: kill_group reaches it
    assert first["ppid"] == second["ppid"] == server.proc.pid != first["pid"]
    assert (first["probe_env"], second["probe_env"]) == ("first", "second")
    assert first["cwd"] == str(work) and first["argv"] == [str(work / "out.json")]
    assert (work / "worker.log").read_text() == "probe stdout\nprobe stderr\n"


def test_a_crashing_worker_kills_only_itself(server, tmp_path):
    before = server.proc.pid
    rc, seen, work = probe(server, tmp_path, "segv", "segv")
    assert rc == -signal.SIGSEGV and seen is None
    assert "probe stdout" in (work / "worker.log").read_text()
    rc, seen, _ = probe(server, tmp_path, "after")
    assert rc == 0 and seen["leak_seen"] is None and server.proc.pid == before


def test_a_dead_server_takes_its_running_worker_and_is_started_again(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with forkserver.ForkServer(tmp_path / "run", module="tests.forkserver_probe", env=env) as server:
        proc, work = probe(server, tmp_path, "sleeper", "sleep", wait=False)
        old = server.proc.pid
        deadline = time.monotonic() + 60
        while "probe stdout" not in read(work / "worker.log") and time.monotonic() < deadline:
            time.sleep(0.05)  # the worker prints before it sleeps: wait until it runs
        assert "probe stdout" in read(work / "worker.log")
        os.kill(old, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL and proc.lost
        deadline = time.monotonic() + 10
        while not dead(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # PDEATHSIG: the worker died with its server
        assert dead(proc.pid)
        rc, seen, _ = probe(server, tmp_path, "next")
        assert rc == 0 and server.restarts == 1 and server.proc.pid != old


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def dead(pid: int) -> bool:
    """Gone, or a zombie (killed, and nothing reaps it: pytest as PID 1 in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_a_forked_worker_keeps_none_of_its_parents_signal_handlers(tmp_path):
    # a Slurm job's process has submitit's SIGUSR2 handler; its forked worker must not run it
    sigs = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *a: None) for sig in sigs}
    try:
        work = tmp_path / "w"
        work.mkdir()
        child = forkserver.DirectFork(module="tests.forkserver_probe").start(
            [str(work / "out.json")], env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=work,
            log=work / "worker.log")
        assert child.wait(timeout=120) == 0, (work / "worker.log").read_text()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert json.loads((work / "out.json").read_text())["handled"] == []


def test_a_server_that_cannot_start_is_one_user_error_line(tmp_path, capsys):
    import typer

    from harness.cli.user_errors import user_errors

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with forkserver.ForkServer(tmp_path / "run", module="tests.no_such_worker", env=env) as server:
        with pytest.raises(forkserver.ServerError) as err:
            server.start([str(tmp_path / "out.json")], env=env, cwd=tmp_path, log=tmp_path / "log")
    said = str(err.value)
    assert "\n" not in said and said.startswith("the fork server did not start: ")
    assert "No module named 'tests.no_such_worker'" in said
    with pytest.raises(typer.Exit) as done, user_errors():
        raise err.value
    assert done.value.exit_code == 2
    assert capsys.readouterr().err == f"error: {said}\n"
