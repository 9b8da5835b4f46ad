"""The worker's side of a duet: two workers sampling at the same time, one per lane.

    window_s = join(step_ms)    after warm-up: "this side is ready", then wait for "go"

The runner (``harness.run.duet``) starts both workers of a duet with ``TBENCH_DUET`` naming
its rendezvous (an abstract Unix socket: no file, nothing left behind) and each one's lane: its
CPU cores (``TBENCH_CPUS``, set as the process's affinity before torch starts a thread) or its
GPU. A worker that reaches sampling connects, says it is warm (with its warm-up step time) and
waits; when both are warm -- or the other side ended without getting there -- the runner answers
with the window both sample for, from the same instant. Outside a duet ``join`` is never
called. A runner that does not answer within ``TIMEOUT_S`` leaves this side sampling alone (its
round then pairs with nothing); the point's own timeout still bounds the worker.
"""
from __future__ import annotations

import json
import os
import socket

ENV_SOCKET = "TBENCH_DUET"
ENV_CPUS = "TBENCH_CPUS"
TIMEOUT_S = 600.0


def in_duet() -> bool:
    return bool(os.environ.get(ENV_SOCKET))


def pin_cpus() -> list[int] | None:
    """Set this process's CPU affinity to ``TBENCH_CPUS`` (before torch's threads exist); the
    cores, or None when unset."""
    text = os.environ.get(ENV_CPUS)
    if not text:
        return None
    cores = sorted(int(c) for c in text.split(","))
    os.sched_setaffinity(0, cores)
    return cores


def join(step_ms: float) -> float | None:
    """Tell the runner this side is warm and wait for the common start; the window (seconds)."""
    name = os.environ[ENV_SOCKET]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(TIMEOUT_S)
    try:
        conn.connect("\0" + name)
        conn.sendall(json.dumps({"ready": True, "step_ms": step_ms}).encode() + b"\n")
        reply = b""
        while b"\n" not in reply:
            chunk = conn.recv(4096)
            if not chunk:
                return None
            reply += chunk
        return float(json.loads(reply.split(b"\n", 1)[0])["window_s"])
    except (OSError, ValueError, KeyError):
        return None
    finally:
        conn.close()
