"""Diagnostics records: JSON-lines round trip, the certificate proxy, rank correlation, run summary."""
from __future__ import annotations

import json
import math

import pytest

from teamtr_adapters.train.diagnostics import (DiagnosticsLog, UpdateRecord, certificate, rank_correlation,
                                               summarise)


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


def test_certificate_and_rank_correlation():
    assert certificate(0.05, 0.01, 0.0004, 2.0) == pytest.approx(0.05 - math.sqrt(2) * 2 * 0.02 - 0.01)
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, rel=1e-6)
    assert rank_correlation([1, 2], [1, 2]) is None and rank_correlation([1, 1, 1], [1, 2, 3]) is None


def test_summary_counts_out_of_region_and_budget():
    recs = [_rec(0), _rec(1, d_tok_fresh=0.03, out_of_region=True, backtracks=2, out_of_region_events=2),
            _rec(2), _rec(3, d_tok_fresh=None, version=None)]
    s = summarise(recs)
    assert s["updates"] == 4 and s["accepted"] == 3
    assert s["out_of_region_rate"] == pytest.approx(1 / 3)  # over the updates with a fresh measurement
    assert (s["backtracks"], s["out_of_region_events"], s["tokens"], s["diag_tokens"]) == (2, 2, 400, 40)
    assert s["reward_first"] == 0.0 and s["reward_last"] == pytest.approx(0.45)
    assert s["certificate_rank_corr"] == pytest.approx(1.0) and s["wall_s"] == 6.0
    assert summarise([])["updates"] == 0
