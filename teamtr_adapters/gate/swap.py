"""The swap gate: replace one agent of a team only when the evidence says the team will not regress.

`swap(registry, team, role, ref, gate=GateConfig(...))` runs, in order:
1. candidate resolution and compatibility (`registry.candidates`; never overridable);
2. with a gate, `evaluate`: the held-out budget of `n` prompts x `samples` episodes is played in `looks`
   batches by the incumbent team and by the team with the candidate in place (same prompts, same seeds);
   after each batch the score decision (`gate.stats`: a group-sequential non-inferiority test with margin
   epsilon at level alpha, plus the coordination-regression cap) may stop early with accepted or refused;
   then the exact full-vocabulary D_tok(incumbent || candidate) on the candidate team's states at the role's
   turns, in float32 (`train.kl`), with its standard error;
3. the decision: refused if D_tok > delta or the score test refuses; accepted if the score test accepts;
   inconclusive otherwise (the budget was spent without deciding; the report says how many more prompts
   would likely decide). `force` overrides a refusal or an inconclusive result and is recorded; the report
   goes into the history event in every case.

Nothing here imports torch at module import.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..errors import GateInconclusive, GateRefused, InputError
from ..registry import Registry
from ..registry.candidates import Candidate, check_candidate, resolve_candidate
from ..runtime.base import BaseRef
from ..types import GateReport, SwapResult
from .stats import ACCEPTED, INCONCLUSIVE, REFUSED, Design, decide_scores

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GateConfig:
    """The gate's thresholds and evaluation budget.

    `delta`: the largest accepted D_tok(incumbent || candidate) per token state (the trust region's radius);
    `epsilon`: the non-inferiority margin of the team's mean score; `alpha`: the one-sided level of each
    score test (the chance of accepting a candidate worse by epsilon or more, and of refusing an equally good
    one, is at most alpha); `n` held-out prompts x `samples` episodes each, played in `looks` batches;
    `max_regressions`: the cap on the share of prompts the incumbent team solved and the candidate team fails
    (refused when significantly above; >= 1: off); `seed` fixes prompts and sampling; `solved`: the per-prompt
    score at or above which a prompt counts as solved."""

    delta: float = 0.01
    epsilon: float = 0.1
    alpha: float = 0.05
    n: int = 360
    samples: int = 1
    looks: int = 4
    max_regressions: float = 0.3
    seed: int = 0
    solved: float = 0.5

    def check(self) -> "GateConfig":
        checks = [(self.delta > 0, "--delta must be positive"), (0 < self.epsilon < 1, "--epsilon must be in (0, 1)"),
                  (0 < self.alpha < 0.5, "--alpha must be in (0, 0.5)"),
                  (1 <= self.n <= 4096, "--n must be in 1..4096"), (1 <= self.samples <= 64, "--samples must be in 1..64"),
                  (1 <= self.looks <= 10, "--looks must be in 1..10"),
                  (self.max_regressions > 0, "--max-regressions must be positive (>= 1: off)")]
        for ok, msg in checks:
            if not ok:
                raise InputError(msg)
        return self

    @property
    def design(self) -> Design:
        return Design(epsilon=self.epsilon, alpha=self.alpha, n=self.n, looks=self.looks,
                      max_regressions=self.max_regressions, solved=self.solved)


def kl_verdict(d_tok: float, cfg: GateConfig, role: str, ref: str) -> list[str]:
    """The KL half: a reason to refuse (naming the next step) when D_tok > delta, else nothing."""
    if d_tok <= cfg.delta:
        return []
    return [f"D_tok {d_tok:.4g} > delta {cfg.delta:g}: the candidate is farther from the incumbent than one "
            f"trust-region update; distil it toward the incumbent with `teamtr-adapters align {role} {ref}` and "
            f"gate the aligned version, or accept a larger distance with --delta"]


def evaluate(registry: Registry, team: str, role: str, candidate: Candidate, cfg: GateConfig, *,
             base: BaseRef, device: str = "auto", dtype: str = "auto", backend: str = "hf",
             progress: Progress | None = None) -> GateReport:
    """The gate's evidence and decision for putting `candidate` in `role` (see the module docstring)."""
    from ..runtime.backend import parse_backend
    from ..runtime.engine import close_engine, rollout_engine
    from ..runtime.open import open_team_model
    from ..runtime.protocol import rollout
    from ..runtime.rows import agent_rows
    from ..tasks import get_task
    from ..train.kl import kl_pass, kl_summary, upcast_for_kl

    say = progress or (lambda desc, done, total: None)
    parse_backend(backend)
    spec = registry.team_spec(team)
    design = cfg.design
    tm, pins = open_team_model(registry, team, base=base, device=device, dtype=dtype,
                               extra={candidate.id: candidate.path})
    incumbent = registry.version(pins[role])
    items = get_task(spec.task).sample(cfg.n, cfg.seed, split="heldout")
    sizes = [min(s, len(items)) for s in design.look_sizes()]
    engine = rollout_engine(backend, tm, device=device, dtype=dtype)
    inc_eps: list[Any] = []
    cand_eps: list[Any] = []
    decision = None

    def play(team_pins: dict[str, str], batch: list[Any], start: int, seed: int, who: str) -> list[Any]:
        eps = rollout(engine, spec, batch, group_size=cfg.samples, seed=seed, pins=team_pins, tokenizer=tm.tokenizer,
                      progress=lambda done, total: say(f"rollouts: {who} team", done, total))
        for e in eps:
            e.item_index += start
        return sorted(eps, key=lambda e: (e.item_index, e.sample))

    try:
        if engine is not tm:
            for vid in {*pins.values(), candidate.id}:
                engine.ensure_adapter(vid, candidate.path if vid == candidate.id else registry.version_path(vid))
        start = 0
        for k, size in enumerate(sizes, 1):
            batch, seed = items[start:size], cfg.seed + 7919 * (k - 1)
            if batch:
                new_inc = play(pins, batch, start, seed, "incumbent")
                new_cand = (new_inc if candidate.id == incumbent.id
                            else play({**pins, role: candidate.id}, batch, start, seed, "candidate"))
                inc_eps += new_inc
                cand_eps += new_cand
            start = size
            inc, cand = _scores(inc_eps, start), _scores(cand_eps, start)
            decision = decide_scores(inc, cand, design, look=k)
            if decision.outcome != "continue":
                break
    finally:
        close_engine(engine, tm)
    assert decision is not None  # the loop runs at least one look
    rows = agent_rows(cand_eps, role, [0.0] * len(cand_eps))
    say("D_tok on the candidate team's states", 0, 1)
    upcast_for_kl(tm)
    kl = kl_summary(kl_pass(tm, incumbent.id, candidate.id, rows, temperature=spec.sampling.temperature or 1.0), rows)
    say("D_tok on the candidate team's states", 1, 1)
    used = decision.prompts
    kl_reasons = kl_verdict(kl["d_tok"], cfg, role, candidate.ref)
    outcome = REFUSED if kl_reasons else decision.outcome
    reasons = kl_reasons + (decision.reasons if decision.outcome != ACCEPTED else [])
    if outcome == REFUSED and decision.outcome == INCONCLUSIVE:
        reasons = kl_reasons  # the KL half decides; the score half's "inconclusive" is no reason to refuse
    regs = set(decision.regressions)
    return {
        "team": team, "role": role, "incumbent": {"id": incumbent.id, "ref": incumbent.ref},
        "candidate": candidate.to_dict(), "backend": backend,
        "config": {**asdict(cfg), "temperature": spec.sampling.temperature},
        "alpha": cfg.alpha, "epsilon": cfg.epsilon, "delta": cfg.delta,
        "budget": {"prompts": cfg.n, "samples": cfg.samples, "looks": decision.looks},
        "prompts": used, "episodes": len(cand_eps), "looks_used": decision.look, "contexts": len(rows),
        **kl,
        "score_incumbent": _mean(inc), "score_candidate": _mean(cand),
        "diff_mean": decision.mean, "diff_lcb": decision.lcb, "diff_ucb": decision.ucb,
        "z_accept": decision.z_accept, "z_refuse": decision.z_refuse, "boundary": decision.boundary,
        "score_decision": decision.outcome,
        "regressions": decision.regressions, "improvements": len(decision.improvements),
        "regression_share_lcb": decision.regression_share_lcb,
        "regressed_prompts": [{"index": i, "prompt": items[i].prompt, "answer": items[i].answer}
                              for i in decision.regressions],
        "per_prompt": [{"prompt": it.prompt, "answer": it.answer, "incumbent": a, "candidate": b,
                        "regressed": i in regs} for i, (it, a, b) in enumerate(zip(items, inc, cand))],
        "more_prompts": decision.more_prompts if outcome == INCONCLUSIVE else None,
        "accepted": outcome == ACCEPTED, "decision": outcome, "reasons": reasons,
    }


def _scores(episodes: list[Any], n: int) -> list[float]:
    """Mean reward per prompt (episodes of one prompt share its `item_index`)."""
    totals, counts = [0.0] * n, [0] * n
    for e in episodes:
        totals[e.item_index] += e.reward
        counts[e.item_index] += 1
    return [t / max(c, 1) for t, c in zip(totals, counts)]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def swap(registry: Registry, team: str, role: str, ref: str, *, gate: GateConfig | None = None,
         force: bool = False, dry_run: bool = False, device: str = "auto", dtype: str = "auto",
         backend: str = "hf", base: BaseRef, progress: Progress | None = None) -> SwapResult:
    """Put REF in `role`: resolve, check compatibility, (gate, its rollouts played by `backend`), then
    move the pin and record the event.

    Returns the result (with the gate report). A refusal records a `swap-refused` event and raises
    `GateRefused` (exit 3); an inconclusive gate records `swap-inconclusive` and raises `GateInconclusive`
    (exit 7); both carry the result, and neither records anything with `dry_run`. `force` swaps anyway and
    records it."""
    if force and gate is None:
        raise InputError("--force overrides the gate's decision; use it together with --gate")
    # One hold of the registry lock from the candidate's import to the pin move (gated rollouts included): a
    # `registry gc` waits instead of removing the imported, not-yet-pinned candidate.
    with registry.hold():
        return _swap(registry, team, role, ref, gate=gate, force=force, dry_run=dry_run, device=device,
                     dtype=dtype, backend=backend, base=base, progress=progress)


def _swap(registry: Registry, team: str, role: str, ref: str, *, gate: GateConfig | None, force: bool,
          dry_run: bool, device: str, dtype: str, backend: str, base: BaseRef, progress: Progress | None
          ) -> SwapResult:
    spec = registry.team_spec(team)
    spec.role(role)
    incumbent = registry.version(registry.pins(team)[role])
    candidate = resolve_candidate(registry, team, role, ref, base, store=not dry_run)
    compat = check_candidate(candidate.path, base)
    result: SwapResult = {
        "team": team, "role": role, "ref": ref, "dry_run": dry_run, "gated": gate is not None,
        "incumbent": {"id": incumbent.id, "ref": incumbent.ref}, "candidate": candidate.to_dict(),
        "compat": compat, "report": None, "accepted": True, "decision": ACCEPTED, "forced": False, "revision": None,
    }
    if gate is not None:
        report = evaluate(registry, team, role, candidate, gate, base=base, device=device, dtype=dtype,
                          backend=backend, progress=progress)
        result["report"], result["accepted"], result["decision"] = report, report["accepted"], report["decision"]
        result["forced"] = force and not report["accepted"]
    event = {"event": "swap", "role": role, "ref": ref, "candidate": candidate.id, "gated": gate is not None,
             "forced": result["forced"], "report": result["report"]}
    if not result["accepted"] and not force:
        verdict = result["decision"]
        if not dry_run:
            registry.append_history({**event, "event": f"swap-{verdict}", "team": team,
                                     "revision_at": registry.manifest(team)["revision"]})
        rep = result["report"]
        assert rep is not None  # only a gate refuses
        if verdict == INCONCLUSIVE:
            assert rep["more_prompts"] is not None  # set for an inconclusive result
            raise GateInconclusive(f"gate inconclusive for {candidate.ref} in {team}/{role} after {rep['prompts']} "
                                   f"prompts: about {rep['more_prompts']} more prompts would likely decide "
                                   f"(--n {rep['prompts'] + rep['more_prompts']}), or --epsilon larger", result)
        raise GateRefused(f"gate refused {candidate.ref} for {team}/{role}: " + "; ".join(rep["reasons"]), result)
    if not dry_run:
        result["revision"] = registry.update_pins(team, {role: candidate.id}, event)["revision"]
    return result
