"""The swap gate: replace one agent of a team only when the evidence says the team will not regress.

`swap(registry, team, role, ref, gate=GateConfig(...))` runs, in order:
1. candidate resolution (a version of the role's lineage, an alias, `LINEAGE:vN`, an id prefix, a local PEFT
   adapter dir, imported first, or `hf://ORG/REPO[@REV][#ROLE]`, pulled first);
2. compatibility (`check_candidate`): safe files, a loadable LoRA config, the team's base identity, target
   modules that exist in the base with matching shapes; never overridable;
3. with a gate, `evaluate`: paired rollouts of held-out prompts with the incumbent team and with the
   candidate in place (same prompts, same seeds), the exact full-vocabulary D_tok(incumbent || candidate)
   on the candidate team's states at the role's turns (in float32: `train.align.upcast_for_kl`), the
   paired score difference with a seeded bootstrap lower confidence bound, and the coordination
   regressions (prompts the incumbent team solved that the candidate team fails); the rollouts go through
   the chosen backend (`hf`, `vllm`, `vllm-server=URL`), D_tok always through the HF TeamModel (exact);
4. the decision: accept only if D_tok <= delta and LCB >= -epsilon; `force` overrides a refusal and is
   recorded; the report goes into the history event whether the swap was accepted or refused.

`rollback_role` / `rollback_team` restore earlier pins exactly (by version id) from the history.
Nothing here imports torch at module import.
"""
from __future__ import annotations

import json
import math
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import GateRefused, IncompatibleAdapterError, InputError, NotFoundError
from .registry import Registry, lineage_of
from .registry.store import content_hashes
from .registry.validate import CONFIG, WEIGHTS, check_adapter_dir, check_compatible, lora_modules
from .runtime.base import BaseRef

HUB_PREFIX = "hf://"


@dataclass(frozen=True)
class GateConfig:
    """The gate's thresholds and evaluation budget.

    `delta`: the largest accepted D_tok(incumbent || candidate) per token state (the trust region's
    radius: a candidate closer than one TeamTR update is accepted); `epsilon`: the largest accepted drop of
    the team's mean score, as a lower confidence bound; `n` held-out prompts x `samples` episodes each;
    `seed` fixes prompts, sampling and the bootstrap; `solved`: the per-prompt score at or above which a
    prompt counts as solved (for coordination regressions).
    """

    delta: float = 0.01
    epsilon: float = 0.05
    n: int = 16
    samples: int = 1
    seed: int = 0
    confidence: float = 0.95
    n_boot: int = 2000
    solved: float = 0.5

    def check(self) -> "GateConfig":
        checks = [(self.delta > 0, "--delta must be positive"), (self.epsilon >= 0, "--epsilon must be >= 0"),
                  (1 <= self.n <= 4096, "--n must be in 1..4096"), (1 <= self.samples <= 64, "--samples must be in 1..64"),
                  (0.5 <= self.confidence < 1, "confidence must be in [0.5, 1)"), (self.n_boot >= 100, "n_boot must be >= 100")]
        for ok, msg in checks:
            if not ok:
                raise InputError(msg)
        return self


@dataclass(frozen=True)
class Candidate:
    """An adapter considered for a role: its content id, a human label, its dir, and whether it is stored."""

    id: str
    ref: str
    path: Path
    stored: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "ref": self.ref, "stored": self.stored}


# -- statistics ------------------------------------------------------------------------------------
def paired_lcb(diffs: list[float], *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> float:
    """One-sided percentile-bootstrap lower confidence bound of the mean of paired differences
    (resampling prompts with replacement, seeded: the same inputs give the same bound)."""
    if not diffs:
        raise InputError("no paired scores to compare")
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(math.fsum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return means[int(math.floor((1.0 - confidence) * n_boot))]


def coordination_regressions(incumbent: list[float], candidate: list[float], solved: float = 0.5) -> list[int]:
    """Indices of the prompts the incumbent team solved (score >= `solved`) that the candidate team fails."""
    return [i for i, (a, b) in enumerate(zip(incumbent, candidate)) if a >= solved > b]


def decide(d_tok: float, lcb: float, cfg: GateConfig) -> tuple[bool, list[str]]:
    """(accepted, reasons): accept only if D_tok <= delta and the score LCB >= -epsilon."""
    reasons = []
    if not d_tok <= cfg.delta:
        reasons.append(f"D_tok {d_tok:.6g} > delta {cfg.delta:g}")
    if not lcb >= -cfg.epsilon:
        reasons.append(f"score LCB {lcb:+.4g} < -epsilon {-cfg.epsilon:g}")
    return not reasons, reasons


# -- candidates and compatibility ------------------------------------------------------------------
def _looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.startswith((".", "~"))


def resolve_candidate(registry: Registry, team: str, role: str, ref: str, base: BaseRef, *,
                      store: bool = True) -> Candidate:
    """Turn REF into a candidate: a registry reference (resolved in the role's lineage), a local adapter
    dir (imported into the role's lineage when `store`; checked in place otherwise) or an `hf://` bundle
    role (pulled into the registry)."""
    if ref.startswith(HUB_PREFIX):
        from .registry.hub import pull_role

        info = pull_role(registry, ref, role=role, base=base)
        return Candidate(info.id, info.ref, info.path)
    if not _looks_like_path(ref):
        try:
            info = registry.resolve(ref, lineage_of(team, role))
            return Candidate(info.id, info.ref, registry.version_path(info.id))
        except NotFoundError:
            if not Path(ref).is_dir():
                raise
    path = Path(ref).expanduser()
    if not path.exists():
        raise NotFoundError(f"no adapter dir {ref!r}")
    if store:
        info = registry.import_adapter(path, lineage_of(team, role), base)
        return Candidate(info.id, info.ref, info.path)
    check_adapter_dir(path)
    check_compatible(path, base)
    return Candidate(content_hashes(path)[1], str(path), path, stored=False)


def check_candidate(path: Path, base: BaseRef) -> dict[str, Any]:
    """Compatibility of an adapter dir with the team's base; raises on the first failure, returns a summary.

    Safe files only (safetensors, no pickles or symlinks), a LoRA config that peft loads, the recorded base
    identity (if any) equal to the team's, and every LoRA module present in the base with matching shapes
    (an adapter matching no module would silently act as the bare base)."""
    config = check_adapter_dir(path)
    check_compatible(path, base)
    from peft import LoraConfig

    try:
        LoraConfig.from_pretrained(str(path))
    except (TypeError, ValueError, KeyError) as e:
        raise IncompatibleAdapterError(f"{path / CONFIG}: peft cannot load this LoRA config "
                                       f"({str(e).splitlines()[0]})") from None
    modules = lora_modules(path)
    kinds = sorted({m.rsplit(".", 1)[-1] for m in modules})
    return {"base": base.identity, "r": config["r"], "lora_alpha": config.get("lora_alpha"),
            "modules": len(modules), "module_kinds": kinds, "ok": True}


# -- evaluation ------------------------------------------------------------------------------------
Progress = Callable[[str, int, int], None]


def evaluate(registry: Registry, team: str, role: str, candidate: Candidate, cfg: GateConfig, *,
             base: BaseRef, device: str = "auto", dtype: str = "auto", backend: str = "hf",
             progress: Progress | None = None) -> dict[str, Any]:
    """The gate's evidence and decision for putting `candidate` in `role` (see the module docstring).

    Both teams roll out the same `cfg.n` held-out prompts x `cfg.samples` with the same seed, so the
    turns before the role's first turn are identical and any difference comes from the candidate.
    `backend` plays the rollouts (the candidate loaded under its id); D_tok is computed by the HF
    TeamModel on the candidate team's rollout states whichever backend played them."""
    from .runtime.backend import parse_backend
    from .runtime.protocol import rollout
    from .runtime.team_model import TeamModel
    from .tasks import get_task
    from .train.align import kl_pass, upcast_for_kl
    from .train.policy import agent_rows
    from .train.stage import close_engine, rollout_engine

    say = progress or (lambda desc, done, total: None)
    parse_backend(backend)
    spec = registry.team_spec(team)
    pins = registry.pins(team)
    incumbent = registry.version(pins[role])
    tm = TeamModel(base, device=device, dtype=dtype)
    adapters = {**{vid: registry.version_path(vid) for vid in set(pins.values())}, candidate.id: candidate.path}
    for vid, path in adapters.items():
        tm.ensure_adapter(vid, path)
    items = get_task(spec.task).sample(cfg.n, cfg.seed, split="heldout")
    engine = rollout_engine(backend, tm, device=device, dtype=dtype)

    def play(team_pins: dict[str, str], who: str) -> list[Any]:
        episodes = rollout(engine, spec, items, group_size=cfg.samples, seed=cfg.seed, pins=team_pins,
                           tokenizer=tm.tokenizer,
                           progress=lambda done, total: say(f"rollouts: {who} team", done, total))
        return sorted(episodes, key=lambda e: (e.item_index, e.sample))

    try:
        if engine is not tm:
            for vid, path in adapters.items():
                engine.ensure_adapter(vid, path)
        inc_eps = play(pins, "incumbent")
        cand_eps = inc_eps if candidate.id == incumbent.id else play({**pins, role: candidate.id}, "candidate")
    finally:
        close_engine(engine, tm)
    rows = agent_rows(cand_eps, role, [0.0] * len(cand_eps))
    say("D_tok on the candidate team's states", 0, 1)
    upcast_for_kl(tm)
    kl = kl_pass(tm, incumbent.id, candidate.id, rows, temperature=spec.sampling.temperature or 1.0)
    say("D_tok on the candidate team's states", 1, 1)
    inc, cand = _scores(inc_eps, len(items)), _scores(cand_eps, len(items))
    diffs = [b - a for a, b in zip(inc, cand)]
    d_tok = float(kl.mean()) if kl.numel() else 0.0
    lcb = paired_lcb(diffs, confidence=cfg.confidence, n_boot=cfg.n_boot, seed=cfg.seed)
    accepted, reasons = decide(d_tok, lcb, cfg)
    return {
        "team": team, "role": role, "incumbent": {"id": incumbent.id, "ref": incumbent.ref},
        "candidate": candidate.to_dict(), "backend": backend,
        "config": {**asdict(cfg), "temperature": spec.sampling.temperature},
        "prompts": len(items), "episodes": len(cand_eps), "contexts": len(rows), "kl_states": int(kl.numel()),
        "d_tok": d_tok, "d_tok_p99": float(kl.quantile(0.99)) if kl.numel() else 0.0,
        "d_tok_max": float(kl.max()) if kl.numel() else 0.0,
        "score_incumbent": sum(inc) / len(inc), "score_candidate": sum(cand) / len(cand),
        "diff_mean": sum(diffs) / len(diffs), "diff_lcb": lcb,
        "regressions": coordination_regressions(inc, cand, cfg.solved),
        "improvements": len(coordination_regressions(cand, inc, cfg.solved)),
        "per_prompt": [{"prompt": it.prompt, "answer": it.answer, "incumbent": a, "candidate": b}
                       for it, a, b in zip(items, inc, cand)],
        "accepted": accepted, "decision": "accepted" if accepted else "refused", "reasons": reasons,
    }


def _scores(episodes: list[Any], n: int) -> list[float]:
    """Mean reward per prompt (episodes of one prompt share its `item_index`)."""
    totals, counts = [0.0] * n, [0] * n
    for e in episodes:
        totals[e.item_index] += e.reward
        counts[e.item_index] += 1
    return [t / max(c, 1) for t, c in zip(totals, counts)]


# -- swap ------------------------------------------------------------------------------------------
def swap(registry: Registry, team: str, role: str, ref: str, *, gate: GateConfig | None = None,
         force: bool = False, dry_run: bool = False, device: str = "auto", dtype: str = "auto",
         backend: str = "hf", base: BaseRef, progress: Progress | None = None) -> dict[str, Any]:
    """Put REF in `role`: resolve, check compatibility, (gate, its rollouts played by `backend`), then
    move the pin and record the event.

    Returns the result (with the gate report). A gate refusal records a `swap-refused` event (unless
    `dry_run`) and raises `GateRefused` carrying the result, unless `force`, which swaps and records it.
    """
    if force and gate is None:
        raise InputError("--force overrides the gate's decision; use it together with --gate")
    spec = registry.team_spec(team)
    spec.role(role)
    incumbent = registry.version(registry.pins(team)[role])
    candidate = resolve_candidate(registry, team, role, ref, base, store=not dry_run)
    compat = check_candidate(candidate.path, base)
    result: dict[str, Any] = {
        "team": team, "role": role, "ref": ref, "dry_run": dry_run, "gated": gate is not None,
        "incumbent": {"id": incumbent.id, "ref": incumbent.ref}, "candidate": candidate.to_dict(),
        "compat": compat, "report": None, "accepted": True, "forced": False, "revision": None,
    }
    if gate is not None:
        report = evaluate(registry, team, role, candidate, gate, base=base, device=device, dtype=dtype,
                          backend=backend, progress=progress)
        result["report"] = report
        result["accepted"] = report["accepted"]
        result["forced"] = force and not report["accepted"]
    event = {"event": "swap", "role": role, "ref": ref, "candidate": candidate.id, "gated": gate is not None,
             "forced": result["forced"], "report": result["report"]}
    if not result["accepted"] and not force:
        if not dry_run:
            registry.append_history({**event, "event": "swap-refused", "team": team,
                                     "revision_at": registry.manifest(team)["revision"]})
        raise GateRefused(f"gate refused {candidate.ref} for {team}/{role}: "
                          + "; ".join(result["report"]["reasons"]), result)
    if not dry_run:
        result["revision"] = registry.update_pins(team, {role: candidate.id}, event)["revision"]
    return result


# -- adapter diff ----------------------------------------------------------------------------------
def locate(registry: Registry, ref: str) -> Candidate:
    """A stored version (any registry reference) or a local adapter dir (checked, not imported)."""
    if _looks_like_path(ref) or (Path(ref).is_dir() and ":" not in ref):
        path = Path(ref).expanduser()
        check_adapter_dir(path)
        return Candidate(content_hashes(path)[1], str(path), path, stored=False)
    info = registry.resolve(ref)
    return Candidate(info.id, info.ref, registry.version_path(info.id))


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


def probe_kl(registry: Registry, team: str, role: str, a: Candidate, b: Candidate, *, probes: int, seed: int,
             base: BaseRef, device: str = "auto", dtype: str = "auto",
             progress: Progress | None = None) -> dict[str, Any]:
    """D_tok(A || B) on the states of `role`'s turns in training-prompt rollouts of `team` with A in place."""
    from .runtime.team_model import TeamModel
    from .train.align import kl_pass, probe_rows, upcast_for_kl

    for c in (a, b):
        check_compatible(c.path, base)
    spec = registry.team_spec(team)
    pins = {**registry.pins(team), role: a.id}
    tm = TeamModel(base, device=device, dtype=dtype)
    for vid in set(pins.values()) - {a.id}:
        tm.ensure_adapter(vid, registry.version_path(vid))
    tm.ensure_adapter(a.id, a.path)
    tm.ensure_adapter(b.id, b.path)
    rows = probe_rows(tm, spec, pins, role, probes, seed, progress or (lambda desc, done, total: None))
    upcast_for_kl(tm)
    kl = kl_pass(tm, a.id, b.id, rows, temperature=spec.sampling.temperature or 1.0)
    return {"team": team, "role": role, "probes": probes, "seed": seed, "contexts": len(rows),
            "states": int(kl.numel()), "d_tok": float(kl.mean())}


def config_diff(a: Path, b: Path) -> dict[str, dict[str, Any]]:
    """Adapter config keys whose values differ: key -> {"a": ..., "b": ...} (missing keys are None)."""
    ca, cb = (json.loads((p / CONFIG).read_text()) for p in (a, b))
    return {k: {"a": ca.get(k), "b": cb.get(k)} for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)}


# -- rollback --------------------------------------------------------------------------------------
def pins_at(registry: Registry, team: str, revision: int) -> dict[str, str]:
    """The team's pins (role -> version id) right after manifest revision `revision`."""
    for e in registry.history(team):
        if e.get("revision") == revision and e.get("pins_after"):
            return dict(e["pins_after"])
    known = sorted({e["revision"] for e in registry.history(team) if e.get("pins_after") and "revision" in e})
    raise NotFoundError(f"team {team!r} has no revision {revision} in its history (revisions: "
                        f"{', '.join(map(str, known)) or 'none'})")


def holder_stack(registry: Registry, team: str, role: str) -> list[str]:
    """The role's holders as an undo stack, replayed from history: every pin change pushes the new
    holder, except a plain `rollback ROLE` (an undo), which pops; the last entry is the current holder."""
    stack: list[str] = []
    for e in registry.history(team):
        after = (e.get("pins_after") or {}).get(role)
        if after is None:
            continue
        before = (e.get("pins_before") or {}).get(role)
        if not stack or before is None:
            stack = [after]
        elif before != after:
            if e.get("event") == "rollback" and e.get("undo") and len(stack) > 1 and stack[-2] == after:
                stack.pop()
            else:
                stack.append(after)
    return stack


def rollback_role(registry: Registry, team: str, role: str, to_revision: int | None = None) -> dict[str, Any]:
    """Restore `role`'s previous holder (an undo of its last change), or its pin at `to_revision`."""
    registry.team_spec(team).role(role)
    current = registry.pins(team)[role]
    if to_revision is None:
        stack = holder_stack(registry, team, role)
        if len(stack) < 2:
            raise InputError(f"{team}/{role} has no earlier holder to roll back to")
        target, event = stack[-2], {"event": "rollback", "role": role, "undo": True}
    else:
        target = pins_at(registry, team, to_revision).get(role)
        if target is None:
            raise NotFoundError(f"revision {to_revision} of team {team!r} pins no role {role!r}")
        event = {"event": "rollback", "role": role, "to_revision": to_revision}
    if target == current:
        raise InputError(f"{team}/{role} already holds {registry.version(current).ref}; nothing to roll back")
    return registry.update_pins(team, {role: target}, event)


def rollback_team(registry: Registry, team: str, revision: int) -> dict[str, Any]:
    """Restore every pin of `team` exactly as it was at manifest revision `revision`."""
    target = pins_at(registry, team, revision)
    current = registry.pins(team)
    changes = {r: v for r, v in target.items() if r in current and current[r] != v}
    if not changes:
        raise InputError(f"team {team!r} already holds the pins of revision {revision}; nothing to roll back")
    return registry.update_pins(team, changes, {"event": "team-rollback", "to_revision": revision})

