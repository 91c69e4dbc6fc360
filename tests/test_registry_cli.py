"""CLI over the registry: one clear line and a non-zero exit on bad input, registry unchanged."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_registry_store import snapshot


@pytest.mark.parametrize("body, message", [
    ("name = 'x'\n[[roles]\nname='a'", "malformed TOML"),
    ("name = 'x'\ncolour = 'red'\n[[roles]]\nname = 'a'", "unknown key 'colour'"),
    ("name = 'x'\n[sampling]\ntemprature = 0.5\n[[roles]]\nname = 'a'", "unknown key 'temprature' in [sampling]"),
    ("name = 'x'\n[[roles]]\nname = 'a/b'", "invalid role name 'a/b'"),
    ("name = '../x'\n[[roles]]\nname = 'a'", "invalid team name '../x'"),
    ("name = 'x'\n[trust_region]\ndelta = -1.0\n[[roles]]\nname = 'a'", "trust_region.delta must be positive"),
])
def test_bad_specs_are_one_line_errors(cli, tiny_team, tmp_path, body, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(body)
    before = snapshot(tiny_team.home)
    code, out, err = cli("team", "init", str(spec))
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert snapshot(tiny_team.home) == before


@pytest.mark.parametrize("args, message", [
    (["team", "show", "nope"], "no team 'nope'"),
    (["team", "show", "../etc"], "invalid team name"),
    (["team", "init", "math-trio", "--name", "/abs/path"], "invalid team name"),
    (["team", "init", "no-such-template"], "no template or spec file"),
    (["adapter", "show", "tiny-duo.solver:v7"], "has no version or alias 'v7'"),
    (["adapter", "show", "tiny-duo.judge:v1"], "no lineage 'tiny-duo.judge'"),
    (["adapter", "show", "../x:v1"], "invalid lineage"),
    (["adapter", "list", "a/b"], "invalid lineage"),
    (["history", "--team", "nope"], "no team 'nope'"),
])
def test_unknown_or_unsafe_names(cli, tiny_team, args, message):
    before = snapshot(tiny_team.home)
    code, out, err = cli(*args)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert snapshot(tiny_team.home) == before


def test_import_pickle_dir_and_foreign_base_via_cli(cli, tiny_team, tiny_base_dir, tmp_path):
    reg = tiny_team
    src = reg.export("tiny-duo.solver:v1", tmp_path / "a")
    (src / "adapter_model.bin").write_bytes(b"not safe")
    before = snapshot(reg.home)
    code, _, err = cli("adapter", "import", str(src), "mine", "--base", str(tiny_base_dir))
    assert code == 2 and "pickle" in err
    (src / "adapter_model.bin").unlink()
    code, _, err = cli("adapter", "import", str(src), "mine")  # default base: the embedded SmolLM2
    assert code == 2 and "made for base tiny-llama" in err
    assert snapshot(reg.home) == before
    code, out, _ = cli("adapter", "import", str(src), "mine", "--team", "tiny-duo", "--json")
    assert code == 0 and json.loads(out)["name"] == "v1"


def test_json_outputs_and_verify_exit_code(cli, tiny_team):
    code, out, _ = cli("team", "list", "--json")
    assert code == 0 and json.loads(out)[0]["team"] == "tiny-duo"
    code, out, _ = cli("adapter", "list", "tiny-duo.critic", "--json")
    assert [v["ref"] for v in json.loads(out)] == ["tiny-duo.critic:v1"]
    code, out, _ = cli("registry", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    info = tiny_team.resolve("tiny-duo.critic:v1")
    (info.path / "adapter_config.json").write_text("{}")
    code, out, err = cli("registry", "verify", "--json")
    assert code == 4 and json.loads(out)["ok"] is False and "1 problem(s) found" in err
    code, out, _ = cli("history", "--json")
    assert json.loads(out)[0]["event"] == "init"


def test_help_and_verify_do_not_import_torch(tiny_team):
    probe = ("import sys\nfrom teamtr_adapters.cli.app import run\n"
             "codes = [run(['--help']), run(['registry', 'verify']), run(['team', 'list', '--json'])]\n"
             "assert codes == [0, 0, 0], codes\n"
             "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
             "assert not heavy, heavy\nprint('clean')")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("clean")
