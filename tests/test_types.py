"""The typed results (`teamtr_adapters.types`) describe what the library really returns: the keys of manifests
and history events read back from disk (which the type checker cannot see) are exactly the declared ones."""
from __future__ import annotations

import typing

import teamtr_adapters
from teamtr_adapters import GcReport, HistoryEvent, TeamManifest, TrainStats, VerifyReport
from teamtr_adapters.registry.catalog import deprecate
from teamtr_adapters.registry.rollback import rollback_role
from teamtr_adapters.train.diagnostics import UpdateRecord, summarise


def keys(td: type) -> set[str]:
    return set(typing.get_type_hints(td))


def check_event(e: dict) -> None:
    assert HistoryEvent.__required_keys__ <= set(e), e
    assert set(e) <= keys(HistoryEvent), set(e) - keys(HistoryEvent)


def test_manifests_history_and_reports_have_the_declared_keys(tiny_team):
    reg = tiny_team
    m = reg.manifest("tiny-duo")
    assert set(m) == keys(TeamManifest) == TeamManifest.__required_keys__
    assert all(set(pin) == {"lineage", "name", "id"} for pin in m["roles"].values())
    critic = reg.pins("tiny-duo")["critic"]
    m2 = reg.update_pins("tiny-duo", {"solver": critic}, {"event": "swap", "role": "solver", "ref": "x",
                                                           "candidate": critic, "gated": False, "forced": False,
                                                           "report": None})
    assert set(m2) == keys(TeamManifest) and m2["revision"] == 2
    assert set(rollback_role(reg, "tiny-duo", "solver")) == keys(TeamManifest)
    deprecate(reg, "tiny-duo.critic:v1", "old")
    v = reg.verify()
    assert set(v) == keys(VerifyReport) and v["ok"]
    g = reg.gc(dry_run=True)
    assert set(g) == keys(GcReport)
    events = reg.history()
    assert [e["event"] for e in events] == ["init", "swap", "rollback", "deprecate"]
    for e in events:
        check_event(e)


def test_run_stats_have_the_declared_keys():
    recs = [UpdateRecord(stage=0, update=i, role="a", method="teamtr", ratio="token", parent="p") for i in range(2)]
    assert set(summarise(recs)) == keys(TrainStats)
    assert set(summarise([])) == keys(TrainStats)


def test_the_typed_results_are_exported_and_the_package_is_marked_typed():
    from importlib.resources import files

    for name in ("TeamManifest", "HistoryEvent", "RunSummary", "GateReport", "SwapResult", "EvalReport"):
        assert name in teamtr_adapters.__all__ and isinstance(getattr(teamtr_adapters, name), type)
    assert files("teamtr_adapters").joinpath("py.typed").is_file()
