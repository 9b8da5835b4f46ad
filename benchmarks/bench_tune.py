"""Is the search's winner as good as the full grid's best, and at what fraction of its cost?

    python benchmarks/bench_tune.py GRID_RUN TUNE_RUN [--head-to-head OUT] [--json PATH]

``GRID_RUN``: ``tbench run SUITE`` of the tune suite (every configuration, paired with the
suite's baseline); ``TUNE_RUN``: ``tbench tune SUITE``. Prints the grid's best configuration
within the tune's memory budget (by its paired ratio to the baseline; the measured peak within
the budget), the search's winner, its rank in the grid and its gap to the grid's best
(``ratio_winner / ratio_best - 1``, both against the grid's baseline), and the wall time and
the measuring time (the rounds' durations summed) of each. ``--head-to-head OUT`` then measures
the winner against the grid's best in one paired run (``tbench run``'s design, rounds until
decided, up to 12 pairs) and prints its ratio, interval and verdict at the 5% resolution.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import records  # noqa: E402
from harness.analyse.answers import answers  # noqa: E402


def wall_s(run: Path) -> float:
    info = records.read_run_info(run)
    start, end = (datetime.fromisoformat(info[k]) for k in ("started_at", "finished_at"))
    return (end - start).total_seconds()


def measuring_s(run: Path) -> float:
    return sum(float(r.get("duration_s") or 0.0) for rs in records.read_rounds(run).values() for r in rs)


def grid_ranking(grid: Path, budget: int | None) -> list[tuple[float, str, str]]:
    """(ratio to the grid's baseline, label, point id) of every ok point within the budget."""
    (group,) = answers(records.read_records(grid))
    out = []
    for row in group.rows:
        if row.status != "ok" or (budget and (row.memory or 0) > budget):
            continue
        out.append((1.0 if row.ratio is None else row.ratio.estimate, row.label, row.point_id))
    return sorted(out)


def head_to_head(tune_dir: Path, best_id: str, winner_id: str, out: Path):
    """The winner against the grid's best, paired, in one run: its Ratio."""
    from harness.analyse.answers import ratio_of
    from harness.run import lifecycle
    from harness.run.plan import points_plan
    from harness.suite.point import Point
    from harness.suite.schema import CompareSpec

    doc = records.read_json(tune_dir / records.RESOLVED_FILE)  # every point of the space
    chosen = {p["id"]: Point.from_json(p).derive(measure={"min_rounds": 4, "max_rounds": 12})
              for p in doc["points"] if p["id"] in (best_id, winner_id)}
    best = chosen[best_id]
    spec = CompareSpec(baseline={"id": best.id})
    result = lifecycle.run(points_plan(list(chosen.values()), out, compare=spec), reports=False)
    recs = {r["point_id"]: r for r in result.records}
    return ratio_of(recs[chosen[winner_id].id], recs[best.id], list(recs.values()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", type=Path)
    ap.add_argument("tune", type=Path)
    ap.add_argument("--head-to-head", type=Path, default=None, metavar="OUT")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = ap.parse_args(argv)
    tune = records.read_json(args.tune / "tune.json")
    budget = (tune.get("tune") or {}).get("memory_budget")
    ranking = grid_ranking(args.grid, budget)
    winner = (tune.get("answer") or {}).get("winner")
    if not winner:
        print("the search named no winner:", *(tune.get("answer") or {}).get("notes", []))
        return 1
    best_ratio, best_label, best_id = ranking[0]
    rank = next((i for i, (_, _, pid) in enumerate(ranking) if pid == winner["point_id"]), None)
    mine = ranking[rank][0] if rank is not None else None
    stage_dirs = [d for d in args.tune.iterdir() if (d / records.RUN_FILE).exists()]
    out = {"grid_best": best_label, "grid_best_ratio": best_ratio, "winner": winner["label"],
           "winner_grid_ratio": mine, "winner_rank": None if rank is None else rank + 1,
           "eligible": len(ranking), "gap": None if mine is None else mine / best_ratio - 1,
           "grid_wall_s": wall_s(args.grid), "grid_measuring_s": measuring_s(args.grid),
           "tune_wall_s": tune.get("spent_before_s"),
           "tune_measuring_s": sum(measuring_s(d) for d in stage_dirs)}
    print(f"grid's best within the budget: {best_label} (x{best_ratio:.3f} vs the grid's baseline; "
          f"{len(ranking)} eligible)")
    print(f"search's winner: {winner['label']}: rank {out['winner_rank']} in the grid, "
          + (f"x{mine:.3f}, {out['gap']:+.1%} from the best" if mine else "not in the grid's eligible set"))
    print(f"time: grid {out['grid_wall_s']:.0f} s wall, {out['grid_measuring_s']:.0f} s measuring; "
          f"search {out['tune_wall_s']:.0f} s wall, {out['tune_measuring_s']:.0f} s measuring "
          f"({out['tune_measuring_s'] / out['grid_measuring_s']:.0%} of the grid's)")
    if args.head_to_head and winner["point_id"] != best_id:
        r = head_to_head(args.tune, best_id, winner["point_id"], args.head_to_head)
        out["head_to_head"] = {"estimate": r.estimate, "low": r.low, "high": r.high,
                               "verdict": r.verdict, "n": r.n}
        print(f"head to head, paired: winner / grid's best x{r.estimate:.3f} "
              f"[{r.low:.3f}, {r.high:.3f}] over {r.n} pairs: {r.verdict} (resolution 5%)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
