"""Shared fixtures: a tiny random Llama (with the embedded model's tokenizer) for unit tests, the real
embedded SmolLM2 for integration tests, and an isolated registry home per test."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from benchmarks.chaos import TINY_SPEC  # the tiny two-role team; the chaos campaigns use the same

REPO = Path(__file__).resolve().parent.parent
# Keep the converted embedded model between local runs; a clean CI clone converts it once.
os.environ.setdefault("TEAMTR_CACHE", str(REPO / ".cache" / "teamtr"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The logs of the local vLLM servers tests are running now: a failing test's report ends with their tails,
# since a server's own traceback (why its engine died) is only there. Tests add and discard their logs.
LIVE_SERVER_LOGS: set[Path] = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed:
        for log in sorted(LIVE_SERVER_LOGS):
            tail = log.read_text(errors="replace")[-6000:] if log.is_file() else "(no log file)"
            report.sections.append((f"vLLM server log {log} (its end)", tail))


@pytest.fixture(scope="session")
def embedded_base():
    """The real embedded SmolLM2-135M-Instruct, resolved through the path users get."""
    from teamtr_adapters.runtime.base import resolve_base

    return resolve_base("embedded")


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory, embedded_base) -> Path:
    """A tiny random Llama (2 layers, hidden 64) saved as a safetensors dir with SmolLM2's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(out)
    for f in embedded_base.path.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, out / f.name)
    (out / "teamtr_base.json").write_text(json.dumps({"name": "tiny-llama"}))
    return out


@pytest.fixture(scope="session")
def tiny_base(tiny_base_dir):
    from teamtr_adapters.runtime.base import resolve_base

    return resolve_base(str(tiny_base_dir))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty registry home ($TEAMTR_HOME) for one test."""
    h = tmp_path / "home"
    monkeypatch.setenv("TEAMTR_HOME", str(h))
    return h


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: `cli("team", "list", "--json")` -> (exit code, stdout, stderr)."""
    from teamtr_adapters.cli.app import run

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke


@pytest.fixture(scope="session")
def tiny_spec(tiny_base_dir):
    """A two-role team spec (solver, critic) over the tiny base."""
    from teamtr_adapters.spec import parse_spec

    return parse_spec(TINY_SPEC.format(base=tiny_base_dir))


@pytest.fixture
def tiny_team(home, tiny_spec, tiny_base):
    """A registry at `home` holding team `tiny-duo` (fresh v1 per role)."""
    from teamtr_adapters.registry import Registry

    reg = Registry()
    reg.init_team(tiny_spec, tiny_base)
    return reg


@pytest.fixture(scope="module")
def adapter_dirs(tiny_base, tmp_path_factory):
    """Two adapters on the tiny base with non-zero LoRA B (a fresh LoRA acts as the base), perturbed differently."""
    import torch
    from safetensors.torch import load_file, save_file

    from teamtr_adapters.runtime.lora import init_adapters
    from teamtr_adapters.spec import LoraSpec

    out = tmp_path_factory.mktemp("adapters")
    dirs = init_adapters(tiny_base, LoraSpec(), {"a": 1, "b": 2}, out)
    for i, d in enumerate(dirs.values()):
        f = d / "adapter_model.safetensors"
        g = torch.Generator().manual_seed(i)
        save_file({k: v + 0.5 * torch.randn(v.shape, generator=g) if "lora_B" in k else v
                   for k, v in load_file(f).items()}, f)
    return dirs


@pytest.fixture(scope="module")
def tm(tiny_base, adapter_dirs):
    """A float32 TeamModel on the tiny base with `adapter_dirs`' two adapters loaded as versions "aa"*32 and
    "bb"*32 (ids shaped like registry content hashes)."""
    from teamtr_adapters.runtime.team_model import TeamModel

    model = TeamModel(tiny_base, device="cpu", dtype="float32")
    model.ensure_adapter("aa" * 32, adapter_dirs["a"])
    model.ensure_adapter("bb" * 32, adapter_dirs["b"])
    return model
