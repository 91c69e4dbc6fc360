"""One data-parallel training run on the tiny team, for tests/test_train_distributed.py: launched with
`torchrun --standalone --nproc-per-node N tests/dp_worker.py HOME OUT CONFIG_JSON`, or called in-process
(`train_once`) for the one-process reference. Every rank writes OUT/rank<R>.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def even_first_token(episode: Any) -> float:
    """A synthetic reward with spread for the random tiny model: the final message starts with an even id."""
    return float(episode.turns[-1].message_ids[0] % 2 == 0)


def train_once(home: Path, out: Path, config: dict[str, Any], role: str = "solver") -> dict[str, Any]:
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.train.stage import TrainConfig, Trainer, run_stages

    with Trainer(Registry(home), "tiny-duo", TrainConfig(**config), device="cpu", dtype="float32",
                 single_role=role, reward_fn=even_first_token) as t:
        result = run_stages(t, 1)
        report = {"rank": t.dp.rank, "world": t.dp.world, "local_rows": t.dp.local_rows,
                  "total_rows": t.dp.total_rows, "pins": dict(t.pins), "run": t.run_id,
                  "records": [r.to_dict() for r in result.records],
                  "rewards": [[r["reward_before"], r["reward_after"]] for r in (x.to_dict() for x in result.records)]}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{report['rank']}.json").write_text(json.dumps(report, default=str))
    return report


if __name__ == "__main__":
    train_once(Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]))
