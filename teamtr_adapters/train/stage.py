"""The TeamTR loop, CleanRL-style: read `run_stages` top to bottom.

One stage updates the agents one at a time in the update order. Before each update `teamtr` rolls out
the *current* team (the intermediate team, fresh occupancy); the baselines differ only in how often
the rollouts are refreshed (`baselines.refresh_every`) and in `stale-is`'s importance factor. One
component update of agent j:

1. group-normalised, clipped advantages per trajectory;
2. loss rows = agent j's own messages (other agents' messages are context only);
3. a trainable copy of j's pre-update version; optimiser steps on the clipped surrogate minus
   beta * D_tok, with D_tok the exact token KL to the frozen pre-update version on the same states;
   after every step D_tok is measured and a step outside delta is backtracked or rolled back (beta up);
4. the accepted parameters become a new immutable registry version (lineage: parent, the other
   agents' versions in the rollouts, rollout seed, config, metrics), the manifest moves, history grows.

Suffix resampling: after agent j is updated, every turn before j's first turn in an episode was
produced by agents that did not change, so those prefixes are kept and only the turns from j onward
are regenerated with the new team (exact in distribution). `resample="full"` regenerates everything.

Rollout backends: with `backend="hf"` the trainer's TeamModel also generates. With another backend
(`vllm`, `vllm-server=URL`) rollouts go through that engine, which holds exactly the team's current
pins: each committed version is loaded under its registry id and the version it replaced is unloaded
(suffix resampling keeps old turns as they are and never regenerates them). The loss still uses the
trainer's own log-probs of the pre-update version as the old policy; the engine's log-probs only feed
the per-update `logprob_gap` and, with `tis_cap`, truncated importance weights.
"""
from __future__ import annotations

import hashlib
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import InputError
from ..registry import Registry
from ..runtime.backend import Backend, create_backend, parse_backend
from ..runtime.logprob_gap import logprob_gap
from ..runtime.records import Episode
from ..spec import TeamSpec
from . import baselines
from .diagnostics import DiagnosticsLog, UpdateRecord, certificate, summarise
from .losses import AdaptiveBeta, LossConfig, group_advantages
from .policy import LossRows, Measurement, WorkingCopy, agent_rows
from .trust_region import BACKTRACK, REJECT, TrustRegion

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class TrainConfig:
    """Every training option. `None` takes the team spec's value ([trust_region], [sampling])."""

    method: str = "teamtr"
    order: str = "speaking"
    resample: str = "suffix"  # suffix | full
    resample_every: int = 2  # k of resample-every-k
    steps: int = 4  # optimiser steps per component update
    lr: float | None = None
    delta: float | None = None  # trust-region radius on the mean per-token KL
    beta0: float | None = None
    kl_control: str = "adaptive"  # adaptive | fixed
    kl_target: float = 0.5  # adaptive beta aims at kl_target * delta
    hard_check: bool = True  # measure after each step; roll back steps that leave the region
    max_backtracks: int | None = None
    shrink: float = 0.5
    clip_eps: float | None = None
    adv_clip: float | None = None
    ratio: str | None = None  # token | seq-product | seq-geomean
    log_clamp: float = 20.0  # log-space clamp of seq-product ratios
    is_clamp: float = 2.0  # log-space clamp of stale-is's HAPPO factor
    group_size: int | None = None
    prompts: int | None = None  # prompts per rollout set
    max_new_tokens: int | None = None  # caps every role's message budget
    micro_batch: int = 8
    seed: int = 0
    diag_fresh: bool = True  # stale methods: roll out the intermediate team for L_fresh / D_tok (diag tokens)
    eval_n: int = 0  # held-out prompts scored before and after the run (0: off)
    tis_cap: float | None = None  # truncated importance sampling min(pi_trainer / pi_engine, cap) (None: off)

    def resolved(self, spec: TeamSpec) -> "TrainConfig":
        tr = spec.trust_region
        out = replace(self, **{k: getattr(tr, k if k != "prompts" else "prompts_per_update")
                               for k in ("lr", "delta", "beta0", "max_backtracks", "clip_eps", "adv_clip", "ratio",
                                         "group_size", "prompts") if getattr(self, k) is None})
        baselines.check_method(out.method)
        checks = [(out.resample in ("suffix", "full"), "--resample must be 'suffix' or 'full'"),
                  (out.kl_control in ("adaptive", "fixed"), "--kl-control must be 'adaptive' or 'fixed'"),
                  (out.ratio in ("token", "seq-product", "seq-geomean"),
                   "--ratio must be 'token', 'seq-product' or 'seq-geomean'"),
                  (out.steps >= 0 and out.micro_batch >= 1 and out.prompts >= 1, "--steps >= 0, --prompts >= 1"),
                  (out.group_size >= 2, "--group-size must be >= 2 (advantages are group-normalised)"),
                  (out.delta > 0 and out.lr > 0, "--delta and --lr must be positive"),
                  (out.max_new_tokens is None or out.max_new_tokens >= 1, "--max-new-tokens must be >= 1"),
                  (out.tis_cap is None or out.tis_cap > 0, "--tis-cap must be positive")]
        for ok, msg in checks:
            if not ok:
                raise InputError(msg)
        return out


@dataclass
class Rollouts:
    """One rollout set: episodes ordered by (prompt, sample), the pins that produced them, the seed,
    the tokens generated for it, and whether it was made for diagnostics only (not in the budget)."""

    episodes: list[Episode]
    pins: dict[str, str]
    seed: int
    tokens: int
    diagnostic: bool = False
    wall_s: float = 0.0
    charged: bool = False  # its tokens and time are booked on the first update that trains on it

    @property
    def reward(self) -> float:
        return sum(e.reward for e in self.episodes) / max(len(self.episodes), 1)


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    records: list[UpdateRecord]
    summary: dict[str, Any] = field(default_factory=dict)


def rollout_engine(backend: str, tm: Any, *, device: str = "auto", dtype: str = "auto") -> Backend:
    """The engine that plays rollouts for backend spec `backend`: the TeamModel `tm` itself for `hf`,
    else a new backend on the same base (close it with `close_engine`)."""
    if parse_backend(backend)[0] == "hf":
        return tm
    return create_backend(backend, tm.base, device=device, dtype=dtype)


def close_engine(engine: Backend, tm: Any) -> None:
    """Shut down a rollout engine made by `rollout_engine` (the TeamModel stays)."""
    if engine is not tm:
        getattr(engine, "close", lambda: None)()


def _seed(*parts: Any) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16)


class Trainer:
    """The team being trained: registry, spec, the TeamModel with every pinned version loaded, the
    rollout engine (`backend`: the TeamModel for "hf", else e.g. "vllm" or "vllm-server=URL"), the
    current pins, per-agent KL coefficients and the run's diagnostics log. `reward_fn` replaces the
    task verifier's reward of every rollout (a synthetic task for experiments and tests). Use it as a
    context manager (or call `close`) to shut a separate engine down."""

    def __init__(self, registry: Registry, team: str, cfg: TrainConfig, *, device: str = "auto",
                 dtype: str = "auto", progress: Progress | None = None, run_dir: Path | None = None,
                 single_role: str | None = None, reward_fn: Callable[[Episode], float] | None = None,
                 backend: str = "hf") -> None:
        from ..runtime.base import resolve_base
        from ..runtime.team_model import TeamModel
        from ..tasks import get_task

        self.reg, self.team = registry, team
        self.spec = registry.team_spec(team)
        self.manifest = registry.manifest(team)
        self.cfg = cfg.resolved(self.spec)
        self.single_role = self.spec.role(single_role or self.spec.role_names[-1]).name
        self.pins = registry.pins(team)
        self.base = resolve_base(self.spec.base)
        if self.base.identity["hash"] != self.manifest["base"]["hash"]:
            raise InputError(f"team {team!r} was built on another base than {self.base.name} "
                             f"({self.manifest['base']['hash']} != {self.base.identity['hash']})")
        parse_backend(backend)
        self.tm = TeamModel(self.base, device=device, dtype=dtype)
        for vid in self.pins.values():
            self.tm.ensure_adapter(vid, registry.version_path(vid))
        self.backend = backend
        self.engine = rollout_engine(backend, self.tm, device=device, dtype=dtype)
        self.engine_versions: set[str] = set()  # versions loaded into a separate engine
        try:
            self.sync_engine()
        except BaseException:
            self.close()
            raise
        self.task = get_task(self.spec.task)
        c = self.cfg
        self.betas = {r: AdaptiveBeta(c.beta0, c.kl_target * c.delta, adaptive=c.kl_control == "adaptive")
                      for r in self.spec.role_names}
        self.loss_cfg = LossConfig(clip_eps=c.clip_eps, ratio=c.ratio, log_clamp=c.log_clamp,
                                   temperature=self.spec.sampling.temperature or 1.0, tis_cap=c.tis_cap)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.run_id = f"{team}-{c.method}-{stamp}-{_seed(time.time_ns()) % 10000:04d}"
        self.run_dir = Path(run_dir) if run_dir else registry.home / "runs" / self.run_id
        self.log = DiagnosticsLog(self.run_dir / "updates.jsonl")
        self.progress = progress or (lambda phase, done, total: None)
        self.reward_fn = reward_fn
        self.records: list[UpdateRecord] = []  # finished records, in order
        self.pending: list[UpdateRecord] = []  # committed updates waiting for the next rollout's reward
        self.n_updates = 0
        self._work = 0

    def sync_engine(self) -> None:
        """Make the rollout engine hold exactly the current pins: load pinned versions under their ids and
        unload the ones no longer pinned (a TeamModel engine keeps them: it is also the trainer's model)."""
        pinned = set(self.pins.values())
        for vid in sorted(pinned - self.engine_versions):
            self.engine.ensure_adapter(vid, self.reg.version_path(vid))
        if self.engine is not self.tm:
            for vid in sorted(self.engine_versions - pinned):
                self.engine.unload_adapter(vid)
        self.engine_versions = pinned

    def close(self) -> None:
        """Shut a separate rollout engine down (its worker processes, its server connections)."""
        close_engine(self.engine, self.tm)

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- rollouts ----------------------------------------------------------------------------------
    def play_spec(self) -> TeamSpec:
        """The spec rollouts play: the team with capped budgets, or one agent alone for `single`."""
        spec = self.spec
        if self.cfg.max_new_tokens:
            spec = replace(spec, roles=tuple(replace(r, max_new_tokens=min(r.max_new_tokens, self.cfg.max_new_tokens))
                                             for r in spec.roles))
        return baselines.single_agent_spec(spec, self.single_role) if self.cfg.method == "single" else spec

    def rollout(self, items: list[Any], seed: int, prev: Rollouts | None = None, changed: set[str] | None = None,
                *, group_size: int | None = None, diagnostic: bool = False, observe: bool = True) -> Rollouts:
        """Roll out the current team on `items` x `group_size`. Given `prev` (rollouts of a team that
        differs from the current one only in the `changed` agents) and suffix resampling, keep each
        episode's turns before the first turn of a changed agent and regenerate the rest.
        `observe`: this rollout's reward is the `reward_after` of the updates committed since the last one."""
        from ..runtime.protocol import rollout

        t0 = time.perf_counter()
        spec, g = self.play_spec(), group_size or self.cfg.group_size
        phase = "diagnostic rollout" if diagnostic else "rollout"
        if prev is not None and changed is not None and self.cfg.resample == "suffix":
            from_turns = [next((i for i, t in enumerate(e.turns) if t.role in changed), len(e.turns))
                          for e in prev.episodes]
        else:
            prev, from_turns = None, None
        episodes = rollout(self.engine, spec, items, group_size=g, seed=seed, pins=self.pins,
                           tokenizer=self.tm.tokenizer, prefix=prev.episodes if prev else None,
                           from_turn=from_turns or 0, progress=lambda done, total: self.progress(phase, done, total))
        if self.reward_fn is not None:
            for e in episodes:
                e.reward = float(self.reward_fn(e))
        starts = from_turns or [0] * len(episodes)
        tokens = sum(len(t.message_ids) for e, k in zip(episodes, starts) for t in e.turns[k:])
        ro = Rollouts(sorted(episodes, key=lambda e: (e.item_index, e.sample)), dict(self.pins), seed, tokens,
                      diagnostic, time.perf_counter() - t0)
        if observe and self.pending:
            for rec in self.pending:
                rec.reward_after = ro.reward
            self.flush()
        return ro

    def evaluate(self, n: int, seed: int) -> dict[str, Any]:
        """Mean reward (accuracy for 0/1 rewards) of the current team on `n` held-out prompts."""
        items = self.task.sample(n, seed=seed, split="heldout")
        ro = self.rollout(items, seed, group_size=1, diagnostic=True, observe=False)
        return {"n": n, "accuracy": ro.reward, "tokens": ro.tokens}

    # -- one component update ----------------------------------------------------------------------
    def advantages(self, ro: Rollouts) -> list[float]:
        rewards = torch.tensor([e.reward for e in ro.episodes], dtype=torch.float32)
        return group_advantages(rewards, self.cfg.group_size, self.cfg.adv_clip).tolist()

    def update(self, role: str, data: Rollouts, *, stage: int, stage_start: Rollouts, fresh: Rollouts | None,
               happo: dict[str, tuple[str, str]] | None = None) -> tuple[UpdateRecord, WorkingCopy]:
        """One trust-region update of `role` on `data`; `fresh` holds rollouts of the current team (for
        L_fresh and the out-of-region flag), `stage_start` the stage's first rollouts (for L_stale).
        Returns the record and the working copy with the accepted parameters, for `commit`."""
        c, t0 = self.cfg, time.perf_counter()
        parent = self.pins[role]
        adv = self.advantages(data)
        ess = None
        if happo:  # stale-is: weight by the product of the earlier-updated agents' ratios (HAPPO)
            logf = baselines.happo_log_factors(self.tm, data.episodes, happo, self.loss_cfg.temperature, c.micro_batch)
            w, ess = baselines.clamp_factors(logf, c.is_clamp)
            adv = [a * wi for a, wi in zip(adv, w)]
        rows = agent_rows(data.episodes, role, adv)
        self._work += 1
        work = WorkingCopy(self.tm, parent, self.reg.version_path(parent), f"work-{self._work}", self.loss_cfg,
                           c.micro_batch)
        rec = UpdateRecord(stage=stage, update=self.n_updates, role=role, method=c.method, ratio=c.ratio,
                           parent=parent, context=_context(data, role), rollout_seed=data.seed, delta=c.delta,
                           ess=ess)
        if not data.charged:  # a rollout set's cost is booked once, on the first update trained on it
            rec.tokens, rec.wall_s, data.charged = data.tokens, data.wall_s, True
        self.n_updates += 1
        try:
            m = self._optimise(work, rows, role, rec)
            rec.logprob_gap = logprob_gap(rows.engine_logprobs, m.trainer_logprobs)
            rec.d_tok_mean, rec.d_tok_p99, rec.kl_k1, rec.kl_k3 = m.d_mean, m.d_p99, m.k1, m.k3
            rec.beta = self.betas[role].beta
            if fresh is not None:
                fm = m if fresh is data else work.measure(agent_rows(fresh.episodes, role, self.advantages(fresh)))
                rec.reward_before = fresh.reward
                if fresh.diagnostic:
                    rec.diag_tokens = fresh.tokens
                rec.l_fresh, rec.l_fresh_se, rec.d_tok_fresh = fm.gain, fm.gain_se, fm.d_mean
                rec.out_of_region = fm.d_mean > c.delta
                rec.certificate = certificate(fm.gain, fm.gain_se, fm.d_mean, fm.adv_max)
            sm = m if stage_start is data else work.measure(
                agent_rows(stage_start.episodes, role, self.advantages(stage_start)))
            rec.l_stale = sm.gain
            if rec.l_fresh is not None:
                rec.stale_gap = abs(rec.l_fresh - rec.l_stale)
        except BaseException:
            work.close()
            raise
        rec.wall_s += time.perf_counter() - t0
        return rec, work

    def _optimise(self, work: WorkingCopy, rows: LossRows, role: str, rec: UpdateRecord) -> Measurement:
        """Optimiser steps under the hard trust region; returns the measurement of the accepted parameters.
        The pass after a step both measures D_tok there and computes the next gradient (one forward)."""
        c, beta = self.cfg, self.betas[role]
        # No advantage signal (every group's rewards equal): no step. Adam would otherwise turn the
        # round-off left in the KL gradient into full-size random steps.
        steps = c.steps if any(a != 0 for a in rows.adv) else 0
        opt = torch.optim.Adam(work.params, lr=c.lr)
        tr = TrustRegion(work.params, opt, c.delta, max_backtracks=c.max_backtracks, shrink=c.shrink,
                         hard=c.hard_check)
        cache: list[torch.Tensor] = []
        m = work.run_pass(rows, cache, beta.beta, backward=steps > 0)  # at the parent: D_tok = 0
        for k in range(steps):
            self.progress("optimise", k, steps)
            tr.step()
            accepted = m
            while True:
                m = work.run_pass(rows, cache, beta.beta, backward=k < steps - 1)
                verdict = tr.check(m.d_mean)
                if verdict != BACKTRACK:
                    break
                beta.raise_()  # the step left the region: back along it, with a larger KL coefficient
            if verdict == REJECT:  # backtracks spent: the pre-step parameters are back, bitwise
                beta.raise_()
                m = accepted
                break
            beta.update(m.d_mean)
        self.progress("optimise", steps, steps)
        s = tr.stats
        rec.steps, rec.accepted_steps, rec.backtracks = s.steps, s.accepted_steps, s.backtracks
        rec.rejected_steps, rec.out_of_region_events = s.rejected_steps, s.out_of_region_events
        work.zero_grad()
        return m

    # -- registry ----------------------------------------------------------------------------------
    def commit(self, updates: list[tuple[UpdateRecord, WorkingCopy]], event: str = "train") -> None:
        """Write each changed working copy as a new immutable version, then move the manifest once for
        all of them (one history event), load the new versions and close the working copies. Copies
        whose every step was rejected write nothing."""
        t0 = time.perf_counter()
        try:
            changes: dict[str, str] = {}
            lineages = {r: p["lineage"] for r, p in self.manifest["roles"].items()}
            for rec, work in updates:
                if not work.changed():
                    continue
                # Under the registry's tmp/ (as its own writes are): a killed run leaves its dir where `registry
                # gc` removes stale temp dirs, not loose in $TEAMTR_HOME; an interrupted one removes it here.
                scratch = self.reg.home / "tmp"
                scratch.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=scratch, prefix="train-") as tmp:
                    info = self.reg.add_version(
                        lineages[rec.role], work.save(Path(tmp) / "adapter"), made_by="train",
                        base=self.base.identity, parent=rec.parent, context=rec.context,
                        config=self._version_config(rec), metrics=_metrics(rec),
                        extra={"rollout_seed": rec.rollout_seed, "run": self.run_id})
                rec.version, rec.version_name = info.id, info.name
                changes[rec.role] = info.id
            if changes:
                self.manifest = self.reg.update_pins(self.team, changes, {
                    "event": event, "run": self.run_id, "method": self.cfg.method,
                    "updates": [{"role": r.role, "stage": r.stage, "update": r.update, "parent": r.parent,
                                 "version": r.version, "name": r.version_name, "d_tok": r.d_tok_mean,
                                 "l_fresh": r.l_fresh, "backtracks": r.backtracks} for r, _ in updates if r.version]})
                for role, vid in changes.items():
                    self.tm.ensure_adapter(vid, self.reg.version_path(vid))
                    self.pins[role] = vid
                self.sync_engine()
        finally:
            for _, work in updates:
                work.close()
        for rec, _ in updates:
            rec.wall_s += (time.perf_counter() - t0) / len(updates)
        self.pending += [rec for rec, _ in updates]

    def _version_config(self, rec: UpdateRecord) -> dict[str, Any]:
        return {"method": self.cfg.method, "stage": rec.stage, "update": rec.update, "role": rec.role,
                "train": asdict(self.cfg), "spec_hash": self.spec.spec_hash()}

    def flush(self) -> None:
        """Write the pending records (their reward_after is known, or will never be)."""
        for rec in self.pending:
            self.records.append(rec)
            self.log.write(rec)
        self.pending = []

    def write_config(self, extra: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(json.dumps(
            {"run": self.run_id, "team": self.team, "train": asdict(self.cfg), "backend": self.backend,
             "pins_before": self.pins, **extra},
            indent=2, sort_keys=True))

    def write_summary(self, extra: dict[str, Any]) -> dict[str, Any]:
        summary = {"run": self.run_id, "team": self.team, "method": self.cfg.method, "backend": self.backend,
                   **summarise(self.records), "logprob_gap": gap_summary(self.records),
                   "pins_after": dict(self.pins), "run_dir": str(self.run_dir), **extra}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return summary


def gap_summary(records: list[UpdateRecord]) -> dict[str, float]:
    """The engine-vs-trainer log-prob gap over a run: token-weighted means of the per-update gaps
    (signed, absolute, k3 KL) and the largest absolute gap."""
    gaps = [r.logprob_gap for r in records if r.logprob_gap and r.logprob_gap["tokens"]]
    n = sum(g["tokens"] for g in gaps)
    if not n:
        return {"tokens": 0, "mean": 0.0, "mean_abs": 0.0, "max_abs": 0.0, "kl_k3": 0.0}
    return {"tokens": n, **{k: sum(g[k] * g["tokens"] for g in gaps) / n for k in ("mean", "mean_abs", "kl_k3")},
            "max_abs": max(g["max_abs"] for g in gaps)}


def _context(data: Rollouts, role: str) -> dict[str, str]:
    """The versions of the other agents whose messages are in the training data."""
    seen: dict[str, set[str]] = {}
    for e in data.episodes:
        for t in e.turns:
            if t.role != role:
                seen.setdefault(t.role, set()).add(t.version)
    return {r: ",".join(sorted(v)) for r, v in sorted(seen.items())}


def _metrics(rec: UpdateRecord) -> dict[str, Any]:
    keys = ("d_tok_mean", "d_tok_p99", "kl_k1", "kl_k3", "l_fresh", "l_stale", "beta", "backtracks",
            "reward_before", "tokens")
    return {k: getattr(rec, k) for k in keys}


# -- the loop ---------------------------------------------------------------------------------------------
def run_stages(t: Trainer, stages: int) -> RunResult:
    """`stages` stages; in each, every agent of the update order gets one component update."""
    c = t.cfg
    rng = random.Random(c.seed)
    before = t.evaluate(c.eval_n, _seed(c.seed, "eval")) if c.eval_n else None
    t.write_config({"stages": stages})
    items: list[Any] = []
    try:
        for stage in range(stages):
            order = [t.single_role] if c.method == "single" else baselines.update_order(t.spec, c.order, rng)
            items = t.task.sample(c.prompts, seed=_seed(c.seed, "stage", stage), split="train")
            every = baselines.refresh_every(c.method, c.resample_every, len(order))
            data = stage_start = fresh = None
            changed: set[str] = set()  # agents updated since `data` was rolled out
            last: set[str] = set()  # the agent updated by the previous update (if it changed)
            happo: dict[str, tuple[str, str]] = {}  # stale-is: role -> (old, new) since `data`
            joint: list[tuple[UpdateRecord, WorkingCopy]] = []
            for i, role in enumerate(order):
                # 1. rollouts of the current team: the training data every `every` updates (teamtr: always) ...
                if i % every == 0:
                    data = fresh = t.rollout(items, _seed(c.seed, stage, i), prev=data, changed=changed)
                    stage_start = data if stage_start is None else stage_start
                    changed, happo = set(), {}
                # ... otherwise (stale baselines) only for diagnostics: the intermediate team's occupancy
                elif c.method == "joint":
                    fresh = stage_start  # a joint update acts on the stage-start team
                elif c.diag_fresh:
                    fresh = t.rollout(items, _seed(c.seed, stage, i, "diag"), prev=fresh, changed=last,
                                      diagnostic=True)
                else:
                    fresh = None
                # 2. one component update of `role`, under the trust region
                rec, work = t.update(role, data, stage=stage, stage_start=stage_start, fresh=fresh,
                                     happo=happo if c.method == "stale-is" else None)
                if c.method == "joint":
                    joint.append((rec, work))
                    continue
                # 3. a new immutable version; the team moves to it
                t.commit([(rec, work)])
                last = {role} if rec.version else set()
                if rec.version:
                    changed.add(role)
                    happo[role] = (rec.parent, rec.version)
            if joint:
                t.commit(joint, event="train-joint")
        if t.pending:  # the final team's reward: one diagnostic rollout on the last stage's prompts
            final = t.rollout(items, _seed(c.seed, "final"), diagnostic=True, observe=False)
            for rec in t.pending:
                rec.reward_after = final.reward
            t.pending[-1].diag_tokens += final.tokens
    finally:
        t.flush()
    after = t.evaluate(c.eval_n, _seed(c.seed, "eval")) if c.eval_n else None
    summary = t.write_summary({"stages": stages, "eval_before": before, "eval_after": after})
    return RunResult(t.run_id, t.run_dir, t.records, summary)
