"""The Hub-backed registry (`--registry hf://ORG/REPO`) against the loopback Hub: two homes sharing one repo,
one commit per write with the parent it read, stale writers refused cleanly, lazily downloaded and verified
weights, offline reads, a missing repo."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub_fixtures import hub  # noqa: F401  (fixture)

REG = "org/reg"
LOC = f"hf://{REG}"


def hub_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """Point $TEAMTR_HOME at a fresh cache dir `name` and return it."""
    home = tmp_path / name
    monkeypatch.setenv("TEAMTR_HOME", str(home))
    return home


def open_hub(home: Path):
    from teamtr_adapters.registry import open_registry

    return open_registry(LOC, home)


def test_two_homes_share_one_repo(hub, tmp_path, monkeypatch, tiny_spec, tiny_base):
    a = open_hub(hub_home(tmp_path, monkeypatch, "home-a"))
    m = a.init_team(tiny_spec, tiny_base)
    assert len(hub.commit_log) == 1  # every role's v1, spec, manifest, history, card: one commit
    files = hub.state.files(REG)
    assert f"teams/tiny-duo/{'manifest.json'}" in files and "README.md" in files
    b = open_hub(tmp_path / "home-b")
    assert b.manifest("tiny-duo") == m
    assert [v.ref for v in b.list_versions()] == [v.ref for v in a.list_versions()]
    # listing read only metadata: no weights in home b yet
    assert not list((b.home / "versions").glob("*/adapter_model.safetensors"))
    vid = m["roles"]["solver"]["id"]
    path = b.version_path(vid)
    assert (path / "adapter_model.safetensors").is_file()
