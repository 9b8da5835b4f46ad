"""Run by tests/run/test_forkserver.py as a fork server's worker module: ``python -m
tests.forkserver_probe OUT_JSON [segv|sleep]``. Reports what a worker sees, then leaks state into
modules the server preloaded, so the next worker can show it does not inherit it."""
import json
import os
import random
import signal
import sys
import time

import torch

import harness.measure.measurement as measurement


def main() -> None:
    out, mode = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
    print("probe stdout", flush=True)
    print("probe stderr", file=sys.stderr, flush=True)
    if mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if mode == "sleep":
        time.sleep(600)
    seen = {"leak_seen": getattr(measurement, "LEAKED_BY_A_POINT", None),
            "threads": torch.get_num_threads(), "random": random.random(),
            "torch_seed": torch.initial_seed(), "cuda_initialized": torch.cuda.is_initialized(),
            "own_group": os.getpgrp() == os.getpid(), "cwd": os.getcwd(),
            "probe_env": os.environ.get("PROBE_ENV"), "argv": sys.argv[1:], "pid": os.getpid(),
            "ppid": os.getppid(),
            "handled": [s.name for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
                        if signal.getsignal(s) is not signal.SIG_DFL]}
    measurement.LEAKED_BY_A_POINT = os.getpid()  # a point that leaks a global...
    torch.set_num_threads(1)  # ...and changes torch's state
    torch.manual_seed(1234)
    with open(out, "w") as f:
        json.dump(seen, f)


if __name__ == "__main__":  # the server imports this module too, to preload it
    main()
