"""`serve` and consistent vLLM replicas (docs/scaling.md), with real vLLM servers on loopback and the tiny
random model: the served team answers OpenAI chat requests for each role, a swap moves the served name
without a restart, a load that fails on one replica is rolled back on the other, a replica that answers
as the bare base is caught, the G samples of a prompt share a replica and a dead replica's requests go to
the others. In the vLLM environment only: `.venv-vllm/bin/python -m pytest tests/test_vllm_serve.py`."""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gate_helpers import WEIGHTS, copy_adapter, perturbed
from test_vllm_train import needs_vllm, team, vllm_base_dir  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.vllm, needs_vllm]


def _models(url: str) -> dict[str, str]:
    with urllib.request.urlopen(url + "/v1/models", timeout=30) as r:
        return {m["id"]: m.get("root") for m in json.loads(r.read())["data"]}


def _chat(url: str, model: str) -> tuple[str, list[float]]:
    """A greedy 4-token chat answer through the `openai` client (the model name echoed, the log-probs)."""
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="unused")
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "What is 2 + 3?"}],
                                       max_tokens=4, temperature=0.0, logprobs=True, seed=0)
    assert r.model == model
    return r.choices[0].message.content or "", [t.logprob for t in r.choices[0].logprobs.content]


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}: {proc.stderr.read()[-3000:]}")
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            return proc.stdout.readline()
    raise AssertionError("serve printed nothing in time")


def test_serve_answers_each_role_and_follows_a_swap_without_restart(team, cli, tmp_path):
    from teamtr_adapters.runtime.vllm_server import free_port

    v1 = team.version_path(team.pins("tiny-duo")["solver"])
    code, _, err = cli("swap", "solver", str(perturbed(v1, tmp_path / "p2", scale=0.5, seed=1)), "--team", "tiny-duo")
    assert code == 0, err
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TEAMTR_HOME": str(team.home)}
    proc = subprocess.Popen([sys.executable, "-m", "teamtr_adapters", "serve", "--team", "tiny-duo", "--port",
                             str(port), "--dtype", "float32", "--poll", "0.5", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        started = json.loads(_read_line(proc, 300))
        assert started["urls"] == [url]
        pins = team.manifest("tiny-duo")["roles"]
        assert set(started["models"]) == {"tiny-duo/solver", "tiny-duo/critic", f"solver@{pins['solver']['name']}",
                                          f"critic@{pins['critic']['name']}"}
        served = _models(url)
        assert served["tiny-duo/solver"] == served["solver@v2"] == str(team.version_path(pins["solver"]["id"]))
        # each role answers an OpenAI chat request under its team name, as its fixed version name does
        before = {role: _chat(url, f"tiny-duo/{role}") for role in ("solver", "critic")}
        assert before["solver"] == _chat(url, "solver@v2") and before["critic"] == _chat(url, "critic@v1")
        assert before["solver"][1] != before["critic"][1]  # the perturbed solver is not the fresh (no-op) critic
        # the example agent loop plays the team's protocol through the openai client
        played = subprocess.run([sys.executable, str(REPO / "examples" / "openai_team.py"), "What is 2 + 3?",
                                 "--url", url, "--team", "tiny-duo", "--max-tokens", "3", "--json"],
                                env=env, capture_output=True, text=True, timeout=120)
        assert played.returncode == 0, played.stderr
        assert [t["role"] for t in json.loads(played.stdout)["turns"]] == ["solver", "critic"]

        code, _, err = cli("swap", "solver", str(perturbed(v1, tmp_path / "p3", scale=0.5, seed=2)),
                           "--team", "tiny-duo")
        assert code == 0, err
        new_path = str(team.version_path(team.pins("tiny-duo")["solver"]))
        deadline = time.monotonic() + 120
        while _models(url).get("tiny-duo/solver") != new_path and time.monotonic() < deadline:
            time.sleep(0.5)
        served = _models(url)
        assert served["tiny-duo/solver"] == served["solver@v3"] == new_path and "solver@v2" not in served
        after = _chat(url, "tiny-duo/solver")
        assert after == _chat(url, "solver@v3") and after[1] != before["solver"][1]
        assert proc.poll() is None  # the same serve process and server all along
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "tiny-duo/solver -> solver@v3 (was solver@v2)" in err
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/health", timeout=5)


def _rank1_copy(src: Path, out: Path) -> Path:
    """The adapter cut to LoRA rank 1 (the first row of A, the first column of B): loadable where
    max_lora_rank is 1."""
    from safetensors.torch import load_file, save_file

    copy_adapter(src, out)
    state = load_file(str(src / WEIGHTS))
    cut = {k: (v[:1].contiguous() if "lora_A" in k else v[:, :1].contiguous()) for k, v in state.items()}
    save_file(cut, str(out / WEIGHTS), metadata={"format": "pt"})
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg.update(r=1, lora_alpha=2)
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def _zeroed(src: Path, out: Path) -> Path:
    """The adapter with every lora_B zeroed: it answers exactly as the bare base."""
    from safetensors.torch import load_file, save_file

    copy_adapter(src, out)
    state = load_file(str(src / WEIGHTS))
    save_file({k: v * 0 if "lora_B" in k else v for k, v in state.items()}, str(out / WEIGHTS),
              metadata={"format": "pt"})
    return out


def _requests_done(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    return sum(float(m) for m in re.findall(r'^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$', text, re.M))


def test_two_replicas_load_all_or_none_detect_the_base_route_groups_and_survive_a_death(
        team, vllm_base_dir, tmp_path, capfd):
    from teamtr_adapters.errors import IncompatibleAdapterError, NotFoundError
    from teamtr_adapters.runtime.backend import GenRequest
    from teamtr_adapters.runtime.base import resolve_base
    from teamtr_adapters.runtime.replicas import ReplicaSet
    from teamtr_adapters.runtime.vllm_server import VLLMServerBackend, local_server, local_servers, stop_process_group

    v1 = team.version_path(team.pins("tiny-duo")["solver"])
    strong = perturbed(v1, tmp_path / "strong", scale=0.5)  # rank 4
    small = _rank1_copy(strong, tmp_path / "small")  # rank 1: every replica can load it
    common = dict(dtype="float32", max_loras=4)
    with local_server(vllm_base_dir, log=tmp_path / "r0.log", **common) as u0, \
            local_servers(vllm_base_dir, 1, logs=[tmp_path / "r1.log"], max_lora_rank=1, **common) as s1:
        u1 = s1[0]
        rs = ReplicaSet([u0, u1])
        # a rank-4 adapter: replica 0 loads it, replica 1 refuses; replica 0 is rolled back
        with pytest.raises(IncompatibleAdapterError, match="cannot load adapter"):
            rs.load("team/solver", strong)
        assert "team/solver" not in rs.served(u0) and "team/solver" not in rs.served(u1)
        # a name served everywhere, then moved to files one replica refuses: moved back on the other
        rs.load("team/solver", small)
        rs.check("team/solver", small)
        with pytest.raises(IncompatibleAdapterError):
            rs.load("team/solver", strong, move=True)
        assert rs.served(u0)["team/solver"] == rs.served(u1)["team/solver"] == str(small)
        # a replica that answers as the base for a name that should not: caught by the probe
        rs.load("ghost", _zeroed(small, tmp_path / "zeroed"))
        with pytest.raises(IncompatibleAdapterError, match="answers as the bare base"):
            rs.check("ghost", small, content_id=True)

        # the rollout client: groups routed to one replica each; then replica 1 dies and its share moves
        backend = VLLMServerBackend(resolve_base(str(vllm_base_dir)), [u0, u1])
        backend.ensure_adapter("small-v", small)
        prompt = backend.tokenizer("What is 1 + 1?").input_ids
        done = [_requests_done(u) for u in (u0, u1)]
        groups = [0, 0, 0, 1]
        out = backend.generate([GenRequest(prompt, "small-v", 3, group=g) for g in groups], temperature=1.0, seed=5)
        assert [_requests_done(u) - d for u, d in zip((u0, u1), done)] == [3, 1]  # round-robin would give 2, 2
        stop_process_group(s1.procs[0])
        again = backend.generate([GenRequest(prompt, "small-v", 3, group=g) for g in groups], temperature=1.0, seed=5)
        assert [r.ids for r in again] == [r.ids for r in out]  # same seeds, same weights, another replica
        assert backend.dead == {1} and backend.failovers == 1
        assert f"vLLM server {u1} is unreachable" in capfd.readouterr().err
    with pytest.raises(NotFoundError, match="every vLLM server is unreachable"):
        backend.generate([GenRequest(prompt, "small-v", 2, group=0)], temperature=1.0)
