"""Hub bundles through the real `huggingface_hub` client against the loopback Hub server: push, pull into
a fresh registry, incremental pushes, role pulls, offline pulls, and plain PEFT loading from the repo."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub_fixtures import REPO, TOKEN, fresh_home, hub, point_client_at, push, retrain  # noqa: F401  (fixture)


def version_bytes(reg, vid: str) -> dict[str, bytes]:
    d = reg.version_path(vid)
    return {f: (d / f).read_bytes() for f in ("adapter_model.safetensors", "adapter_config.json")}


def test_push_then_pull_into_fresh_home_is_bitwise_identical(hub, tiny_team, tmp_path, monkeypatch, cli):
    src = tiny_team
    result = push(cli)
    files = hub.state.files(REPO)
    assert sorted(files) == [".gitattributes", "README.md", "adapters/critic/adapter_config.json",
                             "adapters/critic/adapter_model.safetensors", "adapters/solver/adapter_config.json",
                             "adapters/solver/adapter_model.safetensors", "manifest.json", "team.toml"]
    assert result["uploaded"] == sorted(set(files) - {".gitattributes"}) and result["tag"] == "tiny-duo-r1"
    assert hub.state.refs(REPO)["tags"] == {"tiny-duo-r1": result["commit"]}
    assert hub.commit_log[-1]["parent"] is not None  # the commit was made against the parent it expected
    card = files["README.md"].decode()
    from huggingface_hub import ModelCard

    data = ModelCard(card).data
    assert data.library_name == "peft" and data.pipeline_tag == "text-generation" and data.license == "other"
    assert "| solver | `tiny-duo.solver:v1` |" in card and "base_model = AutoModelForCausalLM" in card

    dst = fresh_home(tmp_path, monkeypatch, "home-b")
    code, out, err = cli("hub", "pull", REPO, "--json")
    assert code == 0, err
    pulled = json.loads(out)
    assert pulled["created"] and pulled["commit"] == result["commit"] and pulled["team"] == "tiny-duo"
    a, b = src.manifest("tiny-duo"), dst.manifest("tiny-duo")
    assert {k: b[k] for k in ("team", "spec_hash", "base", "base_ref", "order")} == \
           {k: a[k] for k in ("team", "spec_hash", "base", "base_ref", "order")}
    assert dst.pins("tiny-duo") == src.pins("tiny-duo")
    for role, vid in src.pins("tiny-duo").items():
        assert version_bytes(dst, vid) == version_bytes(src, vid)
        meta = dst.version(vid).meta
        assert (meta["made_by"], meta["repo"], meta["commit"], meta["remote"]["name"]) == \
               ("pull", REPO, result["commit"], "v1")
    assert dst.team_spec("tiny-duo") == src.team_spec("tiny-duo")
    snapshot = Path(os.environ["HF_HUB_CACHE"]) / "models--org--tiny-duo" / "snapshots" / result["commit"]
    assert (snapshot / "manifest.json").read_bytes() == files["manifest.json"]
    events = dst.history("tiny-duo")
    assert events[-1]["event"] == "pull" and events[-1]["commit"] == result["commit"]
    assert dst.verify()["ok"]
    seen = out + err + (src.home / "history.jsonl").read_text() + (dst.home / "history.jsonl").read_text()
    assert TOKEN not in seen


def test_second_push_uploads_only_the_changed_role(hub, tiny_team, tmp_path, monkeypatch, cli):
    first = push(cli)
    solver_v1, critic_v1 = tiny_team.pins("tiny-duo")["solver"], tiny_team.pins("tiny-duo")["critic"]
    new_critic = retrain(tiny_team, "critic")
    stray = hub.state.commit(REPO, "main", {"adapters/retired/adapter_config.json": b"{}"}, title="old role")
    code, _, err = cli("hub", "push", "tiny-duo", REPO)  # main moved since this registry's push: refused
    assert code == 5 and "moved" in err and hub.state.refs(REPO)["branches"]["main"] == stray
    second = push(cli, "--force")  # overwrite it: the stray file is deleted
    assert second["uploaded"] == ["README.md", "adapters/critic/adapter_model.safetensors", "manifest.json"]
    assert second["deleted"] == ["adapters/retired/adapter_config.json"] and second["parent"] == stray
    assert hub.commit_log[-1]["added"] == second["uploaded"] and hub.commit_log[-1]["parent"] == stray
    assert hub.commit_log[-1]["deleted"] == second["deleted"] and first["commit"] != stray
    assert second["unchanged"] == 4 and second["tag"] == "tiny-duo-r2"
    manifest = json.loads(hub.state.files(REPO)["manifest.json"])
    chain = manifest["roles"]["critic"]["lineage_chain"]
    assert manifest["roles"]["critic"]["id"] == new_critic
    assert [(c["name"], c["made_by"]) for c in chain] == [("v1", "init")]

    again = push(cli)  # nothing changed: no commit, the tag already points here
    assert again["uploaded"] == [] and again["commit"] == second["commit"] and len(hub.commit_log) == 2
    assert "adapters/retired/adapter_config.json" not in hub.state.files(REPO)

    dst = fresh_home(tmp_path, monkeypatch, "home-b")
    assert cli("hub", "pull", f"{REPO}@tiny-duo-r1")[0] == 0
    assert dst.pins("tiny-duo")["critic"] != new_critic
    code, out, err = cli("hub", "pull", REPO, "--json")
    assert code == 0, err
    assert json.loads(out)["created"] is False and dst.manifest("tiny-duo")["revision"] == 2
    assert dst.pins("tiny-duo") == {"solver": solver_v1, "critic": new_critic}
    critic = dst.version(new_critic).meta
    assert critic["parent"] == critic_v1 and critic["lineage_chain"] == chain and chain[0]["id"] == critic_v1
    assert critic["metrics"] == {"reward": 0.5} and critic["remote"]["made_by"] == "train"


def test_private_push_to_a_branch(hub, tiny_team, tmp_path, monkeypatch, cli):
    result = push(cli, "--revision", "dev", "--tag", "first", "--private")
    refs = hub.state.refs(REPO)
    assert refs["branches"]["dev"] == result["commit"] and refs["tags"] == {"first": result["commit"]}
    assert hub.state.repo(REPO)["private"] and list(hub.state.files(REPO, "main")) == [".gitattributes"]
    dst = fresh_home(tmp_path, monkeypatch, "home-b")
    monkeypatch.delenv("HF_TOKEN")
    code, _, err = cli("hub", "pull", f"{REPO}@dev")
    assert code == 2 and "private" in err and dst.list_teams() == []
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert cli("hub", "pull", f"{REPO}@first")[0] == 0 and dst.pins("tiny-duo") == tiny_team.pins("tiny-duo")


def test_role_pull_downloads_only_that_role(hub, tiny_team, tmp_path, monkeypatch, cli):
    from teamtr_adapters.errors import NotFoundError
    from teamtr_adapters.registry.hub import pull_role

    push(cli)
    dst = fresh_home(tmp_path, monkeypatch, "home-b")
    hub.requests.clear()
    code, out, err = cli("hub", "pull", REPO, "--role", "critic", "--as", "mine", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["ref"] == "mine.critic:v1" and data["id"] == tiny_team.pins("tiny-duo")["critic"]
    fetched = [p for m, p in hub.requests if "/resolve/" in p and m == "GET"]
    assert fetched and not any("adapters/solver" in p for p in fetched)
    assert dst.list_teams() == [] and dst.lineages() == ["mine.critic"]

    info = pull_role(dst, "hf://org/tiny-duo@tiny-duo-r1#solver")
    assert (info.lineage, info.id, info.meta["made_by"]) == ("tiny-duo.solver", tiny_team.pins("tiny-duo")["solver"], "pull")
    assert dst.history()[-1]["role"] == "solver"
    with pytest.raises(NotFoundError, match="name one with #ROLE"):
        pull_role(dst, "hf://org/tiny-duo")


def test_offline_pull_is_served_from_the_cache(hub, tiny_team, tmp_path, monkeypatch, cli):
    push(cli)
    fresh_home(tmp_path, monkeypatch, "home-b")
    assert cli("hub", "pull", REPO)[0] == 0
    hub.stop()
    point_client_at(monkeypatch, hub_url := "http://127.0.0.1:9", Path(os.environ["HF_HUB_CACHE"]), offline=True)
    dst = fresh_home(tmp_path, monkeypatch, "home-c")
    code, out, err = cli("hub", "pull", REPO, "--json")
    assert code == 0, err
    assert dst.pins("tiny-duo") == tiny_team.pins("tiny-duo")
    code, _, err = cli("hub", "pull", "org/never-pulled")
    assert code == 2 and "not (completely) in the local Hub cache" in err and hub_url not in err


def test_cli_in_a_subprocess_uses_hf_endpoint_and_hf_token(hub, tiny_team, tmp_path, cli):
    push(cli)
    env = {**os.environ, "TEAMTR_HOME": str(tmp_path / "home-sub")}
    proc = subprocess.run([sys.executable, "-m", "teamtr_adapters", "hub", "pull", REPO, "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["roles"]["critic"]["id"] == tiny_team.pins("tiny-duo")["critic"]
    assert TOKEN not in proc.stdout + proc.stderr

    env["HF_TOKEN"] = "hf_wrong_token_value"
    proc = subprocess.run([sys.executable, "-m", "teamtr_adapters", "hub", "push", "tiny-duo", REPO],
                          env={**env, "TEAMTR_HOME": str(tiny_team.home)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "refused access" in proc.stderr and "hf_wrong_token_value" not in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line, no traceback


def test_pulled_role_loads_with_plain_peft_from_the_repo(hub, tiny_team, tiny_base, cli):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    retrain(tiny_team, "critic")
    push(cli)
    base = AutoModelForCausalLM.from_pretrained(tiny_base.path, dtype=torch.float32)
    hub.requests.clear()
    model = PeftModel.from_pretrained(base, REPO, subfolder="adapters/critic")
    assert ("GET", f"/{REPO}/resolve/main/adapters/critic/adapter_model.safetensors") in hub.requests
    expected = load_file(tiny_team.version_path(tiny_team.pins("tiny-duo")["critic"]) / "adapter_model.safetensors")
    state = model.state_dict()
    assert expected
    for key, tensor in expected.items():
        loaded = state[key.replace(".weight", ".default.weight")]
        assert torch.equal(loaded, tensor), key


def test_model_card_metadata_eval_results_and_a_runnable_snippet():
    """The card is built with huggingface_hub's ModelCard: license, pipeline_tag, base_model, the team's held-out
    accuracy as an eval result, and a usage snippet that defines `base_model` before using it."""
    import ast

    from huggingface_hub import ModelCard

    from teamtr_adapters.registry.hub import model_card

    manifest = {"team": "math-trio", "team_revision": 3, "base": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                                                 "hash": "1cf98d8446b0ad9a"},
                "roles": {"solver": {"lineage": "math-trio.solver", "name": "v2", "id": "a" * 64,
                                     "files": {"adapter_model.safetensors": "b" * 64}, "made_by": "train",
                                     "parent": "c" * 64, "lineage_chain": [{}, {}]}}}
    card = model_card(manifest, "org/math-trio", {"task": "arithmetic", "accuracy": 0.3125, "n": 32, "k": 1,
                                                  "run": "r1"})
    data = ModelCard(card).data
    assert data.license == "apache-2.0" and data.pipeline_tag == "text-generation" and data.library_name == "peft"
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    (res,) = data.eval_results
    assert res.metric_type == "accuracy" and res.metric_value == 0.3125 and res.dataset_type == "arithmetic"
    snippet = card.split("```python\n")[1].split("```")[0]
    ast.parse(snippet)
    assert snippet.index("base_model = AutoModelForCausalLM.from_pretrained") < snippet.index("PeftModel.from_pretrained(base_model")
    assert "ModelCard" not in card and "Held-out accuracy of the team: 0.312 on 32 prompts" in card
    plain = ModelCard(model_card({**manifest, "base": {"name": "/models/local", "hash": "x"}}, "org/r")).data
    assert plain.base_model is None and plain.eval_results is None and plain.license == "other"
