"""The Hub-backed registry (`--registry hf://ORG/REPO`) against the loopback Hub: two homes sharing one repo,
one commit per write made on the parent it read, stale writers refused cleanly, weights downloaded on first use
and verified, offline reads, a missing repo, plain-peft loading and bundles to and from a Hub registry."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub_fixtures import hub, point_client_at, registry_snapshot  # noqa: F401  (fixture)

REG = "org/reg"
LOC = f"hf://{REG}"


def use_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """Point $TEAMTR_HOME (the Hub registry's cache) at `tmp_path/name`."""
    home = tmp_path / name
    monkeypatch.setenv("TEAMTR_HOME", str(home))
    return home


def open_hub(home: Path):
    from teamtr_adapters.registry import open_registry

    return open_registry(LOC, home)


def mirror_files(reg) -> dict[str, str]:
    """The registry files of a Hub registry's cache (its bookkeeping in .hub/, locks and tmp aside)."""
    return {k: v for k, v in registry_snapshot(reg.home).items() if not k.startswith((".hub/", "locks/", "tmp/"))}


def one_line_error(code: int, out: str, err: str, expected: int) -> str:
    assert code == expected, err
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def shared(hub, tmp_path, monkeypatch, tiny_spec, tiny_base):
    """Team tiny-duo made in the Hub registry from home A; returns the registry opened on home A."""
    reg = open_hub(tmp_path / "home-a")
    reg.init_team(tiny_spec, tiny_base)
    return reg


def test_two_homes_share_one_repo(hub, shared, tmp_path, monkeypatch, cli):
    from huggingface_hub import ModelCard

    a = shared
    assert len(hub.commit_log) == 1 and hub.commit_log[0]["parent"] is not None  # init: one commit
    files = hub.state.files(REG)
    m = a.manifest("tiny-duo")
    for role, pin in m["roles"].items():
        assert {f"versions/{pin['id']}/{f}" for f in ("adapter_model.safetensors", "adapter_config.json",
                                                       "teamtr.json")} <= set(files)
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "peft" and "teamtr-adapters" in card.data.tags
    assert "tiny-duo" in card.text and "`tiny-duo.solver:v1`" in card.text
    title = json.loads(files["history.jsonl"].decode().splitlines()[-1])
    assert title["event"] == "init"
    # home B sees the same registry; listing and showing read only metadata
    use_home(tmp_path, monkeypatch, "home-b")
    code, out, err = cli("team", "show", "tiny-duo", "--json", "--registry", LOC)
    assert code == 0, err
    assert {k: v for k, v in json.loads(out).items() if k != "spec"} == m
    b = open_hub(tmp_path / "home-b")
    assert [v.ref for v in b.list_versions()] == [v.ref for v in a.list_versions()]
    assert not list((b.home / "versions").glob("*/adapter_model.safetensors"))
    # a write from B (a new version and an alias) is seen by A; version numbers continue
    v1 = m["roles"]["solver"]["id"]
    src = b.export(f"tiny-duo.solver:{v1[:12]}", tmp_path / "exp")
    (src / "teamtr.json").unlink()
    from safetensors.numpy import load_file, save_file
    t = load_file(src / "adapter_model.safetensors")
    save_file({k: v + 1 for k, v in t.items()}, str(src / "adapter_model.safetensors"))
    info = b.add_version("tiny-duo.solver", src, made_by="import", base=m["base"])
    b.set_alias("tiny-duo.solver", "best", "v2")
    assert info.name == "v2" and hub.commit_log[-1]["parent"] == hub.commit_log[-2]["commit"]
    assert [c.get("added") for c in hub.commit_log[-1:]] and len(hub.commit_log) == 3
    assert a.resolve("tiny-duo.solver:best").id == info.id
    assert a.history() == b.history()
    assert (a.version_path(info.id) / "adapter_model.safetensors").read_bytes() == \
        (src / "adapter_model.safetensors").read_bytes()


def test_commits_are_titled_and_reads_of_an_unchanged_head_cost_one_call(hub, shared, tmp_path, monkeypatch, cli):
    titles = [c["title"] for c in
              (hub.state.commit_doc(REG, c["commit"]) for c in hub.commit_log)]
    assert titles == ["init tiny-duo critic, solver"]
    shared.set_alias("tiny-duo.critic", "stable", "v1")
    assert hub.state.commit_doc(REG, hub.commit_log[-1]["commit"])["title"] == "update tiny-duo.critic (aliases)"
    b = open_hub(tmp_path / "home-b")
    b.list_teams()  # fills the cache
    n = len(hub.requests)
    b.list_teams()
    b.manifest("tiny-duo")
    assert hub.requests[n:] == [("GET", f"/api/models/{REG}/revision/main")] * 2
    use_home(tmp_path, monkeypatch, "home-b")  # a read command holds the registry: one head read in all
    for args in (["team", "show", "tiny-duo"], ["adapter", "list"], ["history"], ["adapter", "show", "tiny-duo.solver:v1"]):
        n = len(hub.requests)
        assert cli(*args, "--registry", LOC)[0] == 0
        assert hub.requests[n:] == [("GET", f"/api/models/{REG}/revision/main")], args


def test_a_stale_writer_is_refused_and_nothing_is_lost(hub, shared, tmp_path):
    from teamtr_adapters.errors import ConflictError

    a, b = shared, open_hub(tmp_path / "home-b")
    b.list_teams()
    before = mirror_files(a)
    with pytest.raises(ConflictError, match="changed since this command read it"):
        with a.hold():  # A reads the head, then B commits before A does
            a.set_alias("tiny-duo.solver", "mine", "v1")
            b.set_alias("tiny-duo.solver", "theirs", "v1")
    assert mirror_files(a) == before  # A's cache is back at the commit it read
    assert a.aliases("tiny-duo.solver") == {"theirs": "v1"}  # the retry re-reads: B's write is there
    a.set_alias("tiny-duo.solver", "mine", "v1")
    assert b.aliases("tiny-duo.solver") == {"theirs": "v1", "mine": "v1"}
    assert len(hub.commit_log) == 3  # init, B's alias, A's retried alias: the refused commit left nothing


def test_cli_stale_writer_exit_5(hub, shared, tmp_path, monkeypatch, cli):
    use_home(tmp_path, monkeypatch, "home-a")
    hub.before_commit = lambda repo, branch: hub.state.commit(repo, branch, {"NOTES.md": b"someone else\n"})
    err = one_line_error(*cli("adapter", "alias", "tiny-duo.solver:v1", "best", "--registry", LOC), 5)
    assert "run the command again" in err
    assert "best" not in shared.aliases("tiny-duo.solver")
    assert cli("adapter", "alias", "tiny-duo.solver:v1", "best", "--registry", LOC)[0] == 0


def test_a_version_tampered_on_the_hub_is_refused_at_load(hub, shared, tmp_path, monkeypatch, cli):
    vid = shared.pins("tiny-duo")["solver"]
    path = f"versions/{vid}/adapter_model.safetensors"
    data = bytearray(hub.state.files(REG)[path])
    data[-1] ^= 1
    hub.state.commit(REG, "main", {path: bytes(data)}, title="tamper")
    c = use_home(tmp_path, monkeypatch, "home-c")
    err = one_line_error(*cli("adapter", "export", f"tiny-duo.solver:v1", str(tmp_path / "out"), "--registry", LOC), 4)
    assert "do not hash to its id" in err and vid[:12] in err
    assert not list(c.rglob("adapter_model.safetensors"))  # nothing cached
    code, out, _ = cli("registry", "verify", "--json", "--registry", LOC)
    assert code == 4 and any("do not hash to its id" in p for p in json.loads(out)["problems"])
    # home A downloaded nothing tampered: its cached bytes (keyed by content id) stay good and are never refetched
    shared.version_path(vid)
    assert shared.verify_version(vid) == []


def test_offline_reads_from_the_cache_and_refuses_writes(hub, shared, tmp_path, monkeypatch, cli):
    use_home(tmp_path, monkeypatch, "home-a")
    b = open_hub(tmp_path / "home-b")  # B adds a version whose weights A never downloads
    src = b.export("tiny-duo.solver:v1", tmp_path / "exp")
    (src / "adapter_config.json").write_text(json.dumps({**json.loads((src / "adapter_config.json").read_text()),
                                                         "lora_dropout": 0.25}))
    (src / "teamtr.json").unlink()
    b.add_version("tiny-duo.solver", src, made_by="import", base=shared.manifest("tiny-duo")["base"])
    code, online, _ = cli("team", "show", "tiny-duo", "--json", "--registry", LOC)
    assert code == 0
    before, calls = mirror_files(shared), len(hub.requests)
    point_client_at(monkeypatch, hub.url, tmp_path / "hf-cache", offline=True)
    assert cli("team", "show", "tiny-duo", "--json", "--registry", LOC) == (0, online, "")
    assert cli("adapter", "export", "tiny-duo.solver:v1", str(tmp_path / "out"), "--registry", LOC)[0] == 0
    err = one_line_error(*cli("adapter", "alias", "tiny-duo.solver:v1", "x", "--registry", LOC), 2)
    assert "HF_HUB_OFFLINE=1" in err and "read-only offline" in err
    err = one_line_error(*cli("adapter", "export", "tiny-duo.solver:v2", str(tmp_path / "out2"), "--registry", LOC), 2)
    assert "not in the local cache" in err
    use_home(tmp_path, monkeypatch, "home-new")
    err = one_line_error(*cli("team", "list", "--registry", LOC), 2)
    assert "not in the local cache" in err
    assert len(hub.requests) == calls and mirror_files(shared) == before


def test_a_missing_repo_is_one_line(hub, tmp_path, monkeypatch, cli):
    use_home(tmp_path, monkeypatch, "home")
    err = one_line_error(*cli("team", "list", "--registry", "hf://org/nope"), 2)
    assert "no Hub registry at hf://org/nope" in err and "does not exist" in err
    monkeypatch.setenv("TEAMTR_REGISTRY", "hf://org/nope")
    assert one_line_error(*cli("history"), 2) == err
    assert not hub.state.exists("org/nope")


def test_versions_load_with_plain_peft_from_the_repo(hub, shared, tiny_base):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    vid = shared.pins("tiny-duo")["solver"]
    base = AutoModelForCausalLM.from_pretrained(tiny_base.path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, REG, subfolder=f"versions/{vid}")
    assert model.peft_config["default"].r == 4


def test_bundles_to_and_from_a_hub_registry(hub, shared, tmp_path, monkeypatch, cli):
    use_home(tmp_path, monkeypatch, "home-a")
    code, out, err = cli("hub", "push", "tiny-duo", "org/bundle", "--json", "--registry", LOC)
    assert code == 0, err
    # pull the bundle into a local registry, and back into a second Hub registry
    use_home(tmp_path, monkeypatch, "home-local")
    assert cli("hub", "pull", "org/bundle")[0] == 0
    code, out, err = cli("hub", "pull", "org/bundle", "--registry", "hf://org/reg2", "--json")
    assert code == 0, err
    n = len(hub.commit_log)
    assert hub.commit_log[-1]["repo"] == "org/reg2"
    code, out, _ = cli("team", "show", "tiny-duo", "--json", "--registry", "hf://org/reg2")
    assert {r: p["id"] for r, p in json.loads(out)["roles"].items()} == shared.pins("tiny-duo")
    assert len(hub.commit_log) == n


RACER = r"""
import json, sys, tempfile
from pathlib import Path
from benchmarks.chaos.registry import fake_adapter, BASE
from teamtr_adapters.errors import ConflictError
from teamtr_adapters.registry import open_registry
loc, home, wid, ops = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
reg = open_registry(loc, home)
src = Path(tempfile.mkdtemp(prefix="hub-racer-"))
conflicts = 0
for i in range(ops):
    d = fake_adapter(src / str(i), [wid, i])
    while True:
        try:
            with reg.hold(write=True):  # one commit: a version of the shared lineage, an alias, an event
                info = reg.add_version("race.shared", d, made_by="test", base=BASE, metrics={"w": wid, "i": i})
                reg.set_alias("race.shared", f"w{wid}", info.name)
                reg.append_history({"event": "race", "writer": wid, "i": i, "version": info.id, "name": info.name})
            break
        except ConflictError:
            conflicts += 1
    print("add", info.id, info.name, flush=True)
print("conflicts", conflicts, flush=True)
"""


def test_eight_racing_writers_lose_nothing_and_never_reuse_a_version_number(hub, tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    writers, ops = 8, 3
    # two writers per home: writers of one home queue on its cache lock, homes race on the Hub
    procs = [subprocess.Popen([sys.executable, "-c", RACER, LOC, str(tmp_path / f"home-{w // 2}"), str(w), str(ops)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root)
             for w in range(writers)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err
    adds = {w: [line.split()[1:] for line in out.splitlines() if line.startswith("add ")]
            for w, (out, _) in enumerate(outs)}
    conflicts = sum(int(line.split()[1]) for out, _ in outs for line in out.splitlines() if line.startswith("conflicts"))
    reg = open_hub(tmp_path / "checker")
    stored = {v.name: v.id for v in reg.list_versions("race.shared")}
    assert sorted(stored, key=lambda n: int(n[1:])) == [f"v{n}" for n in range(1, writers * ops + 1)]
    for w, rows in adds.items():
        assert len(rows) == ops
        for vid, name in rows:
            assert stored[name] == vid  # every acknowledged write is there, under the name it was given
        assert reg.aliases("race.shared")[f"w{w}"] == rows[-1][1]
    events = [e for e in reg.history() if e.get("event") == "race"]
    assert sorted((e["writer"], e["i"]) for e in events) == [(w, i) for w in range(writers) for i in range(ops)]
    assert [e["name"] for e in events] == [f"v{n}" for n in range(1, writers * ops + 1)]  # history order = commit order
    assert len(hub.commit_log) == writers * ops  # refused commits left nothing; each write is one commit
    assert reg.verify()["ok"]
    print(f"racing writers: {writers} x {ops} writes, {conflicts} conflicts retried")


def test_gc_removes_unreachable_versions_from_the_repo_in_one_commit(hub, shared, tmp_path, monkeypatch, cli):
    from benchmarks.chaos.registry import fake_adapter

    info = shared.add_version("loose", fake_adapter(tmp_path / "loose", 7), made_by="test",
                              base={"name": "fake", "hash": "f" * 16})
    assert f"versions/{info.id}/teamtr.json" in hub.state.files(REG)
    use_home(tmp_path, monkeypatch, "home-b")
    code, out, err = cli("registry", "gc", "--yes", "--json", "--registry", LOC)
    assert code == 0, err
    assert json.loads(out)["remove"] == [info.id]
    assert not any(p.startswith(f"versions/{info.id}/") for p in hub.state.files(REG))
    assert hub.state.commit_doc(REG, hub.commit_log[-1]["commit"])["title"] == f"gc {info.id[:12]}"
    assert info.id not in {v.id for v in shared.list_versions()} and shared.verify()["ok"]


def test_a_training_update_from_a_second_home_is_one_titled_commit(hub, shared, tmp_path):
    from teamtr_adapters.train.stage import TrainConfig, Trainer, run_stages

    def even_first_token(episode) -> float:  # a synthetic reward with spread for the random tiny model
        return float(episode.turns[-1].message_ids[0] % 2 == 0)

    b = open_hub(tmp_path / "home-b")
    cfg = TrainConfig(order="critic", steps=2, group_size=4, prompts=2, max_new_tokens=4, lr=1e-2, delta=0.05,
                      probe_prompts=0, diag_fresh=False)
    n = len(hub.commit_log)
    with Trainer(b, "tiny-duo", cfg, single_role="critic", reward_fn=even_first_token, device="cpu",
                 dtype="float32") as t:
        result = run_stages(t, 1)
    [rec] = result.records
    assert rec.version and rec.version_name == "v2"
    assert len(hub.commit_log) == n + 1  # the new version and the pin move: one commit
    commit = hub.commit_log[-1]
    assert {f"versions/{rec.version}/adapter_model.safetensors", "teams/tiny-duo/manifest.json",
            "lineages/tiny-duo.critic.json", "history.jsonl", "README.md"} <= set(commit["added"])
    title = hub.state.commit_doc(REG, commit["commit"])["title"]
    assert title == f"train tiny-duo critic -> tiny-duo.critic:v2 (run {t.run_id})"
    assert shared.manifest("tiny-duo") == b.manifest("tiny-duo")
    assert shared.pins("tiny-duo")["critic"] == rec.version and shared.history() == b.history()


def test_registry_option_and_variable_name_a_local_directory_too(tiny_team, tmp_path, monkeypatch, cli):
    use_home(tmp_path, monkeypatch, "elsewhere")
    assert json.loads(cli("team", "list", "--json")[1]) == []
    listed = cli("team", "list", "--json", "--registry", str(tiny_team.home))[1]
    assert [m["team"] for m in json.loads(listed)] == ["tiny-duo"]
    monkeypatch.setenv("TEAMTR_REGISTRY", str(tiny_team.home))
    assert cli("team", "list", "--json")[1] == listed


def test_hostile_paths_in_the_repo_are_never_written_to_the_cache(hub, shared, tmp_path):
    hub.state.commit(REG, "main", {"lineages/x/../../../escape.json": b"{}", "teams/../evil/manifest.json": b"{}",
                                   "lineages/evil.txt": b"x"}, check_paths=False)
    b = open_hub(tmp_path / "home-b")
    assert b.list_teams() == ["tiny-duo"]
    assert not (tmp_path / "escape.json").exists() and not list(tmp_path.rglob("evil*"))


def test_two_first_writers_of_a_missing_repo_do_not_both_win(hub, tmp_path):
    # Before the fix, the second creator took the head after creating the repo (the first one's commit) as its
    # parent: both wrote v1 of the same lineage and one was lost (seen in the racing-writers test).
    from benchmarks.chaos.registry import BASE, fake_adapter
    from teamtr_adapters.errors import ConflictError

    a, b = open_hub(tmp_path / "home-a"), open_hub(tmp_path / "home-b")
    with pytest.raises(ConflictError, match="changed since this command read it"):
        with b.hold(write=True):  # B reads: no repo
            b.add_version("lin", fake_adapter(tmp_path / "b", 1), made_by="test", base=BASE)
            a.add_version("lin", fake_adapter(tmp_path / "a", 2), made_by="test", base=BASE)  # A creates, commits
    assert b.add_version("lin", fake_adapter(tmp_path / "b", 1), made_by="test", base=BASE).name == "v2"
    assert [v.name for v in a.list_versions("lin")] == ["v1", "v2"] and len(hub.commit_log) == 2


def test_import_diff_deprecate_and_rollback_on_a_hub_registry(hub, shared, tmp_path, monkeypatch, cli):
    use_home(tmp_path, monkeypatch, "home-b")
    src = shared.export("tiny-duo.critic:v1", tmp_path / "exp")
    (src / "teamtr.json").unlink()
    from safetensors.numpy import load_file, save_file
    t = load_file(src / "adapter_model.safetensors")
    save_file({k: v + 0.5 for k, v in t.items()}, str(src / "adapter_model.safetensors"))

    def last_title() -> str:
        return hub.state.commit_doc(REG, hub.commit_log[-1]["commit"])["title"]

    code, out, err = cli("adapter", "import", str(src), "tiny-duo.critic", "--team", "tiny-duo", "--json",
                         "--registry", LOC)
    assert code == 0, err
    assert last_title() == "add tiny-duo.critic:v2"
    code, out, err = cli("adapter", "diff", "tiny-duo.critic:v1", "tiny-duo.critic:v2", "--probes", "0", "--json",
                         "--registry", LOC)
    assert code == 0, err and json.loads(out)["modules"]
    code, _, err = cli("swap", "critic", "v2", "--team", "tiny-duo", "--registry", LOC)
    assert code == 0, err
    assert last_title() == "swap tiny-duo critic -> tiny-duo.critic:v2"
    code, _, err = cli("adapter", "deprecate", "tiny-duo.critic:v2", "--reason", "worse", "--registry", LOC)
    assert code == 0, err
    assert last_title() == "deprecate tiny-duo.critic:v2" and "deprecated.json" in hub.commit_log[-1]["added"]
    code, _, err = cli("rollback", "critic", "--team", "tiny-duo", "--registry", LOC)
    assert code == 0, err
    assert last_title() == "rollback tiny-duo critic -> tiny-duo.critic:v1"
    assert shared.pins("tiny-duo")["critic"] == shared.resolve("tiny-duo.critic:v1").id  # home A sees it
    from teamtr_adapters.registry.catalog import deprecated
    shared.list_teams()
    assert list(deprecated(shared)) == [shared.resolve("tiny-duo.critic:v2").id]
