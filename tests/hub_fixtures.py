"""Fixtures for the Hub tests: a Hub-compatible server on a free loopback port, with the real
`huggingface_hub` client pointed at it (import into a test module: `from hub_fixtures import hub`).

`huggingface_hub` reads HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_DISABLE_XET and the cache dir into
`huggingface_hub.constants` when it is imported (conftest.py sets HF_HUB_OFFLINE=1 before that), and its
module-level `HfApi` (behind `file_exists`, used by peft) keeps the endpoint it was created with. So the
fixture patches those for the test, and also sets the environment variables for subprocesses.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from hub_chaos import registry_snapshot, retrain  # noqa: F401  (re-exported for the tests)
from hub_server import HubServer

TOKEN = "hf_test_token_do_not_print"
REPO = "org/tiny-duo"  # where the tests push team `tiny-duo` (conftest.tiny_team)


def point_client_at(monkeypatch: pytest.MonkeyPatch, url: str, cache: Path, offline: bool = False) -> None:
    """Point the in-process `huggingface_hub` client (and subprocesses) at `url` with cache `cache`."""
    from huggingface_hub import constants, hf_api

    for name, value in [("ENDPOINT", url), ("HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"),
                        ("HF_HUB_OFFLINE", offline), ("HF_HUB_DISABLE_XET", True), ("HF_HUB_CACHE", str(cache)),
                        ("HF_HUB_DISABLE_TELEMETRY", True)]:
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    for name, value in [("HF_ENDPOINT", url), ("HF_HUB_OFFLINE", "1" if offline else "0"), ("HF_HUB_DISABLE_XET", "1"),
                        ("HF_HUB_CACHE", str(cache)), ("HF_TOKEN", TOKEN)]:
        monkeypatch.setenv(name, value)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A fresh Hub server (accepting TOKEN) with the client pointed at it and an empty HF cache."""
    server = HubServer(tmp_path / "hub-state", tokens=(TOKEN,)).start()
    point_client_at(monkeypatch, server.url, tmp_path / "hf-cache")
    try:
        yield server
    finally:
        server.stop()



def push(cli, *args: str) -> dict:
    """`hub push tiny-duo REPO --json ARGS` through the CLI; the parsed result."""
    code, out, err = cli("hub", "push", "tiny-duo", REPO, "--json", *args)
    assert code == 0, err
    return json.loads(out)


def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str):
    """Switch $TEAMTR_HOME to a new empty registry and return it."""
    from teamtr_adapters.registry import Registry

    monkeypatch.setenv("TEAMTR_HOME", str(tmp_path / name))
    return Registry()
