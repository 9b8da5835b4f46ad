"""A run as one typed value: the options a user gave, and the plan they resolve to.

    options = RunOptions(suite=Path(...), out=..., sets=(...), ...)
    suite, points = load(options)             the validated suite and its points (no placement)
    plan = plan_run(options)                  RunPlan: points, run folder, placement; or SuiteError

``plan_run`` is the one place where options are checked against each other and against the
machine: a CUDA run where torch sees no GPU, ``--resume`` without ``--out``, Slurm options
without the Slurm launcher, ``--devices`` with Slurm, nodes that do not divide a point's ranks
-- each one line (``SuiteError``, exit 2), before anything is written. The placement is an
explicit object: ``Local`` (one round at a time, or ``slots`` at once; forked from a warm fork
server unless ``warm`` is off) or ``Slurm`` (a job per round). ``harness.run.lifecycle.run``
takes the plan and owns the run folder from then on.
"""
from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.run import rundir
from harness.suite.errors import SuiteError

SLURM_FIELDS = ("partition", "account", "time_min", "gpus_per_point", "nodes_per_point")


@dataclass(frozen=True)
class RunOptions:
    """What ``tbench run`` (or ``gate``, ``profile``) was given; None = the suite's own."""

    suite: Path | None  # None: points built elsewhere (``points_plan``)
    out: Path | None = None
    device: str | None = None  # auto | cpu | cuda
    sets: tuple[str, ...] = ()  # --set PATH=VALUE
    variants: tuple[str, ...] = ()
    resume: bool = False
    on_corrupt: str = "refuse"
    devices: str | None = None  # --devices all | 0,1 | cpu:N
    fresh_workers: bool = False
    launcher: str | None = None  # local | slurm
    slurm: dict[str, Any] = field(default_factory=dict)  # SLURM_FIELDS and sbatch_args given


@dataclass(frozen=True)
class Local:
    """Rounds on this machine: one at a time, or at once on ``slots`` (``--devices``)."""

    slots: tuple | None = None
    warm: bool = True  # fork single-process workers from the run's fork server

    name = "local"


@dataclass(frozen=True)
class Slurm:
    """Rounds as Slurm jobs (``harness.run.slurm``), with the suite's launcher spec."""

    spec: Any

    name = "slurm"
    warm = False


@dataclass(frozen=True)
class RunPlan:
    options: RunOptions
    suite: Any  # the resolved harness.suite.loader.Suite
    points: tuple
    run_dir: Path  # absolute: workers run in their own folders
    placement: Local | Slurm
    pairs: tuple[tuple[str, str], ...] | None = None  # explicit pair groups (gate --ab), by id
    compare_spec: Any = None  # a compare section of its own (tbench tune's final), else the suite's

    @property
    def device(self) -> str:
        return self.points[0].device

    @property
    def compare(self):
        """The suite's ``compare:`` section (the defaults for a plan with no suite)."""
        from harness.suite.schema import CompareSpec

        if self.compare_spec is not None:
            return self.compare_spec
        return self.suite.compare if self.suite is not None else CompareSpec()

    def resolved_doc(self) -> dict | None:
        """What ``suite.resolved.json`` holds (None for a plan with no suite behind it)."""
        if self.suite is None:
            return None
        return rundir.resolved_doc(self.options.suite, self.device, list(self.options.sets),
                                   self.suite, self.points)

    def resume_command(self) -> str:
        """``tbench run ... --resume`` with every option of this run, quoted for the shell."""
        o = self.options
        args = ["tbench", "run", str(o.suite), "--out", str(self.run_dir), "--device", self.device]
        args += [a for v in o.variants for a in ("--variant", v)]
        args += [a for s in o.sets for a in ("--set", s)]
        args += (["--devices", o.devices] if o.devices else []) + (["--fresh-workers"] if o.fresh_workers else [])
        if self.placement.name == "slurm":
            args += ["--launcher", "slurm"]
            for key in SLURM_FIELDS:
                if o.slurm.get(key) is not None:
                    args += ["--" + key.replace("_", "-"), str(o.slurm[key])]
            args += [f"--sbatch-arg={a}" for a in o.slurm.get("sbatch_args") or ()]
        return shlex.join([*args, "--resume"])


def load(options: RunOptions):
    """(resolved suite, points) of the options (``harness.suite.sweep.load_points``)."""
    from harness.suite.sweep import load_points

    return load_points(options.suite, options.device, list(options.sets), list(options.variants))


def cuda_missing(device: str, explicit: bool, suite: Path) -> str | None:
    """The error line when the points are to run on CUDA and torch sees no CUDA device."""
    if device != "cuda":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    where = "--device cuda" if explicit else f"{suite}: device: cuda"
    return (f"{where}: no CUDA device is visible (torch.cuda.is_available() is False); "
            "use --device cpu or auto")


def launcher_spec(spec, options: RunOptions):
    """The suite's ``launcher:`` section with the CLI's options laid over it."""
    changes = {k: v for k, v in options.slurm.items() if v is not None and v != ()}
    if options.launcher is not None:
        changes["name"] = options.launcher
    if "sbatch_args" in changes:
        changes["sbatch_args"] = list(changes["sbatch_args"])
    if not changes:
        return spec
    from pydantic import ValidationError

    from harness.suite.schema import LauncherSpec

    try:
        return LauncherSpec.model_validate({**spec.model_dump(), **changes})
    except ValidationError as exc:
        flag = {"sbatch_args": "sbatch-arg", "name": "launcher"}
        raise SuiteError([f"--{flag.get(str(e['loc'][0]), str(e['loc'][0]).replace('_', '-'))}: "
                          + e["msg"].removeprefix("Value error, ")
                          for e in exc.errors(include_url=False)]) from None


def placement(spec, options: RunOptions, points) -> Local | Slurm:
    """Where the rounds run, from the launcher spec and the options."""
    if spec.name == "slurm":
        if options.devices:
            raise SuiteError(["--devices: not with --launcher slurm (Slurm places each job; "
                              "use --gpus-per-point)"])
        if shutil.which("sbatch") is None:
            raise SuiteError(["--launcher slurm: sbatch not found on PATH (run tbench where "
                              "Slurm's client commands work)"])
        from harness.run.slurm_job import check_nodes

        bad = check_nodes(points, spec)
        if bad:
            raise SuiteError(bad)
        return Slurm(spec)
    if spec.nodes_per_point != 1:
        raise SuiteError([f"launcher.nodes_per_point: got {spec.nodes_per_point}, allowed: 1 with "
                          "the local launcher (more nodes need --launcher slurm)"])
    if any(v not in (None, (), []) for v in options.slurm.values()):
        raise SuiteError(["--partition, --account, --time-min, --gpus-per-point, --nodes-per-point "
                          "and --sbatch-arg need --launcher slurm (or launcher.name: slurm in the "
                          "suite)"])
    slots = None
    if options.devices:
        from harness.run.devices import slots as device_slots

        slots = tuple(device_slots(options.devices, points[0].device, points))
    return Local(slots=slots, warm=not options.fresh_workers)


def plan_run(options: RunOptions, loaded=None) -> RunPlan:
    """The plan of ``options`` (``loaded``: ``load(options)`` already done); SuiteError lines
    for what cannot run (see the module docstring)."""
    suite, points = loaded or load(options)
    no_cuda = cuda_missing(points[0].device, options.device is not None, options.suite)
    if no_cuda:
        raise SuiteError([no_cuda])
    if options.resume and options.out is None:
        raise SuiteError(["--resume needs --out RUN_DIR (the folder of the run to finish)"])
    where = placement(launcher_spec(suite.launcher, options), options, points)
    run_dir = (options.out or rundir.default_run_dir(suite.name)).resolve()
    return RunPlan(options, suite, tuple(points), run_dir, where)


def points_plan(points, run_dir, *, resume: bool = False, slots=None, warm: bool = True,
                on_corrupt: str = "refuse", compare=None) -> RunPlan:
    """A plan of points built elsewhere (a benchmark, a test): no suite file behind it, so no
    suite.resolved.json; one round at a time, or at once on ``slots``."""
    options = RunOptions(None, Path(run_dir), resume=resume, on_corrupt=on_corrupt)
    where = Local(slots=tuple(slots) if slots else None, warm=warm)
    return RunPlan(options, None, tuple(points), Path(run_dir).resolve(), where, compare_spec=compare)


def with_points(plan: RunPlan, points, run_dir: Path | None = None) -> RunPlan:
    """The same plan for other points (``tbench profile``: one point into its own folder)."""
    return replace(plan, points=tuple(points), run_dir=(run_dir or plan.run_dir).resolve())
