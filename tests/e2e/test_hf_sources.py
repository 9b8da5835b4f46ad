"""Model sources in a suite: ``model.hf`` and ``model.module``. Bad ones are one line and exit 2
with nothing run; good ones run every workload through the real worker; ids stay content-based.

``tiny_mlp`` below is the ``model.module`` factory of these tests (``tests.e2e.test_hf_sources:tiny_mlp``).
"""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from harness import records
from harness.run import lifecycle
from harness.run.plan import points_plan
from harness.suite.loader import load_suite, parse_suite
from harness.suite.sweep import expand
from tests.e2e.test_cli import invoke

LLAMA = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 128,
         "max_position_embeddings": 256}
FAST = {"warmup_iters": 1, "warmup_s": 0.0, "min_samples": 10, "min_time_s": 0.0, "max_samples": 10,
        "rounds": 1, "threads": 1}


class TinyMLP(torch.nn.Module):
    """A module source: an embedding and an MLP over token ids, declaring its inputs and loss."""

    def __init__(self, vocab: int = 64, width: int = 32):
        super().__init__()
        self.emb, self.mlp = torch.nn.Embedding(vocab, width), torch.nn.Linear(width, vocab)
        self.vocab = vocab

    def forward(self, ids):
        return self.mlp(torch.relu(self.emb(ids)))  # (B, S, V)

    def tbench_inputs(self, batch_size: int, seq_len: int, seed: int) -> dict:
        gen = torch.Generator().manual_seed(seed)
        return {"ids": torch.randint(0, self.vocab, (batch_size, seq_len), generator=gen)}

    def tbench_loss(self, output, inputs):
        return torch.nn.functional.cross_entropy(output.flatten(0, 1), inputs["ids"].flatten())


def tiny_mlp(**kwargs) -> TinyMLP:
    return TinyMLP(**kwargs)


def suite(tmp_path, model: dict, name="s.yaml", **extra) -> str:
    data = {"name": "t", "model": model, "workload": {"seq_len": 16, "batch_size": 2}, "measure": FAST,
            **extra}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


BAD = [  # (model section, expected line)
    ({"hf": {"config": "missing.json"}}, "s.yaml: model.hf.config: got 'missing.json': file not found: "),
    ({"hf": {"model_type": "lama"}},
     "model.hf.model_type: got 'lama', allowed: a model type transformers builds a causal or seq2seq "
     "LM for (did you mean 'llama'?)"),
    ({"hf": {"config": "meta-llama/Llama-3.2-1B"}},
     "model.hf.config: got 'meta-llama/Llama-3.2-1B': not a local file or folder, and a hub name is "
     "not downloaded (this machine is offline; tbench never downloads)"),
    ({"hf": dict(LLAMA, hidden_sise=32)}, "model.hf.hidden_sise: unknown key 'hidden_sise' (did you "
                                          "mean 'hidden_size'?)"),
    ({"hf": dict(LLAMA, hidden_size=30)}, "model.hf: transformers cannot build this llama config: The "
                                          "hidden size (30) is not a multiple of the number of attention heads (4)"),
    ({"hf": "llama"}, "model.hf: got 'llama', allowed: a mapping {config: path} or {model_type: ..., config fields}"),
    ({"module": "no_such_package.models:make"},
     "model.module: got 'no_such_package.models:make': module 'no_such_package.models' does not import "
     "(ModuleNotFoundError"),
    ({"module": "tests.e2e.test_hf_sources:nope"}, "model.module: got 'tests.e2e.test_hf_sources:nope': "
                                               "tests.e2e.test_hf_sources has no callable 'nope'"),
    ({"module": "not a target"}, "model.module: got 'not a target', allowed: 'package.module:factory'"),
    ({"hf": LLAMA, "preset": "tiny"}, "model.preset: preset describes tbench's own Transformer"),
    ({"hf": LLAMA, "module": "tests.e2e.test_hf_sources:tiny_mlp"}, "model.module: got both 'hf' and 'module'"),
    ({"preset": "tiny", "kwargs": {"width": 3}}, "model.kwargs: kwargs are a model.module factory's arguments"),
]


@pytest.mark.parametrize("model, expected", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_model_sources_exit_2_in_one_line_and_run_nothing(tmp_path, monkeypatch, model, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("harness.run.lifecycle.sweep", lambda *a, **k: pytest.fail("a point ran"))
    result = invoke("run", suite(tmp_path, model), "--out", tmp_path / "run", "--device", "cpu")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_a_config_file_is_read_from_the_suite_folder_and_the_id_follows_its_content(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tiny.json").write_text(json.dumps(LLAMA))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "tiny.json").write_text(json.dumps(LLAMA))
    ids = []
    for folder in ("a", "b"):
        (point,) = expand(load_suite(suite(tmp_path / folder, {"hf": {"config": "tiny.json"}})), "cpu")
        assert point.model.preset == "hf:tiny" and point.to_json()["model"] == {"hf": dict(LLAMA, name="tiny")}
        ids.append(point.id)
    assert ids[0] == ids[1]  # the same config, wherever the file lies
    (point,) = expand(load_suite(suite(tmp_path / "a", {"hf": {"config": "tiny.json",
                                                               "num_hidden_layers": 1}})), "cpu")
    assert point.id != ids[0] and point.model.source.n_decoder_layers == 1


def test_a_checkpoint_folder_loads_its_weights(tmp_path):
    from implementations.hf.config import resolve
    from implementations.hf.model import HfModelConfig

    torch.manual_seed(0)
    model = HfModelConfig.from_spec(resolve(LLAMA, None)).build()
    model.hf.save_pretrained(tmp_path / "ckpt")
    (point,) = expand(load_suite(suite(tmp_path, {"hf": {"config": "ckpt"}})), "cpu")
    assert point.model.source.checkpoint == str(tmp_path / "ckpt")
    torch.manual_seed(1)  # another seed: only loaded weights can match
    loaded = point.model.source.build()
    for (name, a), (_, b) in zip(model.hf.state_dict().items(), loaded.hf.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
    line = invoke("run", suite(tmp_path, {"hf": {"config": "ckpt", "num_hidden_layers": 1}}),
                  "--dry-run").output
    assert "model.hf.num_hidden_layers: a checkpoint's fields are those of its weights" in line


@pytest.mark.slow
def test_every_workload_and_axis_runs_on_a_transformers_model(tmp_path):
    """Through the real workers: train (with checkpointing and packed rows), forward, prefill,
    decode, generate; FLOPs counted and said so; what cannot run is not_supported with why."""
    varied = {"distribution": "uniform", "low": 4, "high": 16}
    data = {"name": "hf", "model": {"hf": LLAMA}, "workload": {"seq_len": 16, "batch_size": 2,
                                                               "new_tokens": 3},
            "measure": FAST,
            "sweep": {"zip": [{"workload.kind": ["train", "train", "prefill", "decode", "generate",
                                                 "forward"],
                               "workload.context_len": [None, None, None, 8, None, None],
                               "workload.lengths": [varied, None, None, None, None, None],
                               "strategies.memory": ["full", {"name": "selective", "part": "ffn"},
                                                     "none", "none", "none", "none"],
                               "strategies.padding": ["packed", "fixed", "fixed", "fixed", "fixed",
                                                      "fixed"],
                               "strategies.attention": [{"name": "local", "window": 4}, "dense",
                                                        "dense", {"name": "local", "window": 4},
                                                        "dense", {"name": "linformer", "k": 4}]}]}}
    points = expand(parse_suite(data, "t"), "cpu")
    lifecycle.run(points_plan(points, tmp_path), reports=False)
    recs = {r["params"]["kind"] + "/" + r["label"]: r for r in records.read_records(tmp_path)}
    assert len(recs) == 6
    for key, rec in recs.items():
        if "linformer" in key:
            assert rec["status"] == "not_supported" and "owns projection weights" in rec["error"]
            continue
        assert rec["status"] == "ok", (key, rec["error"])
        m = rec["metrics"]
        assert rec["params"]["preset"] == "hf:llama"
        assert m["flops_method"] == "flop_counter"
        assert (m["flops_per_step"] is None) == (rec["params"]["kind"] == "generate")
        assert m["mem_predicted_bytes"] > 0
    decode = next(r for k, r in recs.items() if k.startswith("decode"))["metrics"]
    assert decode["kv_cache_bytes"] == decode["kv_cache_analytic_bytes"] > 0
    checkpointed = [r["metrics"] for k, r in recs.items() if k.startswith("train")]
    assert all(m["hardware_flops_per_step"] > m["flops_per_step"] for m in checkpointed)
    for key, rec in recs.items():  # the published convention charges causal attention S^2 pairs
        palm = rec["metrics"].get("flops_per_step_palm")
        if key.split("/")[0] in ("train", "forward", "prefill") and rec["status"] == "ok":
            assert palm > rec["metrics"]["flops_per_step"], key
        elif rec["status"] == "ok":
            assert palm is None, key  # decoding: no published convention to meet


def test_a_module_factory_trains_and_says_what_it_cannot_run(tmp_path):
    data = {"name": "m", "model": {"module": "tests.e2e.test_hf_sources:tiny_mlp", "kwargs": {"width": 16}},
            "workload": {"seq_len": 8, "batch_size": 2, "kind": "train"}, "measure": FAST,
            "sweep": {"grid": {"strategies.attention": ["dense", {"name": "local", "window": 2}]}}}
    points = expand(parse_suite(data, "t"), "cpu")
    assert points[0].model.preset == "module:tests.e2e.test_hf_sources:tiny_mlp"
    assert points[0].to_json()["model"] == {"module": "tests.e2e.test_hf_sources:tiny_mlp", "kwargs": {"width": 16}}
    lifecycle.run(points_plan(points, tmp_path), reports=False)
    dense, local = sorted(records.read_records(tmp_path), key=lambda r: r["label"])
    assert dense["status"] == "ok", dense["error"]
    assert dense["metrics"]["flops_per_step"] == 3 * 2 * 2 * 8 * 16 * 64  # the Linear, forward + backward
    assert dense["metrics"]["flops_per_step_palm"] is None  # an opaque count has no attention part
    assert local["status"] == "not_supported" and "its attention is the module's own" in local["error"]


@pytest.mark.slow
def test_parallel_compile_compression_and_parity_run_on_a_transformers_model(tmp_path):
    """FSDP and ZeRO on 2 ranks, torch.compile, int8 weight-only quantization (its quality cost
    recorded), FlexAttention and the mask kernel inside the model, bf16 with loss parity."""
    data = {"name": "hf", "model": {"hf": LLAMA}, "workload": {"seq_len": 16, "batch_size": 2},
            "measure": FAST,
            "sweep": {"zip": [{
                "workload.kind": ["train", "train", "train", "forward", "forward", "train"],
                "strategies.parallel": [{"name": "fsdp", "nproc": 2}, {"name": "zero", "nproc": 2},
                                        "none", "none", "none", "none"],
                "strategies.ops": ["fused", "fused", {"name": "fused", "compile": True}, "fused",
                                   "fused", "fused"],
                "strategies.compression": ["none", "none", "none", "int8_weight_only", "none", "none"],
                "strategies.attention": ["dense", "dense", {"name": "local", "window": 4}, "dense",
                                         {"name": "local", "window": 4, "kernel": "flex"},
                                         {"name": "block", "block_size": 4, "kernel": "mask"}],
                "workload.parity_steps": [0, 0, 0, 0, 0, 3],
                "strategies.precision": ["fp32", "fp32", "fp32", "fp32", "fp32", "amp_bf16"]}]}}
    points = expand(parse_suite(data, "t"), "cpu")
    lifecycle.run(points_plan(points, tmp_path), reports=False)
    recs = records.read_records(tmp_path)
    assert [r["status"] for r in recs] == ["ok"] * 6, [(r["label"], r["error"]) for r in recs]
    by = {r["label"]: r["metrics"] for r in recs}
    quantized = next(m for k, m in by.items() if "int8" in k)
    assert 0 < quantized["compression_logits_rel_diff"] < 0.05
    assert next(m for k, m in by.items() if "parity" in k and "amp_bf16" in k)["loss_parity_ok"]
