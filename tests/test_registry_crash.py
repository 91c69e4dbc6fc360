"""Crash safety and concurrency of the registry, with real processes and SIGKILL."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from teamtr_adapters.registry import Registry

# Adds `count` versions, each a fresh variant of the adapter in `src` (seeded, so every write is new content).
WRITER = """
import sys, tempfile
from pathlib import Path
import numpy as np
from safetensors.numpy import load_file, save_file
from teamtr_adapters.registry import Registry
home, lineage, src, seed, count = sys.argv[1:]
src = Path(src)
weights = load_file(src / "adapter_model.safetensors")
reg = Registry(home)
print("ready", flush=True)
for i in range(int(count)):
    rng = np.random.default_rng([int(seed), i])
    d = Path(tempfile.mkdtemp())
    (d / "adapter_config.json").write_bytes((src / "adapter_config.json").read_bytes())
    save_file({k: v + rng.normal(size=v.shape).astype(v.dtype) for k, v in weights.items()},
              str(d / "adapter_model.safetensors"))
    reg.add_version(lineage, d, made_by="test", base={"name": "tiny", "hash": "x"}, metrics={"i": i})
print("done", flush=True)
"""


def spawn(home: Path, lineage: str, src: Path, seed: int, count: int) -> subprocess.Popen:
    """Start a writer and return once it is about to write its first version."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(home), lineage, str(src), str(seed), str(count)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.communicate()[1]
    return proc


def test_sigkill_never_leaves_a_partial_version_visible(tiny_team, tmp_path):
    home = tiny_team.home
    src = tiny_team.export("tiny-duo.solver:v1", tmp_path / "src")
    # Time uninterrupted writers so the kills below land inside the write loop on a machine of any speed: the
    # fastest of three (the first one runs on cold file caches and was seen taking twice as long as later ones).
    spans = []
    for k in range(3):
        proc = spawn(home, "crashy", src, seed=10_000 + k, count=24)
        start = time.perf_counter()
        assert proc.wait(timeout=300) == 0, proc.communicate()[1]
        spans.append(time.perf_counter() - start)
    span = min(spans)
    rng = random.Random(0)
    killed_mid_run = 0
    for trial in range(50):
        proc = spawn(home, "crashy", src, seed=trial, count=24)
        time.sleep(rng.uniform(0.02, 0.9) * span)
        if proc.poll() is None:
            killed_mid_run += 1
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        reg = Registry(home)
        report = reg.verify()
        assert report["ok"], (trial, report["problems"])
        for info in reg.list_versions("crashy"):
            reg.version_path(info.id)  # every visible version loads: bytes match its id
    print(f"write loop {span:.2f} s; {killed_mid_run}/50 kills landed mid-run")
    assert killed_mid_run >= 25, "the kills should land while versions are being written"
    names = [v.name for v in Registry(home).list_versions("crashy")]
    assert len(names) == len(set(names))
    Registry(home).gc(dry_run=False)  # clears temp dirs the killed writers left behind
    assert not any((home / "tmp").iterdir())
    assert Registry(home).verify()["ok"]


def test_four_writers_lose_nothing_and_never_reuse_a_number(tiny_team, tmp_path):
    home = tiny_team.home
    src = tiny_team.export("tiny-duo.solver:v1", tmp_path / "src")
    procs = [spawn(home, "shared", src, seed=i, count=8) for i in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    versions = Registry(home).list_versions("shared")
    assert sorted(int(v.name[1:]) for v in versions) == list(range(1, 33))
    assert len({v.id for v in versions}) == 32
    assert Registry(home).verify()["ok"]
