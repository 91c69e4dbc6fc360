"""Hub calls and wall time per command of a Hub-backed registry (`--registry hf://org/reg`), on the loopback
Hub of tests/hub_server.py with the real `huggingface_hub` client and the embedded math-trio.

    python -m benchmarks.hub_registry_calls [--tiny]

Home A makes the team; home B (a second $TEAMTR_HOME: another machine) reads it cold, then warm, trains one
component update and makes a gated swap; home A then reads B's writes. Each row counts the HTTP requests the
loopback Hub received during the command, by kind: `info` (repo_info: the branch head), `tree` (the recursive
listing), `get` (file downloads), `preupload`+`commit` (one commit), `create` (repo creation)."""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOC = "hf://org/reg"
TOKEN = "hf_bench_token"
TRAIN = ["--updates", "1", "-P", "2", "-G", "2", "--max-new-tokens", "8", "--steps", "1", "--probe-prompts", "2",
         "--redraws", "0", "--no-diag", "--json"]
GATE = ["--gate", "--n", "8", "--looks", "1", "--epsilon", "0.5", "--json"]


def kind(method: str, path: str) -> str:
    if "/resolve/" in path:
        return "get"
    for key in ("preupload", "commit", "tree", "revision", "create"):
        if f"/{key}" in path:
            return {"revision": "info"}.get(key, key)
    return f"{method} {path}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny random two-role team instead of math-trio")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ.setdefault("TEAMTR_CACHE", str(ROOT / ".cache" / "teamtr"))
    from benchmarks.chaos import TINY_SPEC
    from hub_chaos import client_at, run_cli
    from hub_server import HubServer

    work = Path(tempfile.mkdtemp(prefix="hub-registry-calls-"))
    server = HubServer(work / "hub", tokens=(TOKEN,)).start()
    rows = []
    team, template, critic, solver = "math-trio", "math-trio", "critic", "solver"
    if args.tiny:
        from benchmarks.chaos import make_tiny_base

        base_dir = make_tiny_base(work / "tiny-llama")
        spec = work / "tiny.toml"
        spec.write_text(TINY_SPEC.format(base=base_dir))
        team, template = "tiny-duo", str(spec)

    def cmd(home: str, label: str, *argv: str) -> dict:
        os.environ["TEAMTR_HOME"] = str(work / home)
        n, t0 = len(server.requests), time.perf_counter()
        out = run_cli(*argv, "--registry", LOC)
        wall = time.perf_counter() - t0
        assert out.code == 0 and out.traceback is None, (argv, out.err, out.traceback)
        kinds = collections.Counter(kind(m, p) for m, p in server.requests[n:])
        row = {"home": home, "command": label, "calls": sum(kinds.values()), "by_kind": dict(kinds),
               "wall_s": round(wall, 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    try:
        with client_at(server.url, work / "hf-cache", TOKEN):
            cmd("home-a", "team init (first write: creates the repo)", "team", "init", template)
            cmd("home-b", "team list (cold cache)", "team", "list")
            cmd("home-b", "team list (warm, head unchanged)", "team", "list")
            cmd("home-b", "team show", "team", "show", team)
            cmd("home-b", "adapter list", "adapter", "list")
            cmd("home-b", "adapter show", "adapter", "show", f"{team}.{critic}:v1")
            cmd("home-b", "history", "history")
            cmd("home-b", "train update (weights not cached)", "train", critic, "--team", team, *TRAIN)
            cmd("home-b", "train update (weights cached)", "train", critic, "--team", team, *TRAIN)
            cmd("home-b", "swap --gate", "swap", solver, "v1", "--team", team, *GATE)
            cmd("home-b", "swap (no gate)", "swap", solver, "v1", "--team", team, "--json")
            cmd("home-a", "team list (after B's writes)", "team", "list")
            cmd("home-a", "team show", "team", "show", team)
    finally:
        server.stop()
    print("| command | home | Hub calls | by kind | wall s |")
    print("|---|---|---|---|---|")
    for r in rows:
        by = ", ".join(f"{k} {v}" for k, v in sorted(r["by_kind"].items()))
        print(f"| {r['command']} | {r['home'][-1].upper()} | {r['calls']} | {by} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
