"""What ``tbench list`` shows: the strategies of every axis with their documented parameters
(``registry.describe``), the model presets, and the metric names with their units.
Each function returns a rich Table; nothing here runs a model."""
from __future__ import annotations

from rich.table import Table

from implementations import registry

UNITS = (  # metric-name suffix -> unit, first match wins
    ("energy_j_per_step", "J"), ("energy_j_per_token", "J"), ("energy_j_point", "J"),
    ("sdpa_backends", "list"), ("warmup_steps", "count"), ("energy_j_all_ranks", "J"),
    ("throttled_any_rank", "bool"), ("flex_block_masks", "count"),
    ("attention_products", "count"), ("flops_method", "analytic | flop_counter"),
    ("mem_bw_util", "fraction of peak"), ("hfu", "fraction of peak"), ("_gbs", "GB/s"),
    ("_rel_diff", "relative"), ("kv_cache_slots", "count"),
    ("generated_tokens_per_step", "tokens"), ("hardware_flops_per_step", "FLOP"),
    ("_ms", "ms"), ("_ms_p50", "ms"), ("tflops_per_s", "TFLOP/s"), ("tokens_per_s", "tokens/s"),
    ("samples_per_s", "samples/s"), ("_bytes", "bytes"), ("_bytes_max", "bytes"), ("energy_j", "J"),
    ("power_w_mean", "W"), ("_pct_mean", "%"), ("_mhz_min", "MHz"), ("_mhz_median", "MHz"),
    ("_mhz_max", "MHz"), ("_c_max", "degrees C"), ("_s", "s"), ("flops_per_step", "FLOP"),
    ("peak_tflops", "TFLOP/s"), ("mfu", "fraction of peak (causal attention: S(S+1)/2 pairs)"),
    ("mfu_palm", "fraction of peak, PaLM's convention (S^2 attention pairs)"),
    ("flops_per_step_palm", "FLOP, PaLM's convention"), ("padding_efficiency", "fraction"),
    ("n_samples", "count"), ("amp_skipped_steps", "count"), ("throttled", "bool"), ("power_capped", "bool"),
    ("throttle_reasons", "list"), ("loss_parity_ok", "bool"), ("model_state_imbalance", "max/mean"),
)


def unit_of(metric: str) -> str:
    if "_ms_" in metric or metric.endswith("_ms"):
        return "ms"
    for suffix, unit in UNITS:
        if metric.endswith(suffix):
            return unit
    return "-"


def strategy_tables() -> list[Table]:
    tables = []
    for axis in registry.AXES:
        table = Table(title=f"{axis} strategies", title_justify="left")
        rows = registry.describe(axis)
        refuses = any(row["refuses"] for row in rows)  # the axis states what each cannot run
        for name in ("name", "summary", "parameters") + (("not supported",) if refuses else ()):
            table.add_column(name, overflow="fold")
        for row in rows:
            shown = [p for p in row["params"] if not (axis == "attention" and p["name"] == "kernel")]
            params = "\n".join(f"{p['name']}: {p['type']} = {p['default']!r}  {p['doc']}".rstrip()
                                for p in shown) or "-"
            table.add_row(row["name"], row["summary"], params, *([row["refuses"]] if refuses else []))
        tables.append(table)
        if axis == "attention":
            tables.append(kernels_table())
    return tables


def kernels_table() -> Table:
    """How an attention pattern is computed: its ``kernel`` parameter (every pattern has it)."""
    from implementations.attention.base import KERNELS

    table = Table(title="attention kernels (strategies.attention.kernel, every pattern; "
                        "not supported = recorded with its reason)", title_justify="left")
    for name in ("kernel", "computes", "runs on", "not supported"):
        table.add_column(name, overflow="fold")
    for name, (doc, where, refused) in KERNELS.items():
        table.add_row(name, doc, where, refused)
    return table


def presets_table() -> Table:
    """The presets with their parameters, beside the published count of the model a preset is
    named after (``implementations.presets.PUBLISHED``)."""
    from harness.suite.schema import preset_names
    from implementations.flops import param_count
    from implementations.presets import PRESETS, PUBLISHED

    table = Table(title="model presets (model.preset; fields settable in model.overrides; any "
                        "transformers model: model.hf, any nn.Module: model.module)",
                  title_justify="left")
    keys = ("d_model", "n_heads", "n_kv_heads", "d_ff", "max_seq_len", "vocab_size")
    table.add_column("preset", no_wrap=True)
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column("layers (enc+dec)", justify="right")
    table.add_column("positions / ffn / norm")
    table.add_column("parameters", justify="right", no_wrap=True)
    table.add_column("published", overflow="fold")
    for name in preset_names():
        f = PRESETS[name]
        published = PUBLISHED.get(name)
        note = "-" if published is None else (f"{published[0]}: {published[1]:,}"
                                              + (f"; {published[2]}" if published[2] else ""))
        arch = f"{f['positions']} / {f.get('ffn', 'relu')} / {f.get('norm_type', 'layer')}"
        table.add_row(name, *(str(f.get(k, "-")) for k in keys),
                      f"{f['n_encoder_layers']}+{f['n_decoder_layers']}", arch,
                      f"{param_count(f):,}", note)
    return table


def metrics_table() -> Table:
    from harness.records import METRICS

    table = Table(title="metrics (results.jsonl 'metrics'; null = not available)", title_justify="left")
    table.add_column("metric")
    table.add_column("unit")
    for name in METRICS:
        table.add_row(name, unit_of(name))
    return table
