"""A run from its plan to its result, and the one owner of its folder for the whole way.

    result = run(plan, *, progress=None, say=None, measure_round=rounds.measured_round)
    with Session(run_dir, points, resume=..., doc=..., on_corrupt=...) as session: ...

The lifecycle, in order (docs/DESIGN.md "A run's lifecycle"):
  1. lock the folder (``harness.run.lock``: one writer; a second one is refused, naming it);
  2. open it (``rundir.open_run``: env.json, run.json, suite.resolved.json; on ``--resume``
     the checks, and results.jsonl / rounds.jsonl read once);
  3. prepare what points need outside their timeouts (DeepSpeed's extensions), start the fork server;
  4. run every round on the plan's placement (``harness.run.ledger``), SIGINT / SIGTERM
     turned into ``Interrupted`` (the running points recorded ``interrupted``);
  5. close run.json (finished | interrupted | failed, with the reason);
  6. write nodes.json (Slurm), report.md and report.html from the records in memory, and the
     answers; release the lock.
``run`` returns a ``RunResult`` (records, counts, flags, answers, the interrupting signal,
warnings); an I/O error of the folder propagates (``OSError``: exit 2) after run.json says
``failed``. ``Session`` is steps 1, 2 and 5 for the commands that run points their own way
(``tbench frontier``). ``measure_round(point, run_dir, grace_s, round_no, where)`` is what runs
one round locally: tests pass a stand-in, as an argument.
"""
from __future__ import annotations

import contextlib
import signal
import sys
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

from harness import records
from harness.run import extensions, forkserver, launcher, rounds, rundir, schedule
from harness.run.design import Choice, Design, choose
from harness.run.duet import measure_duet
from harness.run.ledger import Ledger, ProgressEvent
from harness.run.lock import FolderLock
from harness.run.signals import signal_of, stop_signals

GRACE_S = 5.0  # SIGTERM to SIGKILL of a worker group
FAILED = ("oom", "error", "crashed", "timeout", "interrupted", "contended")


@dataclass
class RunResult:
    run_dir: Path
    records: list[dict]  # the latest record of every point, in the order written
    total: int
    counts: dict[str, int] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)  # contended / noisy / drift points
    skipped: int = 0  # final before a --resume
    interrupted_by: signal.Signals | None = None
    answers: list = field(default_factory=list)  # harness.analyse.answers.Answer per group
    warnings: list[str] = field(default_factory=list)  # report / nodes lines for the user
    run: dict = field(default_factory=dict)  # run.json, env.json and suite.resolved.json as
    env: dict = field(default_factory=dict)  # written: the folder without reading it back
    doc: dict = field(default_factory=dict)

    def folder(self) -> records.RunFolder:
        """The run folder as ``records.read_run_folder`` would read it, from memory."""
        return records.RunFolder(self.run_dir, records.finite(self.records), self.run, self.env,
                                 self.doc)

    @property
    def results_path(self) -> Path:
        return self.run_dir / records.RESULTS_FILE

    @property
    def interrupted(self) -> bool:
        return self.interrupted_by is not None

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.counts.items() if status not in ("ok", "not_supported"))

    def failures(self) -> list[str]:
        """``label: status: last error line`` of every failed point."""
        out = []
        for rec in self.records:
            if rec.get("status") in FAILED:
                last = ((rec.get("error") or "").strip().splitlines() or ["(no error text)"])[-1]
                out.append(f"{rec.get('label')}: {rec['status']}: {last}")
        return out


class Session:
    """The folder of a run while it runs: locked, opened, closed with its final state."""

    def __init__(self, run_dir: Path, points, *, resume: bool = False, doc: dict | None = None,
                 on_corrupt: str = "refuse", say: Callable[[str], None] | None = None):
        self.run_dir, self.points = Path(run_dir), points
        self.resume, self.doc, self.on_corrupt = resume, doc, on_corrupt
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.lock = FolderLock(self.run_dir)
        self.state, self.reason = "finished", None

    def __enter__(self) -> "Session":
        self.lock.acquire(create=not self.resume)
        if self.lock.note:
            self.say(self.lock.note)
        try:
            self.opened = rundir.open_run(self.run_dir, self.points, resume=self.resume,
                                          doc=self.doc, on_corrupt=self.on_corrupt)
        except BaseException:
            self.lock.release()
            raise
        return self

    def interrupted(self, sig: signal.Signals) -> None:
        self.state, self.reason = "interrupted", sig.name

    def close(self, exc: BaseException | None = None) -> None:
        """Step 5: run.json gets the final state (once; an error of the run: where still possible)."""
        if getattr(self, "closed", False):
            return
        self.closed = True
        if isinstance(exc, KeyboardInterrupt):
            self.interrupted(signal_of(exc))
        elif exc is not None:
            self.state, self.reason = "failed", f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError) if exc is not None else contextlib.nullcontext():
            rundir.close_run(self.run_dir, self.opened.run, self.state, self.reason)

    def __exit__(self, kind, exc, tb) -> None:
        try:
            self.close(exc)
        finally:
            self.lock.release()


def backend_of(plan, round_fn, server, grace_s: float):
    """The ``harness.run.schedule`` backend of the plan's placement."""
    if plan.placement.name == "slurm":
        from harness.run.slurm import Backend

        return Backend(plan.placement.spec, grace_s)(round_fn, plan.run_dir)
    slots = plan.placement.slots
    if slots and len(slots) > 1:
        return schedule.Pool(round_fn, list(slots), server=server, grace_s=grace_s)
    return schedule.Inline(round_fn, server=server)


def fork_server(plan, done: set[str]):
    """The run's warm fork server, where a single-process point still runs locally. It gets
    this process's environment: what matters of it is only what ``PRELOAD`` reads at import
    time; each worker gets its own (``launcher.worker_env``) with its request."""
    todo = [p for p in plan.points if p.id not in done]
    if not plan.placement.warm or all(launcher.launched(p) for p in todo):
        return None
    return forkserver.ForkServer(plan.run_dir).spawn()


def design_of(plan, session: Session) -> Design:
    """The run's design: chosen now, or the one a resumed run chose (so both sides of every
    pair keep their threads and lanes), recorded in run.json."""
    run = session.opened.run
    spec = plan.compare
    if run.get("design"):
        choice = Choice.from_json(run["design"])
    elif plan.placement.name == "slurm":  # the compute nodes, not this machine, set the threads
        choice = Choice("interleaved", None, why="a Slurm run: each job on its node, in turn")
    else:
        together = plan.placement.name == "slurm" or len(plan.placement.slots or ()) > 1
        if together and spec.design in ("auto", "duet"):  # points placed elsewhere: no lanes here
            spec = spec.model_copy(update={"design": "interleaved"})
        choice = choose(plan.points, spec)
        run["design"] = choice.as_json()
        records.write_json_atomic(plan.run_dir / records.RUN_FILE, run)
    session.say(f"design: {choice.why}")
    return Design(plan.points, spec, choice, pairs_of=plan.pairs)


def run_task(measure_round, run_dir: Path, grace_s: float, task, where) -> list[dict]:
    """A task's rounds: one point's, or a duet's two; each told its block and place."""
    if task.threads is not None:
        where = replace(where, env=where.env + (("TBENCH_THREADS", str(task.threads)),))
    if task.duet:
        recs = measure_duet(task, measure_round, run_dir, grace_s, where)
    else:
        point, round_no = task.members[0]
        recs = [measure_round(point, run_dir, grace_s, round_no, where)]
    for rec in recs:
        rec.update(block=task.block, group=task.group, order=task.order)
    return recs


def sweep(plan, session: Session, measure_round, progress, grace_s: float) -> Ledger:
    """Steps 3 and 4: every round not measured yet, on the plan's placement."""
    opened = session.opened
    extensions.prepare(plan.points, session.say)
    design = design_of(plan, session)
    ledger = Ledger(plan.points, plan.run_dir, opened.done, opened.rounds, progress, design)
    round_fn = partial(run_task, measure_round, plan.run_dir, grace_s)
    with stop_signals() as disarm:
        server = None
        try:
            server = fork_server(plan, opened.done)
            runs = backend_of(plan, round_fn, server, grace_s)
            try:
                ledger.run(runs)
            except KeyboardInterrupt as exc:
                runs.cancel()  # later signals are ignored until the run has closed
                ledger.interrupted(exc)
                session.interrupted(ledger.interrupted_by)
            except BaseException:  # an OSError of the run folder: stop what still runs, then say it
                runs.cancel()
                raise
            finally:
                runs.close()
        finally:
            disarm()  # closing run.json must not be cut short by a late signal
            if server is not None:
                server.close()
    return ledger


def run(plan, *, progress: Callable[[ProgressEvent], None] | None = None,
        say: Callable[[str], None] | None = None,
        measure_round: Callable[..., dict] | None = None, reports: bool = True,
        grace_s: float = GRACE_S) -> RunResult:
    """Run the plan (see the module docstring)."""
    doc = plan.resolved_doc()
    with Session(plan.run_dir, plan.points, resume=plan.options.resume, doc=doc,
                 on_corrupt=plan.options.on_corrupt, say=say) as session:
        ledger = sweep(plan, session, measure_round or rounds.measured_round,
                       progress or (lambda event: None), grace_s)
        opened = session.opened
        result = RunResult(plan.run_dir, opened.records + ledger.records, len(plan.points),
                           ledger.counts, ledger.flags, ledger.skipped, ledger.interrupted_by,
                           run=opened.run, env=opened.env, doc=doc)
        session.close()
        if reports:
            finish(plan, result)
    return result


def finish(plan, result: RunResult) -> None:
    """Step 6: nodes.json, the reports and the answers, from the records in memory."""
    from harness.analyse.answers import answers

    if plan.placement.name == "slurm":
        from harness.run.slurm_job import write_nodes

        mixed = write_nodes(plan.run_dir)
        if mixed:
            result.warnings.append(mixed)
    result.warnings += filter(None, [write_reports(result.folder())])
    with contextlib.suppress(records.BadInput):
        result.answers = answers(result.records)


def write_reports(folder: records.RunFolder) -> str | None:
    """report.md and report.html; a warning instead of an exception, as the results are on disk."""
    from harness.analyse import report

    try:
        report.write_reports(folder)
    except Exception as exc:  # noqa: BLE001 -- a report bug must not hide the results
        return (f"warning: the report could not be written ({type(exc).__name__}: {exc}); "
                f"rerun with: tbench report {folder.path}")
    return None
