"""The swap gate: replace one agent of a team only when the evidence says the team will not regress.

`swap(registry, team, role, ref, gate=GateConfig(...))` runs, in order:
1. candidate resolution (a version of the role's lineage, an alias, `LINEAGE:vN`, an id prefix, a local PEFT
   adapter dir, imported first, or `hf://ORG/REPO[@REV][#ROLE]`, pulled first);
2. compatibility (`check_candidate`): safe files, a loadable LoRA config, the team's base identity, target
   modules that exist in the base with matching shapes; never overridable;
3. with a gate, `evaluate`: paired rollouts of held-out prompts with the incumbent team and with the
   candidate in place (same prompts, same seeds), the exact full-vocabulary D_tok(incumbent || candidate)
   on the candidate team's states at the role's turns, the paired score difference with a seeded bootstrap
   lower confidence bound, and the coordination regressions (prompts the incumbent team solved that the
   candidate team fails);
4. the decision: accept only if D_tok <= delta and LCB >= -epsilon; `force` overrides a refusal and is
   recorded; the report goes into the history event whether the swap was accepted or refused.

`rollback_role` / `rollback_team` restore earlier pins exactly (by version id) from the history.
Nothing here imports torch at module import.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import GateRefused, IncompatibleAdapterError, InputError, NotFoundError
from .registry import Registry, VersionInfo, lineage_of
from .registry.store import content_hashes
from .registry.validate import CONFIG, check_adapter_dir, check_compatible, lora_modules
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
                  (1 <= self.n <= 4096, "--n must be in 1..4096"), (1 <= self.samples <= 64, "samples must be in 1..64"),
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
        try:
            from .registry.hub import pull_role
        except ImportError:
            raise InputError("hf:// references need the Hub support (teamtr_adapters.registry.hub.pull_role), "
                             "which this installation lacks") from None
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
             base: BaseRef, device: str = "auto", dtype: str = "auto",
             progress: Progress | None = None) -> dict[str, Any]:
    """The gate's evidence and decision for putting `candidate` in `role` (see the module docstring)."""
    raise NotImplementedError  # filled in once the runtime lands


# -- swap ------------------------------------------------------------------------------------------
def swap(registry: Registry, team: str, role: str, ref: str, *, gate: GateConfig | None = None,
         force: bool = False, dry_run: bool = False, device: str = "auto", dtype: str = "auto",
         base: BaseRef, progress: Progress | None = None) -> dict[str, Any]:
    """Put REF in `role`: resolve, check compatibility, (gate), then move the pin and record the event.

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
                          progress=progress)
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

