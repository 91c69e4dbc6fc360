"""Crash safety and concurrency of the registry, with real processes and SIGKILL."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from teamtr_adapters.registry import Registry

WRITER = """
import sys
from pathlib import Path
from teamtr_adapters.registry import Registry
home, lineage, first, *dirs = sys.argv[1:]
reg = Registry(home)
for i, d in enumerate(dirs):
    reg.add_version(lineage, Path(d), made_by="test", base={"name": "tiny", "hash": "x"}, metrics={"i": i})
print("done", flush=True)
"""


@pytest.fixture
def variants(tiny_team, tmp_path) -> list[Path]:
    """64 distinct adapter dirs (the tiny solver's v1 with different lora_B values)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    src = tiny_team.export("tiny-duo.solver:v1", tmp_path / "src")
    weights = load_file(src / "adapter_model.safetensors")
    out = []
    for i in range(64):
        d = tmp_path / f"variant{i}"
        d.mkdir()
        (d / "adapter_config.json").write_bytes((src / "adapter_config.json").read_bytes())
        rng = np.random.default_rng(i)
        save_file({k: (v + rng.normal(size=v.shape).astype(v.dtype)) for k, v in weights.items()},
                  str(d / "adapter_model.safetensors"))
        out.append(d)
    return out


def spawn(home: Path, lineage: str, dirs: list[Path]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(home), lineage, "0", *map(str, dirs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_never_leaves_a_partial_version_visible(tiny_team, variants):
    home = tiny_team.home
    rng = random.Random(0)
    killed_mid_run = 0
    for trial in range(50):
        proc = spawn(home, "crashy", rng.sample(variants, 24))
        time.sleep(rng.uniform(0.05, 0.6))
        if proc.poll() is None:
            killed_mid_run += 1
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        reg = Registry(home)
        report = reg.verify()
        assert report["ok"], (trial, report["problems"])
        for info in reg.list_versions("crashy"):
            reg.version_path(info.id)  # every visible version loads: bytes match its id
    assert killed_mid_run >= 25, "the kills should land while versions are being written"
    names = [v.name for v in Registry(home).list_versions("crashy")]
    assert len(names) == len(set(names))
    Registry(home).gc(dry_run=False)  # clears temp dirs the killed writers left behind
    assert not any((home / "tmp").iterdir())
    assert Registry(home).verify()["ok"]


def test_four_writers_lose_nothing_and_never_reuse_a_number(tiny_team, variants):
    home = tiny_team.home
    procs = [spawn(home, "shared", variants[i * 8:(i + 1) * 8]) for i in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    versions = Registry(home).list_versions("shared")
    assert sorted(int(v.name[1:]) for v in versions) == list(range(1, 33))
    assert len({v.id for v in versions}) == 32
    assert Registry(home).verify()["ok"]
