"""Data-parallel component updates (train.distributed): the same update run by 2 gloo processes under
torchrun and by one process, on the same registry and rollout seeds. The 2-process run must split the loss
rows between its ranks, reach the same trust-region decisions, accept the same parameters within 1e-5
(the split changes only the micro-batch padding, i.e. float rounding), and write exactly one new version."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from teamtr_adapters.registry import Registry

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from dp_worker import train_once  # noqa: E402

# lr and delta make the second and third steps leave the region (backtracks), so the decision is exercised
CONFIG = dict(order="solver", steps=3, group_size=4, prompts=3, max_new_tokens=4, micro_batch=2, lr=5e-2,
              delta=0.02, probe_prompts=2, redraws=0)
TOL = 1e-5


def _weights(reg: Registry, vid: str) -> dict[str, torch.Tensor]:
    return load_file(str(reg.version_path(vid) / "adapter_model.safetensors"))


def _train_events(reg: Registry) -> list[dict]:
    return [e for e in reg.history("tiny-duo") if e.get("event") == "train"]


def test_two_gloo_processes_match_one_and_write_one_version(tiny_team, tmp_path):
    home1 = Path(tiny_team.home)
    home2 = tmp_path / "home2"
    shutil.copytree(home1, home2)
    before = tiny_team.manifest("tiny-duo")["roles"]["solver"]["id"]
    n_versions = len(tiny_team.list_versions())

    # two ranks under the real launcher (torch.distributed.run is `torchrun`), one thread each
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TEAMTR_HOME": str(home2)}
    out2 = tmp_path / "out2"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(REPO / "tests" / "dp_worker.py"), str(home2), str(out2), json.dumps(CONFIG)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the one-process reference, in this process, one thread like the ranks
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = train_once(home1, tmp_path / "out1", CONFIG)
    finally:
        torch.set_num_threads(threads)
    assert one["world"] == 1

    r0, r1 = (json.loads((out2 / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["run"] == r1["run"]
    # the loss rows were split: each rank computed part of every pass, together all of it
    assert r0["total_rows"] == r1["total_rows"] > 0
    assert r0["local_rows"] + r1["local_rows"] == r0["total_rows"] and 0 < r1["local_rows"] < r0["total_rows"]
    # the same decision on both ranks and as in one process
    keys = ("steps", "accepted_steps", "backtracks", "rejected_steps", "no_signal", "reward_before", "reward_after")
    for a, b, c in zip(one["records"], r0["records"], r1["records"]):
        assert [a[k] for k in keys] == [b[k] for k in keys] == [c[k] for k in keys]
        assert abs(a["d_tok_mean"] - b["d_tok_mean"]) <= TOL and b["d_tok_mean"] == c["d_tok_mean"]
        assert b["beta"] == c["beta"] and abs(a["beta"] - b["beta"]) <= 1e-9 * max(1.0, a["beta"])
    assert one["records"][0]["backtracks"] >= 1 and one["records"][0]["accepted_steps"] >= 1
    assert r0["pins"] == r1["pins"]

    # accepted parameters: one process vs two, within TOL
    reg1, reg2 = Registry(home1), Registry(home2)
    v1, v2 = one["pins"]["solver"], r0["pins"]["solver"]
    assert v1 != before and v2 != before
    w1, w2 = _weights(reg1, v1), _weights(reg2, v2)
    assert w1.keys() == w2.keys()
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    step = max(float((w1[k] - _weights(reg1, before)[k]).abs().max()) for k in w1)
    assert diff <= TOL < step, (diff, step)

    # exactly one new version and one train event, written by rank 0 alone
    assert len(reg2.list_versions()) == n_versions + 1
    assert len(_train_events(reg2)) == 1 == len(_train_events(reg1))
    runs = list((home2 / "runs").iterdir())
    assert len(runs) == 1 and len((runs[0] / "updates.jsonl").read_text().splitlines()) == len(r0["records"])
    assert json.loads((runs[0] / "summary.json").read_text())["data_parallel"] == 2


def test_rows_are_split_in_contiguous_blocks_covering_every_row():
    from teamtr_adapters.runtime.rows import LossRows
    from teamtr_adapters.train.distributed import DataParallel

    rows = LossRows(prompts=[[i] for i in range(7)], completions=[[i, i] for i in range(7)], adv=list(range(7)),
                    episode=list(range(7)), engine_logprobs=[[0.0, 0.0]] * 7)
    for world in (1, 2, 3, 8):
        shards = [DataParallel(rank=r, world=world).shard(rows) for r in range(world)]
        assert [p for s in shards for p in s.prompts] == rows.prompts
        assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def test_train_cli_under_torchrun_prints_once_and_records_the_world(tiny_team):
    """`train` through the real launcher: only rank 0 prints (one JSON document on stdout) and the run
    says it was data-parallel."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TEAMTR_HOME": str(tiny_team.home)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "teamtr_adapters", "train", "solver", "--team", "tiny-duo", "--updates", "1",
                           "--steps", "1", "-P", "2", "-G", "2", "--max-new-tokens", "2", "--probe-prompts", "0",
                           "--device", "cpu", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # one document: a second rank printing would break this
    assert summary["data_parallel"] == 2 and summary["updates"] == 1
    assert len(list((Path(tiny_team.home) / "runs").iterdir())) == 1
