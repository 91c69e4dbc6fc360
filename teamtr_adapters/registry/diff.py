"""`adapter diff`: config differences and per-module weight deltas of two adapters (the KL part lives in
`train.kl.probe_kl`). Tensors are read with safetensors inside the functions (no torch at import)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from ..errors import IncompatibleAdapterError, InputError
from .candidates import Candidate
from .store import Registry
from .validate import CONFIG, WEIGHTS, lora_modules


def _scale(config: dict[str, Any], module: str, rank: int) -> float:
    """LoRA's scale for one module: alpha / r (alpha / sqrt(r) with rsLoRA), honouring `alpha_pattern`."""
    alpha = config.get("lora_alpha", 8)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            alpha = value
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def lora_deltas(path: Path) -> dict[str, Any]:
    """Module -> its weight delta scale * B @ A (float32), from an adapter dir."""
    from safetensors.torch import load_file

    config = json.loads((path / CONFIG).read_text())
    state = load_file(str(path / WEIGHTS))
    out = {}
    for module in lora_modules(path):
        a = state[f"base_model.model.{module}.lora_A.weight"].float()
        b = state[f"base_model.model.{module}.lora_B.weight"].float()
        out[module] = _scale(config, module, a.shape[0]) * (b @ a)
    return out


def weight_diff(a: Path, b: Path) -> list[dict[str, Any]]:
    """Per module: Frobenius norms of both weight deltas and of their difference (a missing module is zero)."""
    da, db = lora_deltas(a), lora_deltas(b)
    rows = []
    for module in sorted(set(da) | set(db)):
        x, y = da.get(module), db.get(module)
        if x is not None and y is not None and x.shape != y.shape:
            raise IncompatibleAdapterError(f"module {module!r} has weight shape {list(x.shape)} in A and "
                                           f"{list(y.shape)} in B: adapters for different bases")
        diff = x if y is None else (-y if x is None else x - y)
        assert diff is not None  # the module is in A or in B
        rows.append({"module": module, "norm_a": 0.0 if x is None else float(x.norm()),
                     "norm_b": 0.0 if y is None else float(y.norm()), "norm_diff": float(diff.norm())})
    return rows


def probe_target(registry: Registry, a: Candidate, team: str | None, role: str | None) -> tuple[str, str] | None:
    """The (team, role) whose turns probe the KL between two adapters: as given, or from A's lineage
    `TEAM.ROLE` when that team exists; None when neither says."""
    lineage = registry.version(a.id).lineage if a.stored else ""
    own_team, _, own_role = lineage.partition(".")
    team = team or (own_team if own_role and own_team in registry.list_teams() else None)
    if team is None:
        return None
    role = role or (own_role if own_team == team else None)
    if role is None:
        raise InputError(f"name the role whose turns to probe with --role (team {team!r})")
    registry.team_spec(team).role(role)
    return team, role


def config_diff(a: Path, b: Path) -> dict[str, dict[str, Any]]:
    """Adapter config keys whose values differ: key -> {"a": ..., "b": ...} (missing keys are None)."""
    ca, cb = (json.loads((p / CONFIG).read_text()) for p in (a, b))
    return {k: {"a": ca.get(k), "b": cb.get(k)} for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)}
