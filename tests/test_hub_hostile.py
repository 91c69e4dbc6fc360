"""Hostile bundles (issue 13, failure 6) and pushes that must never lose writes (failure 7), against the
loopback Hub with the real `huggingface_hub` client.

Every hostile bundle class in `hub_chaos.CASES` must be refused by a whole-team pull and by a role pull
with one `error:` line and its exit code, the registry byte-identical, nothing downloaded that the case
names. Pushes carry the commit this registry last synced as their parent: of two racing pushes exactly
one lands, a stale push exits 5 and changes nothing, another team's bundle is not overwritten without
--force, and a tag that cannot be created after the commit landed is reported as such."""
from __future__ import annotations

import json
import os

from hub_chaos import CASES, check_refusal, cli_env, commit_case, race_pushes
from hub_fixtures import REPO, TOKEN, fresh_home, hub, push, registry_snapshot, retrain  # noqa: F401  (fixture)


def test_every_hostile_bundle_class_is_refused_cleanly(hub, tiny_team, tmp_path, monkeypatch, cli):
    first = push(cli)
    dst = fresh_home(tmp_path, monkeypatch, "home-b")
    assert cli("hub", "pull", REPO)[0] == 0
    failures = {}
    for case in CASES:
        commit_case(hub.state, REPO, first["commit"], case, full=False)
        for argv in (["hub", "pull", REPO], ["hub", "pull", REPO, "--role", "critic"]):
            problems = check_refusal(case, dst.home, hub.requests, argv)
            if problems:
                failures[f"{case.name} ({' '.join(argv[3:]) or 'team'})"] = problems
    assert not failures, json.dumps(failures, indent=1)[:6000]
    assert len(CASES) >= 31
    # the HF cache never received the unlisted file: nothing near its 2 MB is cached
    cache = [p for p in (tmp_path / "hf-cache").rglob("*") if p.is_file()]
    assert max(p.stat().st_size for p in cache) < (1 << 20)
    hub.state.reset_branch(REPO, "main", first["commit"])
    assert cli("hub", "pull", REPO)[0] == 0 and dst.verify()["ok"]  # the registry is still usable


def two_synced_registries(hub, tiny_team, tmp_path, monkeypatch, cli):
    """Registry A pushed REPO (commit C1); registry B pulled it. Returns (A, B, C1), $TEAMTR_HOME = B."""
    first = push(cli)
    b = fresh_home(tmp_path, monkeypatch, "home-b")
    assert cli("hub", "pull", REPO)[0] == 0
    return tiny_team, b, first["commit"]


def test_racing_pushes_from_two_processes_exactly_one_wins(hub, tiny_team, tmp_path, monkeypatch, cli):
    a, b, c1 = two_synced_registries(hub, tiny_team, tmp_path, monkeypatch, cli)
    retrain(a, "critic", 0.25)
    retrain(b, "solver", 0.75)
    before = {"a": registry_snapshot(a.home), "b": registry_snapshot(b.home)}
    cache = tmp_path / "hf-cache"
    results = race_pushes([cli_env(a.home, hub.url, TOKEN, cache), cli_env(b.home, hub.url, TOKEN, cache)], REPO)
    codes = [r[0] for r in results]
    assert sorted(codes) == [0, 5], results
    assert not any("Traceback" in r[2] for r in results)
    win, lose = ("a", "b") if codes[0] == 0 else ("b", "a")
    winner, loser = {"a": a, "b": b}[win], {"a": a, "b": b}[lose]
    result = json.loads(results[codes.index(0)][1])
    head = hub.state.refs(REPO)["branches"]["main"]
    assert result["commit"] == head and result["parent"] == c1
    assert hub.state.commit_doc(REPO, head)["parents"] == [c1]  # nothing was reverted: one commit on top of C1
    assert [c["parent"] for c in hub.commit_log[1:]] == [c1]
    manifest = json.loads(hub.state.files(REPO)["manifest.json"])
    assert {r: e["id"] for r, e in manifest["roles"].items()} == winner.pins("tiny-duo")
    assert registry_snapshot(loser.home) == before[lose]  # the refused push recorded nothing
    assert "push refused" in results[codes.index(5)][2] and results[codes.index(5)][2].count("\n") == 1


def test_a_push_that_starts_after_the_other_landed_exits_5(hub, tiny_team, tmp_path, monkeypatch, cli):
    """The interleaving that lost writes before: B's push reads the repo only after A's commit landed."""
    import threading

    a, b, c1 = two_synced_registries(hub, tiny_team, tmp_path, monkeypatch, cli)
    retrain(a, "critic", 0.25)
    retrain(b, "solver", 0.75)
    hub.tokens.add("hf_second_writer")
    hub.held["hf_second_writer"] = threading.Event()  # B's requests wait until a commit lands
    before_b = registry_snapshot(b.home)
    cache = tmp_path / "hf-cache"
    (code_a, out_a, err_a), (code_b, _, err_b) = race_pushes(
        [cli_env(a.home, hub.url, TOKEN, cache), cli_env(b.home, hub.url, "hf_second_writer", cache)], REPO)
    assert (code_a, code_b) == (0, 5), (err_a, err_b)
    head = hub.state.refs(REPO)["branches"]["main"]
    assert json.loads(out_a)["commit"] == head and hub.state.commit_doc(REPO, head)["parents"] == [c1]
    assert json.loads(hub.state.files(REPO)["manifest.json"])["roles"]["critic"]["id"] == a.pins("tiny-duo")["critic"]
    assert registry_snapshot(b.home) == before_b and "moved" in err_b


def test_sequential_stale_push_is_refused_and_changes_nothing(hub, tiny_team, tmp_path, monkeypatch, cli):
    a, b, c1 = two_synced_registries(hub, tiny_team, tmp_path, monkeypatch, cli)
    new_solver = retrain(b, "solver", 0.75)
    monkeypatch.setenv("TEAMTR_HOME", str(a.home))
    new_critic = retrain(a, "critic", 0.25)
    c2 = push(cli)["commit"]
    monkeypatch.setenv("TEAMTR_HOME", str(b.home))
    before, log = registry_snapshot(b.home), len(hub.commit_log)
    code, out, err = cli("hub", "push", "tiny-duo", REPO)
    assert code == 5 and out == "" and err.count("\n") == 1
    assert f"it is at {c2[:12]}" in err and f"last synced tiny-duo with it at {c1[:12]}" in err
    assert registry_snapshot(b.home) == before and len(hub.commit_log) == log
    assert hub.state.refs(REPO)["branches"]["main"] == c2
    assert json.loads(hub.state.files(REPO)["manifest.json"])["roles"]["critic"]["id"] == new_critic  # A's write kept
    # pull, re-apply the change, push: it lands on top of A's commit
    assert cli("hub", "pull", REPO)[0] == 0
    b.update_pins("tiny-duo", {"solver": new_solver}, {"event": "swap", "role": "solver"})
    c3 = push(cli)
    assert c3["parent"] == c2
    roles = json.loads(hub.state.files(REPO)["manifest.json"])["roles"]
    assert (roles["critic"]["id"], roles["solver"]["id"]) == (new_critic, new_solver)


def test_pull_of_an_unchanged_team_still_moves_the_sync_point(hub, tiny_team, tmp_path, monkeypatch, cli):
    a, b, c1 = two_synced_registries(hub, tiny_team, tmp_path, monkeypatch, cli)
    card = hub.state.files(REPO)["README.md"] + b"\nEdited on the Hub.\n"
    c2 = hub.state.commit(REPO, "main", {"README.md": card}, title="card edit")
    assert cli("hub", "push", "tiny-duo", REPO)[0] == 5  # B has not seen the card edit
    assert cli("hub", "pull", REPO)[0] == 0  # same pins: no new revision, but B has now synced C2
    assert b.history("tiny-duo")[-1]["commit"] == c2
    retrain(b, "solver", 0.75)
    assert push(cli)["parent"] == c2


def test_a_bundle_never_synced_here_is_not_overwritten(hub, tiny_team, tiny_spec, tiny_base, tmp_path, monkeypatch, cli):
    first = push(cli)
    other = fresh_home(tmp_path, monkeypatch, "home-c")
    other.init_team(tiny_spec, tiny_base)
    retrain(other, "critic", 0.125)
    code, _, err = cli("hub", "push", "tiny-duo", REPO)
    assert code == 5 and "never pushed or pulled" in err and "--force" in err
    assert hub.state.refs(REPO)["branches"]["main"] == first["commit"]
    forced = push(cli, "--force")
    assert forced["forced"] and forced["parent"] == first["commit"]


def test_a_different_team_is_not_overwritten_without_force(hub, tiny_team, tiny_spec, tiny_base, cli):
    first = push(cli)
    tiny_team.init_team(tiny_spec.replace(name="other-duo"), tiny_base)
    before = registry_snapshot(tiny_team.home)
    code, out, err = cli("hub", "push", "other-duo", REPO)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "holds team 'tiny-duo'" in err and "--force" in err
    assert hub.state.refs(REPO)["branches"]["main"] == first["commit"] and registry_snapshot(tiny_team.home) == before
    code, out, err = cli("hub", "push", "other-duo", REPO, "--force", "--json")
    assert code == 0, err
    assert json.loads(hub.state.files(REPO)["manifest.json"])["team"] == "other-duo"
    # a repo holding files that are no bundle is not overwritten either
    hub.state.create_repo("org/plain")
    hub.state.commit("org/plain", "main", {"README.md": b"# my model\n", "model.safetensors": b"weights"})
    code, _, err = cli("hub", "push", "tiny-duo", "org/plain")
    assert code == 2 and "not a teamtr-bundle/1 bundle" in err
    assert sorted(hub.state.files("org/plain")) == [".gitattributes", "README.md", "model.safetensors"]


def test_a_commit_that_landed_is_reported_even_if_tagging_fails(hub, tiny_team, cli):
    first = push(cli)
    retrain(tiny_team, "critic")
    hub.before_tag = lambda repo, tag: hub.state.create_ref(repo, "tag", tag, first["commit"])  # someone took it
    code, out, err = cli("hub", "push", "tiny-duo", REPO, "--json")
    assert code == 0, err
    result = json.loads(out)
    head = hub.state.refs(REPO)["branches"]["main"]
    assert result["commit"] == head != first["commit"] and result["tag"] is None
    assert "the commit landed" in result["tag_error"] and "tiny-duo-r2" in result["tag_error"]
    assert err.startswith("warning: ") and err.count("\n") == 1
    event = tiny_team.history("tiny-duo")[-1]
    assert (event["event"], event["commit"], event["tag"]) == ("push", head, None)
    again = push(cli, "--tag", "r2-retry")  # synced with the landed commit: no refusal, nothing to commit
    assert again["commit"] == head and again["uploaded"] == [] and again["tag"] == "r2-retry"


def test_names_with_a_trailing_newline_are_refused_from_the_cli(hub, tiny_team, cli):
    push(cli)
    for argv in (["hub", "pull", REPO, "--as", "x\n"], ["hub", "pull", f"{REPO}#critic\n"]):
        code, _, err = cli(*argv)
        assert code == 2 and "invalid" in err, argv
    assert not (tiny_team.home / "lineages" / "x\n.critic.json").exists()
    assert os.listdir(tiny_team.home / "teams") == ["tiny-duo"]
