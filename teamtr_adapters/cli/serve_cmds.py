"""`serve`: a team's pinned roles as LoRA modules of vLLM OpenAI-compatible servers (docs/scaling.md)."""
from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from .render import JsonOpt, console


def _say(line: str) -> None:
    """One progress line on stderr, flushed (stdout carries --json)."""
    sys.stderr.write(line.rstrip("\n") + "\n")
    sys.stderr.flush()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    team: Optional[str] = typer.Option(None, "--team", "-t", help="The team to serve (default: the only team)."),
    port: int = typer.Option(8000, "--port", help="Port of the first replica; replica k listens on PORT+k."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface the servers listen on (0.0.0.0: all)."),
    replicas: int = typer.Option(1, "--replicas", help="vLLM servers to start on this machine (each on its own "
                                 "cores on CPU, its own device on CUDA)."),
    attach: Optional[str] = typer.Option(None, "--attach", help="Start nothing: keep these running servers "
                                         "(URL,URL,...; started with `python -m teamtr_adapters.runtime."
                                         "vllm_server`) on the team's pins."),
    max_loras: int = typer.Option(0, "--max-loras", help="Adapters one batch may mix (0: 2 x roles + 1)."),
    max_lora_rank: int = typer.Option(16, "--max-lora-rank"),
    dtype: str = typer.Option("auto", "--dtype", help="The servers' dtype (auto: vLLM's choice)."),
    kv_cache_gib: float = typer.Option(1.0, "--kv-cache-gib", help="KV cache per server in GiB (0: vLLM's default)."),
    poll: float = typer.Option(2.0, "--poll", help="Seconds between checks of the team's manifest."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="Check with a short greedy probe that each "
                               "replica answers with a new version, not as the bare base."),
    once: bool = typer.Option(False, "--once", help="Sync the pins, print what is served and exit (with "
                              "--attach; the servers keep running)."),
    as_json: bool = JsonOpt,
) -> None:
    """Serve a team over vLLM's OpenAI API: model "TEAM/ROLE" (moves with swaps) or "ROLE@VERSION"."""
    from contextlib import ExitStack

    from ..errors import InputError
    from ..runtime.replicas import ReplicaSet
    from ..serve import TeamServer
    from .home import default_team, open_registry

    if replicas < 1 or poll <= 0:
        raise InputError("--replicas must be >= 1 and --poll > 0")
    if once and not attach:
        raise InputError("--once needs --attach (servers that outlive this command)")
    reg = open_registry()
    team = default_team(reg, team)
    spec = reg.team_spec(team)
    urls = [u.strip() for u in attach.split(",") if u.strip()] if attach else []
    with ExitStack() as stack:
        if not urls:
            from ..runtime.open import team_base
            from ..runtime.vllm_backend import import_vllm
            from ..runtime.vllm_server import local_servers, replica_envs

            import_vllm()  # a clear error outside the vLLM environment, before anything starts
            base = team_base(reg, team)
            home = reg.home / "serve" / team
            home.mkdir(parents=True, exist_ok=True)
            logs = [home / f"replica-{k}.log" for k in range(replicas)]
            _say(f"starting {replicas} vLLM server(s) of {base.path} (logs: {home})")
            urls = stack.enter_context(local_servers(
                base.path, replicas, logs=logs, ports=[port + k for k in range(replicas)], envs=replica_envs(replicas),
                host=host, max_loras=max_loras or 2 * len(spec.role_names) + 1, max_lora_rank=max_lora_rank,
                dtype=dtype, kv_cache_gib=kv_cache_gib or None, startup_s=900))
        server = TeamServer(reg, team, ReplicaSet(urls), probe=probe, say=_say)
        moved = server.sync()
        data = {"team": team, "urls": urls, "revision": server.revision, "models": server.names()}
        if as_json:
            sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
            sys.stdout.flush()
        else:
            for line in moved:
                console.print(line, highlight=False)
            console.print(f"serving {team} (manifest revision {server.revision}) at "
                          f"{', '.join(u + '/v1' for u in urls)}: models "
                          f"{', '.join(sorted(server.names()))}", highlight=False, soft_wrap=True)
            sys.stdout.flush()
        if once:
            return
        server.run(poll)
