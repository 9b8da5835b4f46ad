"""Padding strategies and length distributions: what lands in a Batch, and that the model sees
the same sequence the same way whether it is padded, bucketed or packed."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from implementations import registry
from implementations.padding.base import FIRST_CONTENT_ID, IGNORE_INDEX
from implementations.padding.lengths import sample_lengths

STRATEGIES = ["fixed", "dynamic", "bucketed", "packed"]
LENGTHS = [5, 17, 3, 30, 9, 12, 1, 25, 40, 8]  # 40 > max_length: truncated everywhere
MAX_LEN = 32


def make(name, lengths=LENGTHS, batch_size=3, max_length=MAX_LEN, vocab=256, seed=7, pad_id=0, **params):
    strategy = registry.create("padding", {"name": name, **params})
    return strategy.make_batches(lengths, batch_size, max_length, vocab, seed, pad_id)


def sequences_of(batch):
    """(row, positions) of every real sequence in a batch."""
    out = []
    for r in range(batch.tokens.shape[0]):
        if batch.segment_ids is not None:
            segs = batch.segment_ids[r]
        elif batch.key_padding_mask is not None:
            segs = batch.key_padding_mask[r].long()
        else:
            segs = torch.ones_like(batch.tokens[r])
        for s in segs.unique().tolist():
            if s > 0:
                out.append((r, (segs == s).nonzero().flatten()))
    return out


# ---------------------------------------------------------------- lengths


@pytest.mark.parametrize("spec", [
    {"distribution": "fixed", "length": 20},
    {"distribution": "uniform", "low": 4, "high": 60},
    {"distribution": "normal", "mean": 50, "std": 30},
    {"distribution": "lognormal", "median": 40, "sigma": 1.0},
    {"distribution": "lognormal", "mean": 3.5, "sigma": 0.5},
    {"distribution": "zipf", "alpha": 1.2},
])
def test_lengths_are_seeded_and_clipped(spec):
    a = sample_lengths(spec, 500, seed=3, max_length=64)
    assert a == sample_lengths(spec, 500, seed=3, max_length=64)
    assert all(isinstance(n, int) and 1 <= n <= 64 for n in a)
    if spec["distribution"] != "fixed":
        assert a != sample_lengths(spec, 500, seed=4, max_length=64)


def test_lengths_follow_their_parameters():
    assert sample_lengths(None, 5, 0, 77) == [77] * 5
    uni = sample_lengths({"distribution": "uniform", "low": 10, "high": 12}, 300, 0, 100)
    assert set(uni) == {10, 11, 12}
    logn = sample_lengths({"distribution": "lognormal", "median": 50, "sigma": 1.0}, 4000, 0, 10_000)
    assert 45 <= np.median(logn) <= 55  # median = exp(mu)
    assert np.mean(logn) > 1.4 * np.median(logn)  # long right tail: mean = median * exp(sigma^2/2)
    mu = sample_lengths({"distribution": "lognormal", "mean": np.log(50), "sigma": 1.0}, 4000, 0, 10_000)
    assert mu == logn  # "mean" is the underlying normal's mean
    zipf = sample_lengths({"distribution": "zipf", "alpha": 1.5, "low": 2, "high": 500}, 4000, 0, 512)
    assert min(zipf) >= 2 and max(zipf) <= 500 and np.median(zipf) < 10 and max(zipf) > 100


def test_lengths_from_files(tmp_path):
    (tmp_path / "lengths.txt").write_text("3\n700\n\n12\n")
    assert sample_lengths({"distribution": "file", "path": str(tmp_path / "lengths.txt")}, 5, 0, 512) \
        == [3, 512, 12, 3, 512]  # clipped, cycled
    (tmp_path / "corpus.txt").write_text("the cat sat\n\nhello   world\n4 5 6 7\n")
    spec = {"distribution": "file", "path": str(tmp_path / "corpus.txt")}
    assert sample_lengths(spec, 3, 0, 512) == [3, 2, 4]
    spec = {"distribution": "file", "path": str(tmp_path / "lengths.txt"), "format": "text"}
    assert sample_lengths(spec, 3, 0, 512) == [1, 1, 1]


@pytest.mark.parametrize("spec, field", [
    ({"distribution": "gamma"}, "distribution"),
    ({"distribution": "uniform", "low": 9, "high": 3}, "low"),
    ({"distribution": "normal", "mean": 10}, "std"),
    ({"distribution": "lognormal", "median": -5, "sigma": 1}, "median"),
    ({"distribution": "zipf", "alpha": 0}, "alpha"),
    ({"distribution": "lognormal", "median": 30, "mean": 3.0, "sigma": 1}, "median"),
    ({"distribution": "normal", "mean": 10, "std": 1, "alpha": 2}, "alpha"),
    ({"distribution": "file", "path": "x", "format": "csv"}, "format"),
])
def test_bad_length_specs_name_the_field(spec, field):
    with pytest.raises(ValueError, match=field):
        sample_lengths(spec, 10, 0, 64)


# ---------------------------------------------------------------- batches


@pytest.mark.parametrize("name", STRATEGIES)
def test_batch_contract(name):
    batches = make(name)
    assert sum(b.real_tokens for b in batches) == sum(min(n, MAX_LEN) for n in LENGTHS)
    n_seqs = 0
    for b in batches:
        B, S = b.tokens.shape
        assert b.tokens.dtype == b.targets.dtype == torch.long and S <= MAX_LEN
        assert b.processed_tokens == B * S
        real = b.key_padding_mask if b.key_padding_mask is not None else torch.ones(B, S, dtype=torch.bool)
        assert int(real.sum()) == b.real_tokens
        assert (b.targets[~real] == IGNORE_INDEX).all() and (b.tokens[~real] == 0).all()
        assert (b.targets[real] >= FIRST_CONTENT_ID).all() and (b.tokens[real] >= FIRST_CONTENT_ID).all()
        for r, pos in sequences_of(b):
            n_seqs += 1
            assert (pos == torch.arange(pos[0], pos[0] + len(pos))).all()  # contiguous
            if b.position_ids is not None:
                assert (b.position_ids[r, pos] == torch.arange(len(pos))).all()
            # next-token targets stay inside the sequence
            assert (b.targets[r, pos[:-1]] == b.tokens[r, pos[1:]]).all()
    assert n_seqs == len(LENGTHS)


def test_content_does_not_depend_on_the_strategy():
    def contents(name):
        return sorted(tuple(b.tokens[r, pos].tolist()) + tuple(b.targets[r, pos].tolist())
                      for b in make(name) for r, pos in sequences_of(b))
    ref = contents("fixed")
    assert all(contents(name) == ref for name in STRATEGIES[1:])
    assert make("fixed", seed=8)[0].tokens.tolist() != make("fixed")[0].tokens.tolist()


def test_widths_per_strategy():
    assert all(b.tokens.shape[1] == MAX_LEN for b in make("fixed"))
    dyn = make("dynamic")
    assert [b.tokens.shape[1] for b in dyn] == [17, 30, 32, 8]  # longest of each batch, in order
    assert [b.tokens.shape[1] for b in make("dynamic", pad_to_multiple=8)] == [24, 32, 32, 8]
    buck = make("bucketed", shuffle=False)
    assert [b.tokens.shape[1] for b in buck] == [5, 12, 30, 32]  # sorted lengths in groups of 3
    shuffled = make("bucketed")
    assert sorted(b.tokens.shape[1] for b in shuffled) == [5, 12, 30, 32]
    assert [b.tokens.shape[1] for b in shuffled] == [b.tokens.shape[1] for b in make("bucketed")]


def test_packed_rows_are_full_and_marked():
    batches = make("packed", batch_size=2)
    rows = [(b, r) for b in batches for r in range(b.tokens.shape[0])]
    assert len(rows) == 5  # 142 real tokens need ceil(142 / 32) = 5 rows; best fit achieves it
    for b, r in rows:
        seg = b.segment_ids[r]
        real = b.key_padding_mask[r] if b.key_padding_mask is not None else torch.ones_like(seg, dtype=torch.bool)
        assert ((seg > 0) == real).all()
        tail = (~real).nonzero().flatten()
        assert len(tail) == 0 or tail[0] == real.sum()  # padding only at the tail of a row


@pytest.mark.parametrize("name, params", [("dynamic", {"pad_to_multiple": 0}), ("bucketed", {"pool_batches": -1}),
                                          ("packed", {"best_fit": "yes"})])
def test_bad_parameters_name_the_field(name, params):
    with pytest.raises(ValueError, match=f"{next(iter(params))}.*got"):
        registry.create("padding", {"name": name, **params})
    with pytest.raises(ValueError, match="batch_size"):
        make("fixed", batch_size=0)


def test_padding_efficiency_on_a_long_tailed_lognormal():
    lengths = sample_lengths({"distribution": "lognormal", "median": 64, "sigma": 1.0}, 2000, 0, 512)
    assert max(lengths) == 512 and np.mean(lengths) > 1.5 * np.median(lengths)
    eff = {}
    for name in STRATEGIES:
        batches = make(name, lengths=lengths, batch_size=16, max_length=512, seed=0)
        eff[name] = sum(b.real_tokens for b in batches) / sum(b.processed_tokens for b in batches)
    assert eff["fixed"] < 0.25 and eff["dynamic"] < 0.4
    assert eff["bucketed"] >= 0.90
    assert eff["packed"] >= 0.98


# ---------------------------------------------------------------- the model sees the same thing


@pytest.fixture(scope="module")
def lm():
    from implementations.model import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", n_encoder_layers=0, positions="rope", ops="eager")
    return build_model(cfg).eval()


def per_sequence(model, batches):
    """{sequence tokens: (logits at its real positions, summed token loss)}."""
    out = {}
    with torch.no_grad():
        for b in batches:
            logits = model(b.tokens, key_padding_mask=b.key_padding_mask,
                           segment_ids=b.segment_ids, position_ids=b.position_ids)
            token_loss = F.cross_entropy(logits.transpose(1, 2), b.targets, reduction="none")  # (B, S)
            for r, pos in sequences_of(b):
                out[tuple(b.tokens[r, pos].tolist())] = (logits[r, pos], token_loss[r, pos].sum())
    return out


def test_a_sequence_gives_the_same_logits_and_loss_under_every_strategy(lm):
    ref = per_sequence(lm, make("fixed", vocab=lm.cfg.vocab_size))
    assert len(ref) == len(LENGTHS)
    totals = {}
    for name in STRATEGIES:
        batches = make(name, vocab=lm.cfg.vocab_size)
        got = per_sequence(lm, batches)
        assert got.keys() == ref.keys()
        for key, (logits, loss) in got.items():
            torch.testing.assert_close(logits, ref[key][0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(loss, ref[key][1], atol=1e-4, rtol=1e-5)
        with torch.no_grad():  # model.loss (mean over real targets) weighted back to a sum
            totals[name] = sum(float(lm.loss(lm(b.tokens, key_padding_mask=b.key_padding_mask,
                                                segment_ids=b.segment_ids, position_ids=b.position_ids),
                                             b.targets)) * int((b.targets != IGNORE_INDEX).sum())
                               for b in batches)
    assert max(totals.values()) - min(totals.values()) < 1e-3 * totals["fixed"]


def test_packing_keeps_sequences_apart(lm):
    batch = make("packed", lengths=[10, 12, 9], batch_size=1, vocab=lm.cfg.vocab_size)[0]
    assert batch.tokens.shape == (1, 32) and batch.segment_ids[0].max() == 3

    def logits(tokens, segment_ids):
        with torch.no_grad():
            return lm(tokens, key_padding_mask=batch.key_padding_mask, segment_ids=segment_ids,
                      position_ids=batch.position_ids)[0]

    seg = batch.segment_ids[0]
    mine, other = seg == seg[-2], seg == seg[0]  # the last sequence, and the first one
    changed = batch.tokens.clone()
    changed[0, other] = (changed[0, other] + 1 - 3) % (lm.cfg.vocab_size - 3) + 3
    before, after = logits(batch.tokens, batch.segment_ids), logits(changed, batch.segment_ids)
    torch.testing.assert_close(after[mine], before[mine], atol=0, rtol=0)
    assert not torch.allclose(after[other], before[other])
    # control: without segment ids the same change leaks into the later sequence
    assert not torch.allclose(logits(changed, None)[mine], logits(batch.tokens, None)[mine])
