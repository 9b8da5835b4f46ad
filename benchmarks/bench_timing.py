"""tbench's timing vs torch.utils.benchmark on the same fixed operation, in one process.

    python benchmarks/bench_timing.py [--device cpu|cuda] [--size 512] [--rounds 3]

Both time ``a @ b`` (fp32, size x size). The rounds alternate the two timers so drift of the
machine (other processes, clocks) hits both alike; each side's median over its rounds is
compared. torch.utils.benchmark reports the median of BLOCK MEANS (many calls per block), tbench
the median of single calls: on an oversubscribed CPU (load above the core count) a short op is
often preempted, the per-call distribution turns bimodal and the two medians part ways; use an op
of tens of ms (``--size 1024``) there. Prints both medians (ms) and their ratio; exit code 1 if they differ by more than 5%.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.utils.benchmark as tub

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.measure import timing  # noqa: E402
from harness.records import stats  # noqa: E402

TOLERANCE = 0.05


def tbench_median_ms(fn, device: str) -> float:
    spec = SimpleNamespace(warmup_iters=10, warmup_s=0.2, min_samples=30, min_time_s=1.0,
                           max_samples=10_000)
    return stats.median(timing.measure(fn, device, spec).samples_ms)


def torch_median_ms(fn) -> float:
    # Timer defaults to num_threads=1; give it the threads tbench's run uses, or the two would
    # time different work
    m = tub.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = m.blocked_autorange(min_run_time=1.0)
    return m.median * 1e3


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for both")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    a = torch.randn(args.size, args.size, device=args.device)
    b = torch.randn(args.size, args.size, device=args.device)
    fn = lambda: torch.mm(a, b)  # noqa: E731
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(tbench_median_ms(fn, args.device))
        theirs.append(torch_median_ms(fn))
    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    ratio = m_ours / m_theirs
    print(f"op: mm {args.size}x{args.size} fp32 on {args.device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"tbench median        {m_ours:9.4f} ms   rounds {[round(x, 4) for x in ours]}")
    print(f"torch.utils.benchmark {m_theirs:9.4f} ms   rounds {[round(x, 4) for x in theirs]}")
    print(f"ratio tbench / torch  {ratio:.4f}  ({'within' if abs(ratio - 1) <= TOLERANCE else 'OUTSIDE'} "
          f"{TOLERANCE:.0%})")
    return 0 if abs(ratio - 1) <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
