"""Suite and Point models: strict validation with clear messages, strategy objects, ids."""
import hashlib
import json
import typing

import pytest

from harness.suite.errors import SuiteError
from harness.suite.loader import Suite, load_suite, parse_suite
from harness.suite.point import Point, PointConfig
from implementations import registry


def errors_of(data) -> str:
    with pytest.raises(SuiteError) as info:
        parse_suite(data, "s.yaml")
    return str(info.value)


@pytest.mark.parametrize("data, expected", [
    ({"name": "t", "workload": {"seq_len": 0}}, "s.yaml: workload.seq_len: got 0, allowed: integer >= 1"),
    ({"name": "t", "workload": {"seq_len": "128"}}, "workload.seq_len: got '128', allowed: integer >= 1"),
    ({"name": "t", "workload": {"seq_lne": 3}},
     "workload.seq_lne: unknown key 'seq_lne' (did you mean 'seq_len'?); allowed: kind,"),
    ({"name": "t", "workload": {"kind": "trian"}},
     "workload.kind: got 'trian', allowed: one of 'train', 'forward', 'generate', 'prefill', 'decode' "
     "(did you mean 'train'?)"),
    ({"name": "t", "workload": {"kind": "decode"}},
     "workload.context_len: required for kind 'decode' (cached positions before the step)"),
    ({"name": "t", "workload": {"kind": "prefill", "context_len": 64}},
     "workload.context_len: got 64, allowed: only with kind 'decode' (kind is 'prefill')"),
    ({"name": "t", "strategies": {"compression": {"name": "magnitude", "sparsity": 1.5}}},
     "strategies.compression.sparsity: got 1.5, allowed: number > 0 and < 1"),
    ({"name": "t", "measure": {"min_samples": 5}}, "measure.min_samples: got 5, allowed: integer >= 10"),
    ({"name": "t", "measure": {"min_samples": 20, "max_samples": 15}},
     "measure.max_samples: got 15, allowed: >= min_samples (20)"),
    ({"name": "t", "workload": {"lengths": {"distribution": "normal", "mean": 3}}},
     "workload.lengths.std: required for distribution 'normal'"),
    ({"name": "t", "workload": {"lengths": {"distribution": "uniform", "alpha": 1.0}}},
     "workload.lengths.alpha: not used by distribution 'uniform'; allowed: low, high"),
    ({"name": "t", "model": {"preset": "gpt-12m"}}, "model.preset: got 'gpt-12m', allowed:"),
    ({"name": "t", "model": {"overrides": {"d_modle": 64}}},
     "model.overrides.d_modle: unknown key 'd_modle' (did you mean 'd_model'?)"),
    ({"name": "t", "model": {"overrides": {"d_model": "wide"}}},
     "model.overrides.d_model: got 'wide', allowed: integer"),
    ({"name": "t", "model": {"overrides": {"d_model": 66}}}, "model.overrides.d_model: ModelConfig.d_model must be divisible"),
    ({"name": "t", "strategies": {"attention": {"name": "local", "window": -1}}},
     "strategies.attention.window: got -1, allowed: integer >= 0"),
    ({"name": "t", "strategies": {"attention": {"name": "local", "windw": 3}}},
     "strategies.attention.windw: unknown key 'windw' (did you mean 'window'?); allowed for 'local': name, kernel, window"),
    ({"name": "t", "strategies": {"parallel": {"name": "zero", "stage": 1, "offload_params": True}}},
     "strategies.parallel.offload_params: offload_params=True needs stage 3, got stage=1"),
    ({"name": "t", "strategies": {"attention": "lcoal"}},
     "strategies.attention.name: got 'lcoal', allowed: atrous, bigbird, block, dense, linformer, local, longformer, topk (did you mean 'local'?)"),
    ({"name": "t", "strategies": {"attention": {"window": 3}}}, "strategies.attention.name: required, missing"),
    ({"name": "t", "strategies": {"attenton": "dense"}},
     "strategies.attenton: unknown key 'attenton' (did you mean 'attention'?)"),
    ({"name": "t", "profiles": {"gpu": {}}}, "profiles.gpu: unknown key 'gpu' (did you mean 'cpu'?)"),
    ({"name": "t", "sweep": {"grid": {"workload.seq_len": []}}}, "sweep.grid.workload.seq_len: got [], allowed: a non-empty list"),
    ({"name": "t", "sweep": {"zip": [{"workload.seq_len": [1, 2], "workload.kind": ["train"]}]}},
     "sweep.zip[0]: lists of different lengths [1, 2]; allowed: equal lengths"),
    ({"name": "t", "sweep": {"exclude": [{"strategies.atention": "dense"}]}},
     "sweep.exclude[0].strategies.atention: unknown key 'atention' (did you mean 'attention'?)"),
    ({"name": "t", "sweep": {"grid": {"strategies.attention.windoww": [1]}}},
     "sweep.grid.strategies.attention.windoww: unknown key 'windoww' (did you mean 'window'?)"),
    ({"name": "t", "sweep": {"grid": {"workload.seq_len.x": [1]}}}, "workload.seq_len has no sub-fields"),
    ({"name": "bad name/"}, "name: got 'bad name/', allowed: text matching"),
    (["not", "a", "mapping"], "s.yaml: got list, allowed: a mapping"),
])
def test_bad_suite_is_refused_with_path_given_and_allowed(data, expected):
    assert expected in errors_of(data)


def test_strategies_are_held_as_objects_and_serialise_back():
    suite = parse_suite({"name": "t", "strategies": {"attention": {"name": "local", "window": 8}}}, "s")
    attention = suite.strategies.attention
    assert attention.label == "local_w8" and attention == registry.create("attention", {"name": "local", "window": 8})
    assert suite.model_dump(mode="json")["strategies"]["attention"] == {"name": "local", "window": 8}
    assert suite.strategies.ops == registry.create("ops", "fused")  # the documented default
    assert suite.strategies.padding.label == "fixed" and suite.strategies.precision.label == "fp32"


def _point(**workload) -> Point:
    config = PointConfig.model_validate({"device": "cpu", "model": {"preset": "tiny"},
                                         "workload": {"seq_len": 32, **workload},
                                         "strategies": {"attention": "dense"}, "measure": {}})
    return Point.build(config, suite="t", index=0, label="x")


def test_point_id_is_sha1_of_canonical_config_and_seed_derives_from_it():
    point = _point()
    data = point.to_json()
    config = {k: data[k] for k in ("device", "model", "workload", "strategies", "measure")}
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    assert point.id == hashlib.sha1(canonical.encode()).hexdigest()[:12]
    assert point.seed == int(point.id[:8], 16)
    assert _point().id == point.id and _point(batch_size=3).id != point.id


def test_point_json_round_trip_is_exact_and_revalidated():
    point = _point(kind="train")
    data = json.loads(json.dumps(point.to_json()))
    assert Point.from_json(data) == point and Point.from_json(data).to_json() == data
    with pytest.raises(ValueError, match="the hash of the config"):
        Point.from_json({**data, "id": "0" * 12})
    with pytest.raises(ValueError, match="extra"):
        Point.from_json({**data, "workload": {**data["workload"], "seqlen": 3}})


def test_seq_len_beyond_the_model_is_refused():
    with pytest.raises(ValueError, match="got 300 \\(seq_len\\), allowed: <= the model's max_seq_len 256"):
        _point(seq_len=300)


def test_load_suite_file_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SuiteError, match="nope.yaml: file not found"):
        load_suite(missing)
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"name: !!python/object/apply:os.system ['touch {tmp_path}/owned']\n")
    with pytest.raises(SuiteError, match="YAML tag refused"):
        load_suite(evil)
    assert not (tmp_path / "owned").exists()
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: t\nworkload: {seq_len: [1,\n")
    with pytest.raises(SuiteError, match="broken.yaml: line .*invalid YAML"):
        load_suite(broken)
    assert isinstance(load_suite(_write(tmp_path, "name: ok\n")), Suite)


def _write(tmp_path, text):
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    return path


def test_lengths_spec_checks_the_samplers_own_parameter_table():
    from harness.suite.schema import LengthsSpec
    from implementations.padding.lengths import PARAMS

    assert set(typing.get_args(LengthsSpec.model_fields["distribution"].annotation)) == set(PARAMS)
    for dist, (required, optional) in PARAMS.items():
        assert set(required + optional) <= set(LengthsSpec.model_fields), dist
