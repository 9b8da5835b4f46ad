"""Sweep expansion: grid / zip / exclude, order, ids, labels, profiles and --set overrides."""
import pytest

from harness.suite.errors import SuiteError
from harness.suite.loader import parse_suite
from harness.suite.sweep import expand, parse_sets, points_for, resolve

BASE = {"name": "t", "model": {"preset": "tiny"}, "workload": {"seq_len": 32},
        "strategies": {"attention": "dense"}}


def points(sweep=None, profiles=None, sets=(), device="cpu", **top):
    suite = parse_suite({**BASE, **top, "sweep": sweep or {}, "profiles": profiles or {}}, "s.yaml")
    return points_for(suite, device, parse_sets(list(sets)), "s.yaml")[1]


def test_grid_is_cartesian_first_axis_slowest():
    pts = points({"grid": {"strategies.attention": ["dense", {"name": "local", "window": 4}],
                           "workload.seq_len": [16, 32, 64]}})
    assert [p.label for p in pts] == [
        "dense/fused/S16/forward", "dense/fused/S32/forward", "dense/fused/S64/forward",
        "local_w4/fused/S16/forward", "local_w4/fused/S32/forward", "local_w4/fused/S64/forward"]
    assert [p.index for p in pts] == list(range(6)) and len({p.id for p in pts}) == 6


def test_zip_axes_move_together_after_the_grid():
    pts = points({"grid": {"workload.seq_len": [16, 32]},
                  "zip": [{"workload.kind": ["forward", "train"], "strategies.ops": ["eager", "fused"]}]})
    assert [(p.workload.seq_len, p.workload.kind, p.strategies.ops.label) for p in pts] == [
        (16, "forward", "eager"), (16, "train", "fused"), (32, "forward", "eager"), (32, "train", "fused")]


@pytest.mark.parametrize("rule, left", [
    ({"strategies.attention": "local"}, 2),  # by name: 3 patterns x 2 lengths, 4 dropped
    ({"strategies.attention": "local_w8"}, 4),  # by label
    ({"strategies.attention": {"name": "local", "window": 4}}, 4),  # by spec subset
    ({"strategies.attention.window": 4, "workload.seq_len": 16}, 5),  # parameter + field, both must match
    ({"workload.kind": "forward"}, 6),  # the base value: everything matches... nothing left
])
def test_exclude_rules(rule, left):
    sweep = {"grid": {"strategies.attention": ["dense", {"name": "local", "window": 4},
                                               {"name": "local", "window": 8}],
                      "workload.seq_len": [16, 32]},
             "exclude": [rule]}
    if rule == {"workload.kind": "forward"}:
        with pytest.raises(SuiteError, match="every point is excluded"):
            points(sweep)
        return
    assert len(points(sweep)) == left


def test_exclude_drops_invalid_combinations_before_validation():
    sweep = {"grid": {"strategies.attention": ["dense", "local"], "strategies.attention.window": [4, 8]},
             "exclude": [{"strategies.attention": "dense"}]}
    assert [p.label for p in points(sweep)] == ["local_w4/fused/S32/forward", "local_w8/fused/S32/forward"]


def test_ids_are_stable_and_independent_of_position():
    a = points({"grid": {"workload.seq_len": [16, 32]}})
    b = points({"grid": {"workload.seq_len": [32, 16]}})
    assert [p.id for p in a] == [p.id for p in reversed(b)]
    assert [p.seed for p in a] == [int(p.id[:8], 16) for p in a]


def test_every_point_is_validated_with_its_sweep_path_named():
    with pytest.raises(SuiteError) as info:
        points({"grid": {"workload.seq_len": [16, -1]}})
    assert "s.yaml: sweep.grid.workload.seq_len: got -1, allowed: integer >= 1" in str(info.value)
    with pytest.raises(SuiteError, match="sweep.grid.strategies.attention.window: unknown key 'window'; allowed for 'dense'"):
        points({"grid": {"strategies.attention.window": [4]}})


def test_repeated_point_is_an_error():
    with pytest.raises(SuiteError, match="points 0 and 1 are the same experiment"):
        points({"grid": {"workload.seq_len": [16, 16]}})


def test_profile_of_the_device_is_applied():
    profiles = {"cpu": {"workload.seq_len": [16], "measure.max_samples": 12},
                "cuda": {"workload.seq_len": [64, 128], "model.preset": "gpt-125m"}}
    sweep = {"grid": {"workload.seq_len": [32, 48]}}
    cpu, cuda = points(sweep, profiles), points(sweep, profiles, device="cuda")
    assert [p.workload.seq_len for p in cpu] == [16] and cpu[0].measure.max_samples == 12
    assert [p.workload.seq_len for p in cuda] == [64, 128] and cuda[0].model.preset == "gpt-125m"
    assert {p.device for p in cuda} == {"cuda"} and cpu[0].id not in {p.id for p in cuda}


def test_profile_errors_name_the_profile():
    with pytest.raises(SuiteError, match="profiles.cpu.workload.seq_lne: unknown key 'seq_lne'"):
        points(profiles={"cpu": {"workload.seq_lne": 3}})
    with pytest.raises(SuiteError, match="s.yaml: profiles.cpu.workload.batch_size: got 0, allowed: integer >= 1"):
        points(profiles={"cpu": {"workload.batch_size": 0}})


def test_set_overrides_pin_create_and_replace_axes():
    sweep = {"grid": {"workload.seq_len": [16, 32]},
             "zip": [{"workload.kind": ["forward", "train"], "strategies.ops": ["eager", "fused"]}]}
    assert len(points(sweep, sets=["workload.seq_len=16"])) == 2  # pinned: axis removed
    assert len(points(sweep, sets=["workload.batch_size=[1,2,3]"])) == 12  # new grid axis
    pts = points(sweep, sets=["workload.kind=[train,generate]", "model.d_model=32"])  # zip axis replaced
    assert [p.workload.kind for p in pts[:2]] == ["train", "generate"]
    assert pts[0].model.overrides == {"d_model": 32}  # model.<field> is model.overrides.<field>
    with pytest.raises(SuiteError, match="sweep.zip\\[0\\]: lists of different lengths"):
        points(sweep, sets=["workload.kind=[train]"])
    assert [p.label.split("/")[-1] for p in points(sets=["workload.batch_size=[1,2]"])] == \
        ["batch_size=1", "batch_size=2"]


def test_set_applies_after_the_profile():
    profiles = {"cpu": {"workload.seq_len": 16}}
    assert points(profiles=profiles)[0].workload.seq_len == 16
    assert points(profiles=profiles, sets=["workload.seq_len=24"])[0].workload.seq_len == 24


@pytest.mark.parametrize("item, expected", [
    ("workload.seq_len", "--set 'workload.seq_len': allowed: PATH=VALUE"),
    ("workload.batchsize=3", "--set workload.batchsize: unknown key 'batchsize' (did you mean 'batch_size'?)"),
    ("workload.seq_len=[1,", "--set workload.seq_len: value '[1,': "),
    ("sweep.gird=[]", "--set sweep.gird: unknown key 'sweep.gird'"),
    ("workload.lengths={distribution: fixed, distribution: uniform}",
     "duplicate key 'distribution' (first at line 1, again at line 1)"),
    ("workload.seq_len=[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
     "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
     "[*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]]", "values once anchors and aliases are expanded"),
])
def test_bad_set_items(item, expected):
    with pytest.raises(SuiteError) as info:
        parse_sets([item])
    assert expected in str(info.value)


def test_resolved_suite_has_no_profiles_and_a_fixed_device():
    suite = parse_suite({**BASE, "profiles": {"cpu": {"workload.seq_len": 16}}}, "s")
    resolved = resolve(suite, "cpu")
    assert resolved.profiles == {} and resolved.device == "cpu" and resolved.workload.seq_len == 16
    assert [p.id for p in expand(resolved, "cpu")] == [p.id for p in expand(resolved, "cpu")]


def test_a_sweep_too_large_is_refused_before_any_point_is_built(monkeypatch):
    sweep = {"grid": {"workload.seq_len": list(range(1, 51)), "workload.batch_size": list(range(1, 51))}}
    suite = parse_suite({**BASE, "sweep": sweep}, "s.yaml")
    monkeypatch.setattr("harness.suite.sweep.PointConfig", None)  # building a point would fail
    with pytest.raises(SuiteError, match=r"s.yaml: sweep: 2,500 points \(50 \(sweep.grid.workload.seq_len\) "
                                         r"x 50 \(sweep.grid.workload.batch_size\)\); allowed: at most 2,000"):
        points_for(suite, "cpu", [], "s.yaml")
