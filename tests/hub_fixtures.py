"""Fixtures for the Hub tests: a Hub-compatible server on a free loopback port, with the real
`huggingface_hub` client pointed at it (import into a test module: `from hub_fixtures import hub`).

`huggingface_hub` reads HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_DISABLE_XET and the cache dir into
`huggingface_hub.constants` when it is imported (conftest.py sets HF_HUB_OFFLINE=1 before that), and its
module-level `HfApi` (behind `file_exists`, used by peft) keeps the endpoint it was created with. So the
fixture patches those for the test, and also sets the environment variables for subprocesses.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import pytest

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


def retrain(reg, role: str, shift: float = 0.5) -> str:
    """Pin a new version of `role` whose LoRA B weights are shifted (a stand-in for a training update)."""
    from safetensors.numpy import load_file, save_file

    pin = reg.manifest("tiny-duo")["roles"][role]
    src = reg.version_path(pin["id"])
    out = reg.home.parent / f"retrained-{role}"
    out.mkdir(exist_ok=True)
    tensors = load_file(src / "adapter_model.safetensors")
    save_file({k: (v + shift).astype(v.dtype) if "lora_B" in k else v for k, v in tensors.items()},
              str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_bytes((src / "adapter_config.json").read_bytes())
    info = reg.add_version(pin["lineage"], out, made_by="train", base=reg.manifest("tiny-duo")["base"],
                           parent=pin["id"], metrics={"reward": 0.5})
    reg.update_pins("tiny-duo", {role: info.id}, {"event": "train", "role": role})
    return info.id


def registry_snapshot(home: Path) -> dict[str, str]:
    """Path -> sha256 of every file of a registry home (lock files aside): equal snapshots, equal registries."""
    if not home.exists():
        return {}
    return {p.relative_to(home).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}
