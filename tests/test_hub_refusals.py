"""Bundles and pushes that must be refused with one clear line, leaving the local registry unchanged:
a stale-parent concurrent push, a tampered file, `..`/absolute paths, a symlink, pickle and unknown
files, and a wrong base. Malicious bundles are made with the real `huggingface_hub` client."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from hub_fixtures import REPO, fresh_home, hub, push, registry_snapshot, retrain  # noqa: F401  (fixture)


def commit_raw(files: dict[str, bytes], message: str = "tamper") -> str:
    """Commit `files` to REPO's main with the plain client (what an attacker or a careless user could push)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    ops = [CommitOperationAdd(path, data) for path, data in files.items()]
    return HfApi().create_commit(REPO, ops, commit_message=message).oid


@pytest.fixture
def pulled(hub, tiny_team, tmp_path, monkeypatch, cli):
    """REPO pushed from `tiny_team`, then pulled into a second registry (now $TEAMTR_HOME)."""
    push(cli)
    dst = fresh_home(tmp_path, monkeypatch, "home-b")
    assert cli("hub", "pull", REPO)[0] == 0
    return dst


def refused(cli, reg, *args: str) -> tuple[int, str]:
    """Run a pull that must fail; check it printed one line and left `reg` byte-for-byte unchanged."""
    before = registry_snapshot(reg.home)
    code, out, err = cli("hub", "pull", *args)
    assert code != 0 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert registry_snapshot(reg.home) == before
    return code, err


def test_concurrent_push_with_a_stale_parent_fails_cleanly(hub, tiny_team, cli):
    first = push(cli)
    retrain(tiny_team, "critic")
    concurrent = []
    hub.before_commit = lambda repo, branch: concurrent.append(
        hub.state.commit(repo, branch, {"NOTES.md": b"someone else\n"}, title="concurrent push"))
    before = registry_snapshot(tiny_team.home)
    code, out, err = cli("hub", "push", "tiny-duo", REPO)
    assert code == 5 and out == "" and err.count("\n") == 1
    assert "moved while pushing" in err and f"expected parent {first['commit'][:12]}" in err
    refs = hub.state.refs(REPO)
    assert refs["branches"]["main"] == concurrent[0] and "tiny-duo-r2" not in refs["tags"]
    assert registry_snapshot(tiny_team.home) == before  # no push event recorded
    files = hub.state.files(REPO)
    assert json.loads(files["manifest.json"])["team_revision"] == 1  # the refused commit left nothing behind


def test_tampered_file_is_refused(pulled, hub, cli):
    files = hub.state.files(REPO)
    weights = bytearray(files["adapters/critic/adapter_model.safetensors"])
    weights[-1] ^= 0xFF
    commit_raw({"adapters/critic/adapter_model.safetensors": bytes(weights)})
    code, err = refused(cli, pulled, REPO)
    assert code == 4 and "adapters/critic/adapter_model.safetensors sha256" in err and "does not match" in err


def edit_manifest(hub, change) -> None:
    """Commit the pushed manifest with `change` applied to it (each call starts from the pushed one)."""
    manifest = json.loads(hub.state.files(REPO, "tiny-duo-r1")["manifest.json"])
    change(manifest)
    commit_raw({"manifest.json": json.dumps(manifest).encode()})


def test_unsafe_paths_in_the_manifest_are_refused(pulled, hub, cli):
    for name in ["../../../evil.safetensors", "/etc/passwd", "sub/dir.json"]:
        edit_manifest(hub, lambda m: m["roles"]["critic"]["files"].update({name: "0" * 64}))
        code, err = refused(cli, pulled, REPO)
        assert code == 2 and "unsafe path" in err and name in err, name


MALFORMED = {
    "role critic: entry must be an object": lambda m: m["roles"].update(critic="v1"),
    "lineage_chain a list of objects": lambda m: m["roles"]["critic"].update(lineage_chain="v0"),
    "role critic: malformed parent": lambda m: m["roles"]["critic"].update(parent="../v0"),
    "is not a teamtr bundle": lambda m: m.update(format="other/1"),
}


def test_malformed_manifests_are_refused(pulled, hub, cli):
    for message, change in MALFORMED.items():
        edit_manifest(hub, change)
        code, err = refused(cli, pulled, REPO)
        assert code == 2 and message in err, message


BAD_FILES = [
    ("adapters/critic/adapter_model.bin", pickle.dumps({"w": [1.0]}), "is a pickle file"),
    ("optimizer.pt", b"PK\x03\x04torch", "is a pickle file"),
    ("adapters/critic/notes.txt", pickle.dumps("hello"), "is not in the manifest"),
    ("adapters/critic/extra.json", b"{}", "is not in the manifest"),
]


def test_pickle_and_unknown_files_are_refused(pulled, hub, cli):
    from huggingface_hub import HfApi

    for path, data, message in BAD_FILES:
        commit_raw({path: data})
        hub.requests.clear()
        code, err = refused(cli, pulled, REPO)
        assert code == 2 and path in err and message in err, path
        assert not any(p.endswith("/" + path) for _, p in hub.requests)  # refused from the listing: never downloaded
        HfApi().delete_file(path, REPO)  # the next case starts from a clean bundle
    assert cli("hub", "pull", REPO)[0] == 0


def test_symlink_out_of_the_cache_is_refused(pulled, hub, tmp_path, monkeypatch, cli):
    snapshot = next((Path(os.environ["HF_HUB_CACHE"]) / "models--org--tiny-duo" / "snapshots").iterdir())
    link = snapshot / "adapters" / "critic" / "adapter_model.safetensors"
    assert link.is_symlink()  # the Hub cache's own links into blobs/ are fine
    outside = tmp_path / "outside.safetensors"
    shutil.copyfile(link, outside)  # same bytes: only the symlink check can catch it
    link.unlink()
    link.symlink_to(outside)
    dst = fresh_home(tmp_path, monkeypatch, "home-c")
    code, err = refused(cli, dst, REPO)
    assert code == 2 and "is a symlink to" in err and "outside the Hub cache" in err


def test_wrong_base_is_refused_before_downloading_adapters(hub, tiny_team, tiny_base_dir, tmp_path, monkeypatch, cli):
    push(cli)
    other = tmp_path / "other-base"
    shutil.copytree(tiny_base_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5 if config.get("rms_norm_eps") != 1e-5 else 1e-6
    (other / "config.json").write_text(json.dumps(config))
    dst = fresh_home(tmp_path, monkeypatch, "home-b")
    hub.requests.clear()
    code, err = refused(cli, dst, REPO, "--base", str(other))
    assert code == 2 and "was made for base tiny-llama" in err and f"from '{other}'" in err
    assert not any("/resolve/" in p and "adapters/" in p for _, p in hub.requests)


def test_bad_references_and_missing_repos(hub, home, cli):
    code, _, err = cli("hub", "pull", "not a repo")
    assert code == 2 and "expected ORG/REPO[@REV][#ROLE]" in err
    code, _, err = cli("hub", "pull", "org/missing")
    assert code == 2 and "no Hub repo org/missing" in err
    hub.state.create_repo("org/plain")
    code, _, err = cli("hub", "pull", "org/plain")
    assert code == 2 and "is not a teamtr bundle (no manifest.json)" in err
    code, _, err = cli("hub", "push", "tiny-duo", "org/x@dev")
    assert code == 2 and "--revision BRANCH" in err
