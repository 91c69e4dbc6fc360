"""The Hub chaos campaign at CI size (benchmarks/chaos/hub.py with full=False): every hostile bundle class
refused cleanly (team and role pulls), 2 free push races, the write-losing interleaving, a sequential stale
push, another team's bundle, a tag refused after the commit landed. Full size: `python -m benchmarks.chaos
--only hub`."""
from __future__ import annotations


def test_hub_campaign_small(tmp_path, monkeypatch):
    from benchmarks.chaos.hub import campaign

    monkeypatch.setenv("TEAMTR_HOME", str(tmp_path / "unused-home"))
    rows = campaign(full=False, workdir=tmp_path)
    bad = [r for r in rows if r.failures or r.tracebacks or r.changed_after_refusal]
    assert len(rows) >= 35 and sum(r.trials for r in rows) >= 70
    assert not bad, "\n".join(f"{r.check}: {r.failures} failed, {r.tracebacks} tb, {r.changed_after_refusal} changed; "
                              f"{r.note}" for r in bad)
