"""Hub chaos campaign (issue 13, failures 6 and 7): hostile bundles and racing pushes, against the loopback
Hub server of tests/hub_server.py with the real `huggingface_hub` client.

`campaign(full, workdir)` returns one Row per hostile bundle class (each pulled as a whole team and as one
role: the refusal must be one `error:` line with its exit code, no traceback, the registry byte-identical
and the files the class names never downloaded) and rows for pushes: free races of two `hub push`
processes (exactly one exits 0, the other 5, one commit on top of the previous head, nothing reverted,
the loser's registry unchanged), the interleaving that lost writes before (the second push reads the repo
only after the first landed), a sequential stale push, another team's bundle without --force, and a tag
that cannot be created after the commit landed. full=True: the big classes at size (50 MB of metrics, a
1M-entry lineage chain, a 200 MB unlisted file) and 40 races.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from benchmarks.chaos import Row

ROOT = Path(__file__).resolve().parents[2]
REPO = "org/tiny-duo"
TOKEN, SECOND = "hf_chaos_token", "hf_chaos_second"


def _tests_on_path() -> None:
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def _pull(home: Path, *args: str):
    from hub_chaos import run_cli

    os.environ["TEAMTR_HOME"] = str(home)
    return run_cli("hub", "pull", REPO, *args)


def _push(home: Path, *args: str):
    from hub_chaos import run_cli

    os.environ["TEAMTR_HOME"] = str(home)
    return run_cli("hub", "push", "tiny-duo", REPO, "--json", *args)


def _hostile_rows(server, home_b: Path, base_commit: str, full: bool) -> list[Row]:
    from hub_chaos import CASES, check_refusal, commit_case

    rows = []
    for case in CASES:
        t0 = time.perf_counter()
        commit_case(server.state, REPO, base_commit, case, full)
        os.environ["TEAMTR_HOME"] = str(home_b)
        fails = tbs = changed = 0
        notes = []
        for argv in (["hub", "pull", REPO], ["hub", "pull", REPO, "--role", "critic"]):
            problems = check_refusal(case, home_b, server.requests, argv)
            tbs += "traceback" in problems
            changed += "changed" in problems
            fails += bool(set(problems) - {"traceback", "changed"})
            if problems:
                notes.append(json.dumps(problems)[:200])
        rows.append(Row("hub", f"hostile: {case.name}", 2, fails, tbs, changed, time.perf_counter() - t0,
                        "; ".join(notes) or f"exit {case.code}"))
    server.state.reset_branch(REPO, "main", base_commit)
    return rows


def _race_rows(server, reg_a, reg_b, cache: Path, races: int, forced: int) -> list[Row]:
    """`races` free races and `forced` runs of the interleaving where B reads the repo after A landed."""
    from hub_chaos import cli_env, race_pushes, registry_snapshot, retrain

    out = []
    for label, n, hold in (("push race: two processes, one repo", races, False),
                           ("push race: second reads after first landed", forced, True)):
        t0, fails, tbs, notes = time.perf_counter(), 0, 0, []
        for i in range(n):
            head0 = server.state.refs(REPO)["branches"]["main"]
            shift = 0.001 * (len(server.commit_log) + 1)
            retrain(reg_a, "critic", 0.25 + shift)
            retrain(reg_b, "solver", 0.75 + shift)
            snaps = {"a": registry_snapshot(reg_a.home), "b": registry_snapshot(reg_b.home)}
            if hold:
                server.held[SECOND] = threading.Event()
            envs = [cli_env(reg_a.home, server.url, TOKEN, cache),
                    cli_env(reg_b.home, server.url, SECOND if hold else TOKEN, cache)]
            results = race_pushes(envs, REPO)
            server.held.pop(SECOND, None)
            codes = [r[0] for r in results]
            tbs += sum("Traceback" in r[2] for r in results)
            head = server.state.refs(REPO)["branches"]["main"]
            problem = None
            if sorted(codes) != [0, 5] or (hold and codes != [0, 5]):
                problem = f"exit codes {codes}: {[r[2].strip()[:160] for r in results]}"
            else:
                win, lose = ("a", "b") if codes[0] == 0 else ("b", "a")
                winner = reg_a if win == "a" else reg_b
                manifest = json.loads(server.state.files(REPO)["manifest.json"])
                if json.loads(results[codes.index(0)][1])["commit"] != head:
                    problem = "the winner's reported commit is not the head"
                elif server.state.commit_doc(REPO, head)["parents"] != [head0]:
                    problem = "the head is not one commit on top of the previous head (a write was reverted)"
                elif {r: e["id"] for r, e in manifest["roles"].items()} != winner.pins("tiny-duo"):
                    problem = "the remote bundle is not the winner's team"
                elif registry_snapshot((reg_a if lose == "a" else reg_b).home) != snaps[lose]:
                    problem = "the refused push changed its registry"
            if problem:
                fails += 1
                notes.append(f"#{i}: {problem}")
            for reg in (reg_a, reg_b):  # both sync with the new head for the next race
                got = _pull(reg.home)
                if got.code != 0:
                    fails += 1
                    notes.append(f"#{i}: resync pull exit {got.code}: {got.err.strip()[:160]}")
        out.append(Row("hub", label, n, fails, tbs, 0, time.perf_counter() - t0, "; ".join(notes[:3])))
    return out


def _push_refusal_rows(server, reg_a, reg_b, spec, base, trials: int) -> list[Row]:
    from hub_chaos import registry_snapshot, retrain

    rows = []
    # a sequential stale push: A lands, then B (synced before A's push) pushes
    t0, fails, tbs, changed, notes = time.perf_counter(), 0, 0, 0, []
    for i in range(trials):
        retrain(reg_a, "critic", 0.3 + 0.001 * i)
        landed = _push(reg_a.home)
        retrain(reg_b, "solver", 0.8 + 0.001 * i)
        head, before = server.state.refs(REPO)["branches"]["main"], registry_snapshot(reg_b.home)
        got = _push(reg_b.home)
        tbs += bool(got.traceback)
        if landed.code != 0 or got.code != 5 or not got.err.startswith("error: push refused"):
            fails += 1
            notes.append(f"#{i}: exits {landed.code}, {got.code}: {got.err.strip()[:160]}")
        changed += server.state.refs(REPO)["branches"]["main"] != head or registry_snapshot(reg_b.home) != before
        _pull(reg_b.home)
    rows.append(Row("hub", "sequential stale push refused (exit 5)", trials, fails, tbs, changed,
                    time.perf_counter() - t0, "; ".join(notes[:3])))
    # another team's bundle is not overwritten without --force
    t0, fails, tbs, changed, notes = time.perf_counter(), 0, 0, 0, []
    if "other-duo" not in reg_a.list_teams():
        reg_a.init_team(spec.replace(name="other-duo"), base)
    for i in range(trials):
        head, before = server.state.refs(REPO)["branches"]["main"], registry_snapshot(reg_a.home)
        os.environ["TEAMTR_HOME"] = str(reg_a.home)
        from hub_chaos import run_cli

        got = run_cli("hub", "push", "other-duo", REPO)
        tbs += bool(got.traceback)
        if got.code != 2 or "holds team 'tiny-duo'" not in got.err or got.err.count("\n") != 1:
            fails += 1
            notes.append(f"#{i}: exit {got.code}: {got.err.strip()[:160]}")
        changed += server.state.refs(REPO)["branches"]["main"] != head or registry_snapshot(reg_a.home) != before
    rows.append(Row("hub", "another team's bundle kept without --force", trials, fails, tbs, changed,
                    time.perf_counter() - t0, "; ".join(notes[:3])))
    # a commit that landed is reported as landed when its tag cannot be created
    t0, fails, tbs, notes = time.perf_counter(), 0, 0, []
    for i in range(trials):
        retrain(reg_a, "critic", 0.4 + 0.001 * i)
        taken = server.state.refs(REPO)["branches"]["main"]
        server.before_tag = lambda repo, tag, c=taken: server.state.create_ref(repo, "tag", tag, c)
        got = _push(reg_a.home)
        server.before_tag = None
        tbs += bool(got.traceback)
        head = server.state.refs(REPO)["branches"]["main"]
        ok = got.code == 0 and json.loads(got.out or "{}").get("commit") == head != taken
        ok = ok and json.loads(got.out)["tag"] is None and got.err.startswith("warning: ")
        ok = ok and reg_a.history("tiny-duo")[-1].get("commit") == head
        if not ok:
            fails += 1
            notes.append(f"#{i}: exit {got.code}: {(got.err or got.out).strip()[:160]}")
    rows.append(Row("hub", "commit landed, tag refused: reported as landed", trials, fails, tbs, 0,
                    time.perf_counter() - t0, "; ".join(notes[:3])))
    _pull(reg_b.home)
    return rows


def campaign(full: bool, workdir: Path) -> list[Row]:
    _tests_on_path()
    os.environ.setdefault("TEAMTR_CACHE", str(ROOT / ".cache" / "teamtr"))
    from hub_chaos import TINY_SPEC, client_at, make_tiny_base
    from hub_server import HubServer

    from teamtr_adapters.registry import Registry
    from teamtr_adapters.runtime.base import resolve_base
    from teamtr_adapters.spec import parse_spec

    workdir = Path(workdir)
    base_dir = make_tiny_base(workdir / "tiny-llama")
    base = resolve_base(str(base_dir))
    spec = parse_spec(TINY_SPEC.format(base=base_dir))
    server = HubServer(workdir / "hub", tokens=(TOKEN, SECOND)).start()
    cache = workdir / "hf-cache"
    saved_home = os.environ.get("TEAMTR_HOME")
    try:
        with client_at(server.url, cache, TOKEN):
            reg_a, reg_b = Registry(workdir / "home-a"), Registry(workdir / "home-b")
            reg_a.init_team(spec, base)
            first = _push(reg_a.home)
            assert first.code == 0, first.err
            assert _pull(reg_b.home).code == 0
            valid = json.loads(first.out)["commit"]
            rows = _hostile_rows(server, reg_b.home, valid, full)
            _pull(reg_b.home)
            rows += _race_rows(server, reg_a, reg_b, cache, 40 if full else 2, 10 if full else 1)
            rows += _push_refusal_rows(server, reg_a, reg_b, spec, base, 5 if full else 1)
    finally:
        server.stop()
        if saved_home is None:
            os.environ.pop("TEAMTR_HOME", None)
        else:
            os.environ["TEAMTR_HOME"] = saved_home
    return rows
