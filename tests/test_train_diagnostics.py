"""Diagnostics records: JSON-lines round trip, the certificate, rank correlation with its interval, the paired
change of held-out accuracy, run summary."""
from __future__ import annotations

import json
import math

import pytest

from teamtr_adapters.train.diagnostics import (DiagnosticsLog, UpdateRecord, certificate, paired_change,
                                               rank_correlation, summarise)


def _rec(i: int, **kw) -> UpdateRecord:
    base = dict(stage=0, update=i, role="critic", method="teamtr", ratio="token", parent=f"p{i}", version=f"v{i}",
                reward_before=0.1 * i, reward_after=0.15 * i, d_tok_mean=0.004, d_tok_fresh=0.004,
                tokens=100, diag_tokens=10, wall_s=1.5, certificate=0.01 * i, stale_gap=0.02)
    base.update(kw)
    return UpdateRecord(**base)


def test_log_round_trip(tmp_path):
    log = DiagnosticsLog(tmp_path / "run" / "updates.jsonl")
    for i in range(3):
        log.write(_rec(i))
    lines = (tmp_path / "run" / "updates.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[1])["update"] == 1
    back = log.read()
    assert back == [_rec(i) for i in range(3)]
    assert UpdateRecord.from_dict({**_rec(0).to_dict(), "unknown_future_field": 1}) == _rec(0)


def test_certificate_is_the_papers_bound():
    # c = sqrt(2) * gamma * A_max / (1 - gamma)^2 = sqrt(2) * 0.5 * 2 / 0.25; zeta / (1 - gamma) = 0.01 / 0.5
    c = math.sqrt(2) * 0.5 * 2.0 / 0.25
    assert certificate(0.05, 0.01, 0.01, 2.0, 0.5) == pytest.approx(0.05 - c * 0.1 - 0.02)
    with pytest.raises(ValueError):
        certificate(0.05, 0.01, 0.01, 2.0, 1.0)


def test_rank_correlation_needs_ten_pairs_and_gives_an_interval():
    xs = list(range(12))
    up = rank_correlation(xs, [10 * x for x in xs])
    assert up["rho"] == pytest.approx(1.0) and up["n"] == 12 and up["ci95"][1] == pytest.approx(1.0)
    assert rank_correlation(xs, xs[::-1])["rho"] == pytest.approx(-1.0)
    noisy = rank_correlation(xs, [0, 3, 1, 2, 6, 4, 5, 9, 7, 8, 11, 10])
    assert 0.8 < noisy["rho"] < 1.0 and noisy["ci95"][0] < noisy["rho"] < noisy["ci95"][1]
    assert rank_correlation(xs[:9], xs[:9]) is None  # fewer than 10 pairs: no figure
    assert rank_correlation(xs, [1.0] * 12) is None


def test_paired_change_interval():
    before, after = [0, 0, 1, 1, 0, 0, 1, 0], [1, 0, 1, 1, 1, 0, 1, 1]
    ch = paired_change(before, after)
    assert ch["change"] == pytest.approx(3 / 8) and (ch["wins"], ch["losses"], ch["n"]) == (3, 0, 8)
    # t interval over the 8 per-prompt differences (scipy's t quantile, 7 degrees of freedom)
    import numpy as np
    from scipy import stats

    d = np.array(after) - np.array(before)
    half = stats.t.ppf(0.975, 7) * d.std(ddof=1) / math.sqrt(8)
    assert ch["ci95"] == pytest.approx([3 / 8 - half, 3 / 8 + half])
    assert paired_change([1, 0], [1, 0])["ci95"] == [0.0, 0.0]


def test_summary_counts_out_of_region_on_held_out_states_and_budget():
    recs = [_rec(0, d_tok_heldout=0.002, out_of_region=False),
            _rec(1, d_tok_heldout=0.03, out_of_region=True, backtracks=2, out_of_region_events=2),
            _rec(2, d_tok_heldout=0.001, out_of_region=False), _rec(3, version=None)]
    s = summarise(recs)
    assert s["updates"] == 4 and s["accepted"] == 3
    assert s["out_of_region_rate"] == pytest.approx(1 / 3)  # over the updates with a held-out probe
    assert (s["out_of_region_updates"], s["probed_updates"]) == (1, 3)
    assert (s["backtracks"], s["out_of_region_events"], s["tokens"], s["diag_tokens"]) == (2, 2, 400, 40)
    assert s["reward_first"] == 0.0 and s["reward_last"] == pytest.approx(0.45)
    assert s["certificate_rank_corr"] is None  # 4 pairs (and none observed alone): no correlation reported
    assert s["wall_s"] == 6.0
    assert summarise([])["updates"] == 0
