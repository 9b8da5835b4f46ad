"""The named profiler ranges cost nothing measurable when not profiling.

    python benchmarks/bench_regions.py [--preset tiny] [--kind forward] [--ops eager]
                                       [--batch 8] [--seq-len 128] [--rounds 30] [--steps 15]

Builds one point's workload as a worker does (``harness.measure.steps``) and times its step in
three variants, interleaved (``--rounds`` rounds of ``--steps`` steps each, the order of the
variants rotating between rounds):

* ``without``: the same code with every ``with region(...):`` removed (the modules' source,
  rewritten by ``ast`` and swapped in), i.e. tbench before the ranges existed;
* ``off``: the code as shipped, ranges off: what every timed sample runs;
* ``on``: ranges on, no profiler attached (``record_function`` entered; profiling only).

Prints each variant's median of round medians, and for ``off / without`` and ``on / without``
the median of the per-round ratios with its 95% CI (``harness.records.stats.median_ci``;
"within noise": the CI covers 1), the ranges one step opens, and the cost of one disabled
range over 10^6 calls (an upper bound of what the ranges add: ranges x cost). Torch runs with
``--threads`` threads (default 1: steadier when shared).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import gc
import inspect
import statistics
import sys
import time
import timeit
import types

import torch

from harness.measure import steps
from harness.records import stats
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand
from implementations import layers, model, regions
from implementations.attention import kernel
from implementations.precision import base as precision_base

STRIPPED = (layers, model, kernel, precision_base)  # every range a point without ZeRO or fp16 opens


class _Unwrap(ast.NodeTransformer):
    """``with region(...): body`` -> ``body``."""

    def visit_With(self, node):
        self.generic_visit(node)
        call = node.items[0].context_expr
        if len(node.items) == 1 and getattr(getattr(call, "func", None), "id", None) == "region":
            return node.body
        return node


def _ours(obj, mod) -> bool:
    """A function (or static method) written in ``mod``'s file (not one a decorator made)."""
    fn = obj.__func__ if isinstance(obj, staticmethod) else obj
    return isinstance(fn, types.FunctionType) and fn.__code__.co_filename == mod.__file__


@functools.lru_cache(maxsize=None)
def _stripped() -> tuple:
    """(owner, name, function without ranges) for every function and method of ``STRIPPED``:
    each module's source with ``with region(...):`` unwrapped, compiled once."""
    patches = []
    for mod in STRIPPED:
        tree = ast.fix_missing_locations(_Unwrap().visit(ast.parse(inspect.getsource(mod))))
        fresh = types.ModuleType(mod.__name__)
        fresh.__dict__.update(__name__=mod.__name__, __package__=mod.__package__)
        exec(compile(tree, mod.__file__, "exec"), fresh.__dict__)  # noqa: S102 -- our own source
        for name, obj in list(vars(mod).items()):
            if _ours(obj, mod):
                patches.append((mod, name, vars(fresh)[name]))
            elif isinstance(obj, type) and obj.__module__ == mod.__name__:
                patches += [(obj, attr, vars(vars(fresh)[name])[attr])
                            for attr, val in vars(obj).items() if _ours(val, mod)]
    return tuple(patches)


@contextlib.contextmanager
def without_ranges():
    """Swap in the functions and methods of ``STRIPPED`` compiled without their ranges."""
    patches = _stripped() + ((steps, "forward_batch", None),)
    saved = [(owner, name, vars(owner)[name]) for owner, name, _ in patches]  # staticmethods too
    for owner, name, fn in patches[:-1]:
        setattr(owner, name, fn)
    steps.forward_batch = model.forward_batch  # steps imported it by name
    try:
        yield
    finally:
        for owner, name, fn in reversed(saved):
            setattr(owner, name, fn)


def build(args):
    suite = {"name": "bench-regions", "device": "cpu",
             "model": {"preset": args.preset, "overrides": {}},
             "workload": {"kind": args.kind, "batch_size": args.batch, "seq_len": args.seq_len,
                          "num_batches": 1},
             "strategies": {"ops": args.ops}}
    point = expand(parse_suite(suite, "bench.yaml"), "cpu")[0]
    return point, steps.build(point, "cpu")


def ranges_per_step(step) -> int:
    activity = [torch.profiler.ProfilerActivity.CPU]
    with regions.ranges_on(), torch.profiler.profile(activities=activity) as prof:
        step()
    return sum(e.name.startswith(regions.PREFIX) for e in prof.events())


def disabled_range_ns(calls: int = 1_000_000) -> float:
    def body():
        with regions.region("attention", "decoder.0.self_attn"):
            pass

    empty = min(timeit.repeat(lambda: None, number=calls, repeat=3))
    return (min(timeit.repeat(body, number=calls, repeat=3)) - empty) / calls * 1e9


VARIANTS = {"without": without_ranges, "off": contextlib.nullcontext, "on": regions.ranges_on}


def median_ms(step, n: int, variant: str) -> float:
    """The median of ``n`` steps of one variant (garbage collection off while timing)."""
    times = []
    with VARIANTS[variant]():
        gc.collect()
        gc.disable()
        try:
            for _ in range(n):
                t0 = time.perf_counter_ns()
                step()
                times.append(time.perf_counter_ns() - t0)
        finally:
            gc.enable()
    return statistics.median(times) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--kind", default="forward", choices=("forward", "train"))
    ap.add_argument("--ops", default="eager", choices=("eager", "fused"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    point, wl = build(args)
    names = list(VARIANTS)
    for name in names:  # warm-up, each variant's code
        median_ms(wl.step, 3, name)
    n_ranges, per_range = ranges_per_step(wl.step), disabled_range_ns()
    got: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % 3:] + names[:r % 3]:
            got[name].append(median_ms(wl.step, args.steps, name))
    med = {name: statistics.median(v) for name, v in got.items()}
    print(f"{point.label}: preset {args.preset}, {args.kind}, ops {args.ops}, B={args.batch} "
          f"S={args.seq_len}, {args.threads} thread(s), torch {torch.__version__}")
    print(f"ranges per step          {n_ranges}")
    print(f"one disabled range       {per_range:.0f} ns -> {n_ranges * per_range / 1e3:.1f} us "
          f"per step = {n_ranges * per_range / 1e6 / med['off']:.3%} of the step")
    for name in names:
        print(f"median, ranges {name:<8} {med[name]:.3f} ms  (round medians "
              f"{min(got[name]):.3f}..{max(got[name]):.3f})")
    for name in ("off", "on"):
        ratios = [x / y for x, y in zip(got[name], got["without"])]
        low, high = stats.median_ci(ratios)
        print(f"{name:>3} / without          median of per-round ratios "
              f"{statistics.median(ratios):.3f}, 95% CI [{low:.3f}, {high:.3f}] "
              f"({args.rounds} rounds x {args.steps} steps; range {min(ratios):.2f}..{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
