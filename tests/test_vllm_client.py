"""The vLLM backends' parts that need no vLLM: option parsing, the server client's errors, the engine-vs-
trainer gap and TIS weights, and the message a user without the vLLM environment gets. These run in the
main environment too; the engine and server themselves are exercised by tests/test_vllm_backends.py."""
from __future__ import annotations

import importlib.util
import math
import socket

import pytest

from teamtr_adapters.errors import InputError, NotFoundError
from teamtr_adapters.runtime.backend import create_backend, parse_backend
from teamtr_adapters.runtime.logprob_gap import logprob_gap, tis_weights
from teamtr_adapters.runtime.vllm_backend import DEFAULTS, parse_options, request_seed, stop_ids
from teamtr_adapters.runtime.vllm_server import main as server_main
from teamtr_adapters.runtime.vllm_server import server_command, server_env


def test_backend_specs_parse():
    assert parse_backend("vllm") == ("vllm", None)
    assert parse_backend("vllm=max_loras:4") == ("vllm", "max_loras:4")
    assert parse_backend("vllm-server=http://127.0.0.1:8000") == ("vllm-server", "http://127.0.0.1:8000")


def test_options_parse_and_refuse_unknown_keys():
    opts = parse_options("max_loras:4,kv_cache_gib:0.5", DEFAULTS)
    assert opts == {**DEFAULTS, "max_loras": 4, "kv_cache_gib": 0.5}
    assert isinstance(opts["max_loras"], int)
    with pytest.raises(InputError, match="bad backend option 'max_lora:4'"):
        parse_options("max_lora:4", DEFAULTS)
    with pytest.raises(InputError, match="max_loras needs a number"):
        parse_options("max_loras:many", DEFAULTS)


def test_request_seeds_differ_per_request_and_call():
    seeds = {request_seed(s, i) for s in range(3) for i in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2**63 for s in seeds)
    assert request_seed(1, 0) != request_seed(0, 1)


def test_stop_ids_follow_the_generation_config(embedded_base):
    assert stop_ids(embedded_base) == [2]  # SmolLM2's <|im_end|>


def test_server_command_sets_what_the_backend_relies_on(tmp_path):
    cmd = server_command(tmp_path, port=8123, max_loras=4)
    joined = " ".join(cmd)
    assert "--enable-lora" in cmd and "--logprobs-mode processed_logprobs" in joined
    assert "--generation-config vllm" in joined and "--port 8123" in joined and "--max-loras 4" in joined
    assert f"--kv-cache-memory-bytes {1 << 30}" in joined
    assert "--no-enable-chunked-prefill --max-num-batched-tokens 8192" in joined  # no config.json here: 8192


def test_server_environment_lets_an_unchunked_step_run_for_minutes():
    """vLLM kills its engine after 300 s of one step by default; steps of up to 8k unchunked prompt tokens
    on a 2-core CPU take minutes (test_batch_longer_than_an_engine_step's batch: 447 s, two such steps), and
    a CI machine lost its server mid-test ("EngineCore encountered an issue"). A limit the user set is kept."""
    env = server_env({"PATH": "/bin"})
    assert env["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"] == "3600" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_LOGGING_LEVEL"] == "WARNING" and env["PATH"] == "/bin"
    assert server_env({"VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "60"})["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"] == "60"


def test_server_starter_prints_the_command_for_the_resolved_base(embedded_base, capsys):
    server_main(["--base", "embedded", "--port", "8124", "--max-loras", "5", "--print", "--", "--max-num-seqs", "64"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("VLLM_ALLOW_RUNTIME_LORA_UPDATING=True ")
    assert f"--model {embedded_base.path} " in line and "--port 8124" in line and "--max-loras 5" in line
    assert line.endswith("--max-num-seqs 64")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_backend_errors_are_one_clear_line(embedded_base):
    with pytest.raises(InputError, match="needs server URLs"):
        create_backend("vllm-server", embedded_base)
    with pytest.raises(InputError, match="needs server URLs"):
        create_backend("vllm-server=127.0.0.1:8000", embedded_base)
    port = _closed_port()
    with pytest.raises(NotFoundError, match=f"vLLM server http://127.0.0.1:{port} is unreachable") as e:
        create_backend(f"vllm-server=http://127.0.0.1:{port}", embedded_base)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_says_how_to_get_it(embedded_base):
    with pytest.raises(NotFoundError, match="make vllm-env"):
        create_backend("vllm", embedded_base)


def test_logprob_gap_and_tis_weights():
    engine = [[-1.0, -2.0], [-0.5]]
    trainer = [[-1.1, -1.0], [-0.5]]
    gap = logprob_gap(engine, trainer)
    assert gap["tokens"] == 3
    assert gap["mean"] == pytest.approx((0.1 - 1.0 + 0.0) / 3)
    assert gap["mean_abs"] == pytest.approx(1.1 / 3) and gap["max_abs"] == pytest.approx(1.0)
    k3 = [math.expm1(-d) + d for d in (0.1, -1.0, 0.0)]
    assert gap["kl_k3"] == pytest.approx(sum(k3) / 3) and gap["kl_k3"] > 0
    w = tis_weights(engine, trainer, cap=2.0)
    assert w[0][0] == pytest.approx(math.exp(-0.1)) and w[0][1] == 2.0 and w[1] == [1.0]  # e^1 capped at 2
    assert logprob_gap([], [])["tokens"] == 0
    with pytest.raises(InputError, match="same messages and tokens"):
        logprob_gap([[-1.0]], [[-1.0, -2.0]])
    with pytest.raises(InputError, match="cap must be positive"):
        tis_weights(engine, trainer, cap=0)
