"""`serve`'s refusals, in any environment: one `error:` line and exit 2, nothing started. The served
behaviour itself is tested against real vLLM servers in tests/test_vllm_serve.py."""
from __future__ import annotations

import importlib.util

import pytest


def test_serve_refuses_bad_arguments(tiny_team, cli):
    code, _, err = cli("serve", "--team", "tiny-duo", "--replicas", "0")
    assert code == 2 and err.startswith("error: --replicas must be >= 1") and "Traceback" not in err
    code, _, err = cli("serve", "--team", "tiny-duo", "--once")
    assert code == 2 and "--once needs --attach" in err
    code, _, err = cli("serve", "--team", "nope", "--attach", "http://127.0.0.1:9")
    assert code == 2 and "nope" in err and "Traceback" not in err


def test_serve_attached_to_a_dead_server_says_so(tiny_team, cli):
    from teamtr_adapters.runtime.vllm_server import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, out, err = cli("serve", "--team", "tiny-duo", "--attach", url, "--once")
    assert code == 2 and out == "" and f"error: vLLM server {url} is unreachable" in err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_serve_without_vllm_says_how_to_get_it(tiny_team, cli):
    code, _, err = cli("serve", "--team", "tiny-duo")
    assert code == 2 and "make vllm-env" in err and "Traceback" not in err
