"""The end of ``tbench tune``: the correctness check of the finalists, the paired final, and the
answer -- the winner, its verdict against the runner-up, what each axis contributed, where the
time goes, the Pareto front, and a suite of the winner.

    final(tune, suite, points, finalists, deadline) -> TuneAnswer
    from_measured(tune, suite, points) -> TuneAnswer      the budget ran out before the final

The ratios are those of the answers (``harness.analyse.answers.ratio_of``: pairs of the final
run, log scale, the sequential rule's level); for an objective with memory in it the measured
peaks' ratio is raised to its weight (a peak is measured, not sampled: it carries no interval).
The winner is the passing finalist with the best estimate; the decision is its ratio to the
runner-up: ``faster`` (decided), ``equal`` within the resolution (a tie, stated with it) or
``undecided`` (with the smallest difference the pairs could have decided).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from harness.records import pairs
from harness.run import tune_space as ts
from harness.run.design import pick_baseline
from harness.run.frontier import probe_status
from harness.suite.strategies import strategy_spec
from implementations import registry


@dataclass
class TuneAnswer:
    winner: dict | None  # {label, point_id, strategies, time_ms, peak_bytes}
    runner_up: dict | None = None
    decision: dict = field(default_factory=dict)  # {verdict, text, estimate, low, high}
    finalists: list = field(default_factory=list)  # {label, ratio, low, high, verdict, check}
    contributions: list = field(default_factory=list)  # {axis, back_to, time_ratio, ..., verdict}
    total: dict | None = None  # the baseline against the winner
    profile: dict = field(default_factory=dict)  # label -> {region: share}
    pareto: list = field(default_factory=list)
    measured: list = field(default_factory=list)  # every configuration: label, time_ms, peak_bytes
    notes: list = field(default_factory=list)
    winner_suite: str | None = None  # relative to the run folder
    budget_spent: bool = False

    def as_json(self) -> dict:
        return asdict(self)


def row_of(rec: dict) -> dict:
    m = rec.get("metrics") or {}
    return {"label": rec.get("label"), "point_id": rec.get("point_id"),
            "time_ms": m.get("latency_ms_p50"), "peak_bytes": ts.peak_of(rec),
            "tokens_per_s": m.get("tokens_per_s")}


def ratio(cand: dict, base: dict, group: list[dict], objective) -> pairs.Ratio:
    """cand / base on the objective (see the module docstring)."""
    from harness.analyse.answers import ratio_of

    time = ratio_of(cand, base, group)
    weights = ({"time": 1.0} if objective in ("latency", "tokens_per_s") else
               {"memory": 1.0} if objective == "peak_memory" else objective)
    a, b = weights.get("time", 0.0), weights.get("memory", 0.0)
    pc, pb = ts.peak_of(cand), ts.peak_of(base)
    mem = (pc / pb) ** b if b and pc and pb else 1.0
    if not a:
        return pairs.Ratio(mem, mem, mem, time.n, 1.0, pairs.verdict(mem, mem, time.resolution),
                           time.resolution, None, method="measured peaks")
    if time.estimate is None:
        return time
    scale = lambda v: None if v is None else v ** a * mem  # noqa: E731
    low, high = scale(time.low), scale(time.high)
    return pairs.Ratio(scale(time.estimate), low, high, time.n, time.confidence,
                       pairs.verdict(low, high, time.resolution), time.resolution, time.resolvable,
                       time.look, time.method)


def ratio_json(r: pairs.Ratio | None) -> dict:
    if r is None:
        return {"estimate": 1.0, "low": None, "high": None, "verdict": "baseline"}
    return {"estimate": r.estimate, "low": r.low, "high": r.high, "verdict": r.verdict,
            "n": r.n, "resolution": r.resolution, "resolvable": r.resolvable}


def variants(leader, base) -> list[tuple[str, object]]:
    """(axis, the leader with that axis set back to the baseline's) for every differing axis."""
    out = []
    for axis in registry.AXES:
        mine, theirs = getattr(leader.strategies, axis), getattr(base.strategies, axis)
        if mine != theirs:
            back = leader.derive(strategies={axis: strategy_spec(theirs)})
            out.append((axis, back.model_copy(update={"label": f"{leader.label} [{axis} -> {theirs.label}]"})))
    return out


def probe_close(tune, close) -> list:
    """Finalists within the model's error of the budget, each once under the real budget: the
    ones that fit (an OOM or another failure skips the configuration, with the reason)."""
    if not close:
        return []
    probes = {p.id: p.derive(measure={**ts.RANKING, "memory_budget_bytes": tune.spec.memory_budget,
                                      "min_time_s": 0.0}) for p in close}
    result = tune.stage("probes", list(probes.values()))
    by_id = {r["point_id"]: r for r in result.records}
    fits = []
    for p in close:
        rec = by_id.get(probes[p.id].id) or {"status": "interrupted"}
        status = probe_status(rec)
        if status == "ok":
            fits.append(p)
        elif status == "oom":
            tune.skip(p, f"ran out of memory under the budget {ts.fmt(tune.spec.memory_budget)} "
                         "(real probe)", "probe_oom")
        else:
            tune.skip(p, f"budgeted probe {status}: {ts.last_line(rec)}", "probe_failed")
    return fits


def check_stage(tune, finalists, base):
    """Every finalist (and the baseline, for its profile) once with the correctness check and a
    profiled pass: {base point id: record}."""
    spec = tune.spec
    derived = {}
    for p in [*finalists, base]:
        other_precision = p.strategies.precision.label != "fp32"
        decoder_only = p.model.resolved()["n_encoder_layers"] == 0
        work = {"parity_steps": spec.parity_steps} if other_precision and decoder_only else {}
        derived[p.id] = p.derive(measure={**ts.RANKING, "check": spec.correctness, "profile": True,
                                          "min_time_s": 0.0}, workload=work)
    result = tune.stage("check", list({d.id: d for d in derived.values()}.values()))
    by_id = {r["point_id"]: r for r in result.records}
    return {pid: by_id.get(d.id) for pid, d in derived.items()}, result.interrupted


def check_failure(rec: dict | None, spec) -> str | None:
    if rec is None:
        return "not checked (the budget ran out)"
    if rec.get("status") != "ok":
        return f"check run {rec.get('status')}: {ts.last_line(rec)}"
    m = rec.get("metrics") or {}
    if spec.correctness and m.get("check_ok") is False:
        return (f"correctness: gradients differ by {m['check_grad_rel_diff']:.1e} from its twin "
                f"({m['check_reference']}; tolerance {m['check_rtol']:.0e})")
    if m.get("loss_parity_ok") is False:
        return f"loss parity vs fp32: relative difference {m['loss_parity_rel_diff']:.2e}"
    return None


def final(tune, suite, points, finalists, deadline) -> TuneAnswer:
    """Steps 3 and 4 of ``harness.run.tune`` and the answer."""
    spec = tune.spec
    if not finalists:
        return from_measured(tune, suite, points, "the budget ran out before any configuration was "
                             "measured" if "cut" in tune.state else "no configuration was eligible")
    base = pick_baseline(points, suite.compare.baseline)
    close = [p for p in finalists if p.id in tune.close]
    fits = {p.id for p in probe_close(tune, close)}
    finalists = [p for p in finalists if p.id not in tune.close or p.id in fits]
    checked, cut = check_stage(tune, finalists, base)
    passing = []
    for p in finalists:
        why = check_failure(checked.get(p.id), spec)
        if why:
            tune.skip(p, why, "check")
        elif len(passing) < spec.finalists:
            passing.append(p)
    if cut or not passing:
        return from_measured(tune, suite, points, "no finalist passed its checks" if passing == [] and not cut
                             else "the budget ran out during the checks")
    leader = passing[0]
    others = [*passing[1:], *(b for _, b in variants(leader, base)), base]
    stage = paired_stage(tune, suite, "final", leader, others, deadline, FINAL_SHARE)
    return decide(tune, suite, points, stage, passing, leader, base, checked, deadline)


FINAL_SHARE = 0.6  # of the time left: the rest explains a winner that is not the leader
EXPLAIN_MIN_S = 60.0  # an explanation stage needs at least this long


@dataclass
class Paired:
    """A paired stage: the point it measured for each base id, their records, one group."""

    finals: dict
    recs: dict
    group: list
    cut: bool


def paired_stage(tune, suite, name, origin, others, deadline, share: float) -> Paired:
    """``origin`` and ``others`` in one paired run against ``origin`` (``tbench run``'s design,
    rounds until decided), within ``share`` of the time left (stored: a resume measures the
    same points)."""
    from harness.suite.schema import CompareSpec

    # measure.budget_s counts every round's seconds: a duet runs two at once (the CPU design)
    at_once = 2 if ts.ranking_slots([p.derive(measure={"threads": 1}) for p in [origin, *others]]) else 1
    budget_s = tune.state.setdefault(f"{name}_budget_s",
                                     round(max(10.0, share * deadline.left() * at_once), 1))
    m = origin.measure
    auto = {"rounds": "auto", "budget_s": budget_s, "min_rounds": m.min_rounds,
            "max_rounds": max(m.max_rounds, tune.spec.final_max_rounds)}
    finals, seen = {}, {}  # base id -> the point measured (one per distinct configuration)
    for p in [origin, *others]:
        d = p.derive(measure=auto)
        finals[p.id] = seen.setdefault(d.id, d.model_copy(update={"label": p.label}))
    lead = finals[origin.id]
    compare = CompareSpec(**{**suite.compare.model_dump(), "baseline": {"id": lead.id}, "pairs": "baseline"})
    result = tune.stage(name, list(seen.values()), compare=compare, reports=True)
    if result.interrupted:
        tune.state["cut"] = f"the {name} was cut at the end of the budget: its verdicts come from the pairs measured"
    recs = ts.measured_records(result, list(seen.values()), lead.id, suite.compare)
    return Paired(finals, recs, list(recs.values()), result.interrupted)


def decide(tune, suite, points, stage: Paired, passing, leader, base, checked, deadline) -> TuneAnswer:
    objective = tune.spec.objective
    finals, recs, group = stage.finals, stage.recs, stage.group
    lead = recs.get(finals[leader.id].id)
    if lead is None or lead.get("status") != "ok":
        return from_measured(tune, suite, points, "the leader's final run did not measure")
    rows = []
    for p in passing:
        rec = recs.get(finals[p.id].id)
        if rec and rec.get("status") == "ok":
            r = None if rec is lead else ratio(rec, lead, group, objective)
            rows.append((r.estimate if r and r.estimate else 1.0, p, rec, r))
    rows.sort(key=lambda t: (t[0], t[1].index))
    (_, win, win_rec, _), rest = rows[0], rows[1:]
    answer = TuneAnswer(dict(row_of(win_rec), point_id=win.id, label=win.label,
                             strategies=win.to_json()["strategies"]))
    answer.finalists = [dict(row_of(rec), label=p.label, check=(checked.get(p.id) or {}).get("metrics", {}).get("check_ok"),
                             **ratio_json(r)) for _, p, rec, r in rows]
    if rest:
        _, run_p, run_rec, _ = rest[0]
        r = ratio(run_rec, win_rec, group, objective)
        answer.runner_up = dict(row_of(run_rec), label=run_p.label)
        answer.decision = dict(ratio_json(r), text=decision_text(win.label, run_p.label, r))
    else:
        answer.decision = {"verdict": "alone", "text": f"{win.label}: the only finalist that passed its checks"}
    origin = leader
    if win.id != leader.id and variants(win, base) and not stage.cut and deadline.left() >= EXPLAIN_MIN_S:
        stage = paired_stage(tune, suite, "explain", win, [b for _, b in variants(win, base)] + [base],
                             deadline, 0.85)
        origin = win
    explain(answer, origin, base, stage)
    if origin.id != win.id:
        answer.notes.append(f"the axis ratios are of the leader {leader.label} (the best of the rungs, "
                            "which the final's variants were built from), not of the winner: too little "
                            "time was left to measure the winner's own")
    answer.profile = {p.label: shares(checked.get(p.id)) for p in (win, base) if checked.get(p.id)}
    finish(tune, suite, answer)
    return answer


def decision_text(winner: str, runner: str, r: pairs.Ratio) -> str:
    """The winner against the runner-up, ``r`` = runner-up / winner, in words."""
    if r.estimate is None:
        return f"{winner} against {runner}: no pairs to decide on"
    ci = f"x{r.estimate:.3f} [{r.low:.3f}, {r.high:.3f}]" if r.low else f"x{r.estimate:.3f}"
    if r.verdict == "slower":
        return f"decided: {winner} is faster than the runner-up {runner} ({runner} {ci})"
    if r.verdict == "equal":
        return (f"tie: {winner} and {runner} are equal within {r.resolution:.0%} ({ci}); "
                f"{winner} is named for its estimate")
    more = f"; a difference of {r.resolvable:.0%} or more would have been decided" if r.resolvable else ""
    return (f"undecided against {runner} ({ci}){more}: more pairs decide it "
            "(a larger tune.budget_s or measure.max_rounds)")


def explain(answer, origin, base, stage: Paired) -> None:
    """What each axis contributes: ``origin`` (the winner, or the leader when there was no time
    for the winner's own stage) with one axis back at the baseline's value, against
    ``origin``; and the baseline itself (the whole speed-up)."""
    finals, recs, group = stage.finals, stage.recs, stage.group
    lead = recs.get(finals[origin.id].id)
    if lead is None:
        return
    for axis, variant in variants(origin, base):
        rec = recs.get(finals[variant.id].id)
        entry = {"axis": axis, "back_to": getattr(base.strategies, axis).label,
                 "label": variant.label}
        if rec is None or rec.get("status") != "ok":
            entry.update(verdict=(rec or {}).get("status", "not measured"), estimate=None)
        else:
            r = ratio(rec, lead, group, "latency")
            pl, pv = ts.peak_of(lead), ts.peak_of(rec)
            entry.update(ratio_json(r), memory_ratio=pv / pl if pl and pv else None)
        answer.contributions.append(entry)
    answer.contributions.sort(key=lambda e: -(e.get("estimate") or 0.0))
    base_rec = recs.get(finals[base.id].id)
    if base_rec is not None and base_rec is not lead and base_rec.get("status") == "ok":
        answer.total = dict(ratio_json(ratio(base_rec, lead, group, "latency")), label=base.label)


def shares(rec: dict | None) -> dict:
    m = (rec or {}).get("metrics") or {}
    return {k.removeprefix("profile_share_"): v for k, v in m.items()
            if k.startswith("profile_share_") and v}


def from_measured(tune, suite, points, why: str = "the time budget ran out") -> TuneAnswer:
    """No decided winner: the best measured so far is reported as the leader, not named."""
    answer = TuneAnswer(None)
    best = sorted(tune.measured.values(), key=lambda r: (-r["rung"], ts.score(r, tune.spec.objective)))
    answer.notes.append(f"no winner named: {why}" + (f"; leader so far (unchecked, undecided): "
                                                    f"{best[0]['label']}" if best else ""))
    finish(tune, suite, answer)
    return answer


def finish(tune, suite, answer) -> None:
    """The measured configurations, the Pareto front, the winner's suite."""
    failed = {s.point_id for s in tune.skipped if s.kind == "check"}
    answer.measured = [dict(row_of(r), label=r["label"], rung=r["rung"], failed_check=pid in failed)
                       for pid, r in tune.measured.items()]
    front = ts.pareto([m for m in answer.measured if not m["failed_check"]])
    answer.pareto = [r["label"] for r in front]
    if answer.winner:
        answer.winner_suite = write_winner(tune.run_dir, suite, answer.winner["strategies"])


def write_winner(run_dir, suite, strategies: dict) -> str:
    """``winner.yaml``: the suite without its sweep, the winner's strategies; ``tbench run``
    measures it as the same point the search measured."""
    import yaml

    data = suite.model_dump(mode="json", exclude={"sweep", "tune", "profiles", "variants"})
    data.update(name=f"{suite.name}-winner", strategies=strategies,
                description=f"the winner of tbench tune {suite.name}")
    path = run_dir / "winner.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path.name  # relative to the run folder, which may move
