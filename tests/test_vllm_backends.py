"""The real vLLM engine and a real vLLM server on loopback, checked against the hf backend on the real
embedded SmolLM2 (float32 on both sides, so greedy outputs must agree token for token).

Runs in the vLLM environment only: `make vllm-env`, then
`.venv-vllm/bin/python -m pytest tests/test_vllm_*.py` (docs/vllm.md)."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="needs the vLLM environment: make vllm-env, then "
                              ".venv-vllm/bin/python -m pytest tests/test_vllm_*.py"),
]

SPEC = """
name = "vduo"
base = "embedded"
[task]
name = "arithmetic"
[[roles]]
name = "solver"
system_prompt = "You are the solver. Work out the answer step by step, briefly. End with 'Answer: <number>'."
max_new_tokens = 24
[[roles]]
name = "refiner"
system_prompt = "Give the final result. Reply only with 'Answer: <number>'."
max_new_tokens = 12
"""
QUESTIONS = ["What is 7 + 5?", "What is 12 - 4?", "Tom has 3 apples and buys 6 more. How many apples does he have?"]
DTYPE = "float32"  # both backends in float32: greedy outputs comparable token for token
LOGPROB_TOL = 1e-3  # measured max |vLLM - hf| log-prob gap in float32: about 2e-5


def _perturbed(src: Path, dest: Path, seed: int) -> Path:
    """A copy of adapter dir `src` with seeded random LoRA B matrices: an adapter that changes outputs."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    weights = load_file(dest / "adapter_model.safetensors")
    g = torch.Generator().manual_seed(seed)
    for k, v in weights.items():
        if "lora_B" in k:
            weights[k] = torch.randn(v.shape, generator=g) * 0.05
    save_file(weights, dest / "adapter_model.safetensors")
    return dest


@pytest.fixture(scope="module")
def registry(tmp_path_factory, embedded_base):
    """A registry with team `vduo` pinned to perturbed versions (solver v2, refiner v2) and a solver
    candidate v3 for swapping."""
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.spec import parse_spec

    root = tmp_path_factory.mktemp("vllm-reg")
    reg = Registry(home=root / "home")
    reg.init_team(parse_spec(SPEC), embedded_base)
    pins = {}
    for role, name, seed in (("solver", "v2", 1), ("refiner", "v2", 2), ("solver", "v3", 3)):
        src = reg.resolve(f"vduo.{role}:v1").path
        info = reg.add_version(f"vduo.{role}", _perturbed(src, root / f"{role}-{name}", seed), made_by="test",
                               base=embedded_base.identity)
        assert info.name == name
        pins.setdefault(role, info.id)
    reg.update_pins("vduo", pins, {"event": "test-pins"})
    return reg


@pytest.fixture(scope="module")
def versions(registry):
    """`role:vN` -> VersionInfo of the perturbed versions."""
    return {ref: registry.resolve(f"vduo.{ref}") for ref in ("solver:v2", "refiner:v2", "solver:v3")}


@pytest.fixture(scope="module")
def hf(versions, embedded_base):
    """The hf backend (TeamModel) in float32 with every test version loaded."""
    from teamtr_adapters.runtime.backend import create_backend

    tm = create_backend("hf", embedded_base, dtype=DTYPE)
    for v in versions.values():
        tm.ensure_adapter(v.id, v.path)
    return tm


@pytest.fixture(scope="module")
def prompts(hf):
    from teamtr_adapters.runtime.protocol import build_prompt

    return [build_prompt(hf.tokenizer, "You are a helpful assistant.", q, []) for q in QUESTIONS]


@pytest.fixture(scope="module")
def hf_swapped(hf, versions, prompts):
    """The hf backend's greedy outputs of the swap candidate (solver v3) on `prompts`."""
    return greedy(hf, prompts, versions["solver:v3"].id)


@pytest.fixture(scope="module")
def hf_eval(registry, hf):
    """The hf backend's greedy team and base-alone transcripts on two held-out items."""
    from teamtr_adapters.runtime.team import load_team

    return load_team(registry, "vduo", backend=hf).evaluate(n=2, k=1, seed=0, temperature=0.0)


def greedy(backend, prompts, version, n=24):
    from teamtr_adapters.runtime.backend import GenRequest

    return backend.generate([GenRequest(p, version, n) for p in prompts], temperature=0.0, top_p=1.0, seed=0)


def assert_same_transcripts(got, want):
    """Same episodes, same message ids turn by turn, log-probs within LOGPROB_TOL."""
    assert [len(e.turns) for e in got] == [len(e.turns) for e in want]
    for g, w in zip(got, want):
        assert g.reward == w.reward and g.final_answer == w.final_answer
        for gt, wt in zip(g.turns, w.turns):
            assert (gt.role, gt.version, gt.prompt_ids) == (wt.role, wt.version, wt.prompt_ids)
            assert gt.message_ids == wt.message_ids, f"{gt.role}: {gt.text!r} != {wt.text!r}"
            assert max(abs(a - b) for a, b in zip(gt.logprobs, wt.logprobs)) < LOGPROB_TOL


def assert_same_results(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.ids == w.ids
        assert len(g.logprobs) == len(g.ids) and max(abs(a - b) for a, b in zip(g.logprobs, w.logprobs)) < LOGPROB_TOL


def check_team_eval(backend, registry, hf_eval):
    """The team's greedy eval through `backend` equals the hf backend's, team and base alone."""
    from teamtr_adapters.runtime.team import load_team

    report, team_eps, base_eps = load_team(registry, "vduo", backend=backend).evaluate(n=2, k=1, seed=0,
                                                                                     temperature=0.0)
    want_report, want_team, want_base = hf_eval
    assert_same_transcripts(team_eps, want_team)
    assert_same_transcripts(base_eps, want_base)
    assert report["team_result"] == want_report["team_result"]
    # The perturbed adapters are really applied: the team's first messages differ from the base's.
    assert [e.turns[0].message_ids for e in team_eps] != [e.turns[0].message_ids for e in base_eps]


def check_swap_and_unload(backend, versions, hf_swapped, prompts):
    """A new version is served by the running backend (same outputs as hf); the old one is unloaded."""
    from teamtr_adapters.errors import InputError

    old, new = versions["solver:v2"], versions["solver:v3"]
    backend.ensure_adapter(old.id, old.path)  # the serving version (already loaded when the team was)
    backend.ensure_adapter(new.id, new.path)
    backend.ensure_adapter(new.id, new.path)  # idempotent
    got_new = greedy(backend, prompts, new.id)
    assert_same_results(got_new, hf_swapped)
    assert [r.ids for r in got_new] != [r.ids for r in greedy(backend, prompts, old.id)]
    assert old.id in backend.engine_versions()
    backend.unload_adapter(old.id)
    assert old.id not in backend.engine_versions() and new.id in backend.engine_versions()
    with pytest.raises(InputError, match="is not loaded"):
        greedy(backend, prompts[:1], old.id)
    backend.unload_adapter(old.id)  # no-op


def check_batch_longer_than_an_engine_step(backend, versions, prompts):
    """More prompt tokens than vLLM's CPU default engine step (4096; 2048 for a server), seeded: whole
    prompts per step, no crash (chunked prefill rewinds seeded generators, which CPU ones cannot do)."""
    from teamtr_adapters.runtime.backend import GenRequest

    v = versions["solver:v3"]
    backend.ensure_adapter(v.id, v.path)
    long = [[100 + i] + (p * 16)[:400] for i, p in enumerate(prompts * 11)]  # distinct: no prefix-cache hits
    assert sum(map(len, long)) > 3 * 4096
    results = backend.generate([GenRequest(p, v.id, 4) for p in long], temperature=0.8, top_p=1.0, seed=3)
    assert len(results) == len(long) and all(1 <= len(r.ids) <= 4 for r in results)


@pytest.fixture(scope="class")
def engine(embedded_base):
    """An in-process vLLM engine (float32), shut down after its test class."""
    from teamtr_adapters.runtime.backend import create_backend

    backend = create_backend("vllm=max_loras:4", embedded_base, dtype=DTYPE)
    yield backend
    backend.close()


class TestEngine:
    def test_team_eval_matches_hf(self, engine, registry, hf_eval):
        check_team_eval(engine, registry, hf_eval)

    def test_swapped_version_served_without_restart_and_old_unloaded(self, engine, versions, hf_swapped, prompts):
        check_swap_and_unload(engine, versions, hf_swapped, prompts)

    def test_sampled_logprobs_are_those_of_the_tempered_softmax(self, engine, versions, hf, prompts):
        from teamtr_adapters.runtime.backend import GenRequest

        v = versions["solver:v3"]
        engine.ensure_adapter(v.id, v.path)
        reqs = [GenRequest(p, v.id, 16) for p in prompts]
        first = engine.generate(reqs, temperature=0.8, top_p=1.0, seed=7)
        assert [r.ids for r in engine.generate(reqs, temperature=0.8, top_p=1.0, seed=7)] == [r.ids for r in first]
        trainer = hf.logprobs(prompts, [r.ids for r in first], v.id, temperature=0.8)
        for r, t in zip(first, trainer):
            assert max(abs(a - b) for a, b in zip(r.logprobs, t.tolist())) < LOGPROB_TOL

    def test_batch_longer_than_an_engine_step(self, engine, versions, prompts):
        check_batch_longer_than_an_engine_step(engine, versions, prompts)

    def test_adapter_rank_above_the_engine_limit_is_refused(self, engine, versions, tmp_path):
        import json

        from teamtr_adapters.errors import IncompatibleAdapterError

        big = shutil.copytree(versions["solver:v3"].path, tmp_path / "r32")
        config = json.loads((big / "adapter_config.json").read_text())
        (big / "adapter_config.json").write_text(json.dumps({**config, "r": 32}))
        with pytest.raises(IncompatibleAdapterError, match="max_lora_rank 16 .*vllm=max_lora_rank:32"):
            engine.ensure_adapter("rank32", big)


@pytest.fixture(scope="class")
def server(embedded_base, tmp_path_factory):
    """A vLLM server (`runtime.vllm_server.local_server`, float32) on a free loopback port."""
    from teamtr_adapters.runtime.vllm_server import local_server

    from conftest import LIVE_SERVER_LOGS

    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with local_server(embedded_base.path, log=log, dtype=DTYPE, max_loras=4) as url:
        LIVE_SERVER_LOGS.add(log)
        yield url
        LIVE_SERVER_LOGS.discard(log)


@pytest.fixture(scope="class")
def client(server, embedded_base):
    """A vllm-server backend talking to that server."""
    from teamtr_adapters.runtime.backend import create_backend

    return create_backend(f"vllm-server={server}", embedded_base)


class TestServer:
    def test_team_eval_matches_hf(self, client, registry, hf_eval):
        check_team_eval(client, registry, hf_eval)

    def test_swapped_version_served_without_restart_and_old_unloaded(self, client, versions, hf_swapped, prompts):
        check_swap_and_unload(client, versions, hf_swapped, prompts)

    def test_batch_longer_than_an_engine_step(self, client, versions, prompts):
        check_batch_longer_than_an_engine_step(client, versions, prompts)

    def test_second_client_over_two_urls_shares_loaded_versions(self, server, client, versions, prompts,
                                                                embedded_base):
        from teamtr_adapters.runtime.backend import create_backend

        v = versions["solver:v3"]
        client.ensure_adapter(v.id, v.path)
        other = create_backend(f"vllm-server={server},{server}", embedded_base)
        other.ensure_adapter(v.id, v.path)  # already loaded on the server: counts as loaded
        assert other.versions == [v.id]
        assert [r.ids for r in greedy(other, prompts, v.id)] == [r.ids for r in greedy(client, prompts, v.id)]
