"""benchmarks/learning.py's bookkeeping (no model): `--resume` only continues runs made with the same setting."""
from __future__ import annotations

import json

import pytest

from benchmarks import learning


def _log(tmp_path, runs):
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    return out


def test_resume_refuses_runs_of_another_setting(tmp_path):
    a = learning.parse(["--temperature", "0.3", "--out", str(tmp_path)])
    same = {"method": "teamtr", "seed": 0, "setting": learning.setting(a)}
    learning.check_resumable([same], a, tmp_path / "runs.jsonl")  # same setting: fine
    other = {**same, "setting": {**same["setting"], "temperature": 0.5, "lr": 1e-3}}
    with pytest.raises(SystemExit, match=r"^error: --resume: .* teamtr seed 0 run with another setting "
                                         r"\(lr 0.001 here 0.002, temperature 0.5 here 0.3\)"):
        learning.check_resumable([other], a, tmp_path / "runs.jsonl")
    with pytest.raises(SystemExit, match="no recorded setting"):
        learning.check_resumable([{"method": "stale", "seed": 1}], a, tmp_path / "runs.jsonl")


def test_resume_check_runs_before_anything_is_written(tmp_path, capsys):
    """main() stops on a mismatched log before it loads a model, and leaves the log as it was."""
    out = _log(tmp_path, [{"method": "teamtr", "seed": 0, "setting": {"temperature": 0.5}}])
    before = (out / "runs.jsonl").read_text()
    with pytest.raises(SystemExit, match="another setting"):
        learning.main(["--resume", "--out", str(out)])
    assert (out / "runs.jsonl").read_text() == before
