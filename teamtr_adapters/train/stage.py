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
are regenerated with the new team: a valid sample of the new team on the same prompts. It is in-sample,
though: the kept prefixes are the very contexts the earlier agents of the stage trained on (the prompts are
fixed for the stage). `resample="full"` regenerates everything; `fresh_prompts=True` draws new prompts for
every rollout set (out-of-sample, at full-resampling cost).

Numerics: the trainer's model computes in float32 whatever the rollout dtype, so D_tok, its gradient,
pi_old and the ratios are exact (bf16 logits put a floor of ~2e-3 under a KL, DESIGN.md). Rollouts are
sampled from that same float32 model (exactly pi_old) unless a rollout dtype or backend other than the
trainer's is asked for; then a separate engine plays them, the per-update `logprob_gap` reports the
residual mismatch, and truncated importance sampling corrects it by default (`tis_cap` 2.0).

No-signal rollout sets: when every group of a training rollout set has equal rewards (all advantages 0),
the set is redrawn with a new seed (and new prompts with `redraw_prompts`) up to `redraws` times; an update
that still has no signal takes no step, and its record says why (`no_signal`).

Rollout backends: with `backend="hf"` (and the float32 rollout dtype) the trainer's TeamModel also
generates. With another backend
(`vllm`, `vllm-server=URL`) rollouts go through that engine, which holds exactly the team's current
pins: each committed version is loaded under its registry id and the version it replaced is unloaded
(suffix resampling keeps old turns as they are and never regenerates them). The loss still uses the
trainer's own log-probs of the pre-update version as the old policy; the engine's log-probs feed the
per-update `logprob_gap` and the truncated importance weights.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast

import torch

from ..errors import InputError
from ..registry import Registry
from ..runtime.backend import parse_backend
from ..runtime.engine import close_engine, rollout_engine
from ..runtime.logprob_gap import logprob_gap
from ..runtime.records import Episode
from ..spec import TeamSpec
from ..types import HeldoutEval, LogprobGapSummary, RunSummary
from . import baselines
from .diagnostics import DiagnosticsLog, UpdateRecord, certificate, paired_change, summarise
from .distributed import DataParallel
from .losses import AdaptiveBeta, LossConfig, group_advantages
from .policy import LossRows, Measurement, WorkingCopy, agent_rows, occupancy_divergence
from .trust_region import BACKTRACK, REJECT, TrustRegion

Progress = Callable[[str, int, int], None]  # (phase, done, total)
TRAIN_DTYPE = "float32"  # the trainer's compute dtype: every trust-region quantity is exact
DEFAULT_TIS_CAP = 2.0  # truncated IS cap used by default when another engine plays the rollouts


@dataclass(frozen=True)
class TrainConfig:
    """Every training option. `None` takes the team spec's value ([trust_region], [sampling])."""

    method: str = "teamtr"
    order: str = "reverse"  # reverse | speaking | random | ROLE,ROLE,... (baselines.update_order: why reverse)
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
    eval_k: int = 1  # samples per held-out prompt (the prompt's score is their mean)
    tis_cap: float | None = None  # truncated IS min(pi_trainer / pi_engine, cap); None: DEFAULT_TIS_CAP when
    #                               another engine plays the rollouts, else off; 0: off
    probe_prompts: int = 8  # held-out-state probe per update for D_tok_heldout / out-of-region (0: off)
    redraws: int = 2  # no-signal training rollout sets redrawn (new seed) before an update gives up
    redraw_prompts: bool = False  # a redraw also draws new prompts
    fresh_prompts: bool = False  # new prompts for every training rollout set (no suffix reuse)
    gamma: float = 0.5  # the certificate's discount (TEAMTR.md; the paper does not state its value)
    stale_gap: bool = True  # score each update on the stage-start rollouts too (L_stale, stale_gap: one
    #                         extra forward over those rows per update after the first of a stage)
    reward_after: bool = True  # a diagnostic rollout of the new team on the last updates' prompts at the end of
    #                            each stage (their reward_after); off: those records keep reward_after None

    def resolved(self, spec: TeamSpec) -> "ResolvedTrainConfig":
        tr = spec.trust_region
        out = cast("ResolvedTrainConfig", replace(
            self, **{k: getattr(tr, k if k != "prompts" else "prompts_per_update")
                               for k in ("lr", "delta", "beta0", "max_backtracks", "clip_eps", "adv_clip", "ratio",
                                         "group_size", "prompts") if getattr(self, k) is None}))
        baselines.check_method(out.method)
        checks = [(out.resample in ("suffix", "full"), "--resample must be 'suffix' or 'full'"),
                  (out.kl_control in ("adaptive", "fixed"), "--kl-control must be 'adaptive' or 'fixed'"),
                  (out.ratio in ("token", "seq-product", "seq-geomean"),
                   "--ratio must be 'token', 'seq-product' or 'seq-geomean'"),
                  (out.steps >= 0 and out.micro_batch >= 1 and out.prompts >= 1, "--steps >= 0, --prompts >= 1"),
                  (out.group_size >= 2, "--group-size must be >= 2 (advantages are group-normalised)"),
                  (out.delta > 0 and out.lr > 0, "--delta and --lr must be positive"),
                  (out.max_new_tokens is None or out.max_new_tokens >= 1, "--max-new-tokens must be >= 1"),
                  (out.tis_cap is None or out.tis_cap >= 0, "--tis-cap must be >= 0 (0: off)"),
                  (out.eval_n >= 0 and out.eval_k >= 1, "--eval must be >= 0 and --eval-k >= 1"),
                  (out.probe_prompts >= 0 and out.redraws >= 0, "--probe-prompts and --redraws must be >= 0"),
                  (0.0 < out.gamma < 1.0, "gamma must be in (0, 1)")]
        for ok, msg in checks:
            if not ok:
                raise InputError(msg)
        return out


if TYPE_CHECKING:
    class ResolvedTrainConfig(TrainConfig):
        """For the type checker: what `TrainConfig.resolved` returns, the spec's values in place of None."""

        lr: float
        delta: float
        beta0: float
        max_backtracks: int
        clip_eps: float
        adv_clip: float
        ratio: str
        group_size: int
        prompts: int


@dataclass
class Rollouts:
    """One rollout set: episodes ordered by (prompt, sample), the pins that produced them, the seed,
    the tokens generated for it, and whether it was made for diagnostics only (not in the budget)."""

    episodes: list[Episode]
    pins: dict[str, str]
    seed: int
    tokens: int
    items: tuple[Any, ...] = ()
    diagnostic: bool = False
    wall_s: float = 0.0
    charged: bool = False  # its tokens and time are booked on the first update that trains on it
    redraws: int = 0  # no-signal sets drawn (and discarded) before this one

    @property
    def reward(self) -> float:
        return sum(e.reward for e in self.episodes) / max(len(self.episodes), 1)

    def prompt_scores(self) -> list[float]:
        """The mean reward of each prompt's episodes, in item order."""
        out: dict[int, list[float]] = {}
        for e in self.episodes:
            out.setdefault(e.item_index, []).append(e.reward)
        return [sum(v) / len(v) for _, v in sorted(out.items())]


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    records: list[UpdateRecord]
    summary: RunSummary = field(default_factory=lambda: cast(RunSummary, {}))


def _seed(*parts: Any) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16)


class Trainer:
    """The team being trained: registry, spec, the TeamModel (float32) with every pinned version loaded, the
    rollout engine (`backend`: the TeamModel for "hf", else e.g. "vllm" or "vllm-server=URL"; `dtype`: the
    rollouts' dtype, "auto" = the trainer's float32), the current pins, per-agent KL coefficients and the run's
    diagnostics log. `reward_fn` replaces the
    task verifier's reward of every rollout (a synthetic task for experiments and tests); `on_record` is called
    with each update record as it is written (`train.tracking`). Use it as a
    context manager (or call `close`) to shut a separate engine down."""

    def __init__(self, registry: Registry, team: str, cfg: TrainConfig, *, device: str = "auto",
                 dtype: str = "auto", progress: Progress | None = None, run_dir: Path | None = None,
                 single_role: str | None = None, reward_fn: Callable[[Episode], float] | None = None,
                 backend: str = "hf", on_record: Callable[[UpdateRecord], None] | None = None) -> None:
        from ..runtime.open import open_team_model
        from ..tasks import get_task

        self.reg, self.team = registry, team
        self.spec = registry.team_spec(team)
        self.manifest = registry.manifest(team)
        self.cfg = cfg.resolved(self.spec)
        self.single_role = self.spec.role(single_role or self.spec.role_names[-1]).name
        parse_backend(backend)
        # data-parallel (torchrun / accelerate launch): rank 0 plays the rollouts and writes; train.distributed
        self.dp = DataParallel.from_env(device)
        self.tm, self.pins = open_team_model(registry, team, device=device, dtype=TRAIN_DTYPE)
        self.base = self.tm.base
        self.backend = backend
        self.engine = (rollout_engine(backend, self.tm, device=device, dtype=dtype) if self.dp.is_main else self.tm)
        self.separate_engine = self.dp.broadcast(self.engine is not self.tm)
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
        self.tis_cap = (c.tis_cap if c.tis_cap is not None else
                        DEFAULT_TIS_CAP if self.separate_engine else 0.0) or None
        self.loss_cfg = LossConfig(clip_eps=c.clip_eps, ratio=c.ratio, log_clamp=c.log_clamp,
                                   temperature=self.spec.sampling.temperature or 1.0, tis_cap=self.tis_cap)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.run_id = self.dp.broadcast(f"{team}-{c.method}-{stamp}-{_seed(time.time_ns()) % 10000:04d}")
        self.run_dir = Path(run_dir) if run_dir else registry.home / "runs" / self.run_id
        self.log = DiagnosticsLog(self.run_dir / "updates.jsonl") if self.dp.is_main else None
        self.progress = progress or (lambda phase, done, total: None)
        self.reward_fn = reward_fn
        self.on_record = on_record  # called with each record as it is written (e.g. an experiment tracker)
        self.records: list[UpdateRecord] = []  # finished records, in order
        self.pending: list[tuple[UpdateRecord, tuple[Any, ...]]] = []  # committed updates (and their
        #   prompts) waiting for a rollout of the new team on the same prompts, for their reward_after
        self.n_updates = 0
        self._work = 0
        self._scored_on: dict[int, tuple[Any, ...]] = {}  # update -> the prompts its reward_before is on

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
        """Shut a separate rollout engine down (its worker processes, its server connections) and leave a
        process group this trainer created."""
        close_engine(self.engine, self.tm)
        self.dp.close()

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
        if prev is not None and changed and self.cfg.resample == "suffix" and prev.items == tuple(items):
            from_turns = [next((i for i, t in enumerate(e.turns) if t.role in changed), len(e.turns))
                          for e in prev.episodes]
        else:
            prev, from_turns = None, None

        def play() -> list[Episode]:
            eps = rollout(self.engine, spec, items, group_size=g, seed=seed, pins=self.pins,
                          tokenizer=self.tm.tokenizer, prefix=prev.episodes if prev else None,
                          from_turn=from_turns or 0, progress=lambda done, total: self.progress(phase, done, total))
            if self.reward_fn is not None:
                for e in eps:
                    e.reward = float(self.reward_fn(e))
            return eps

        episodes = self.dp.on_main(play)  # data-parallel: rank 0 plays, every rank gets the same episodes
        starts = from_turns or [0] * len(episodes)
        tokens = sum(len(t.message_ids) for e, k in zip(episodes, starts) for t in e.turns[k:])
        ro = Rollouts(sorted(episodes, key=lambda e: (e.item_index, e.sample)), dict(self.pins), seed, tokens,
                      tuple(items), diagnostic, time.perf_counter() - t0)
        if observe:
            self.observe(ro)
        return ro

    def observe(self, ro: Rollouts) -> None:
        """Give the pending updates trained on `ro`'s prompts their reward_after (the current team, the same
        prompts) and write them."""
        same = [rec for rec, items in self.pending if items == ro.items]
        for rec in same:
            rec.reward_after, rec.after_span = ro.reward, self.n_updates - rec.update
        self.pending = [(rec, items) for rec, items in self.pending if items != ro.items]
        self.flush(same)

    def observe_pending(self, seed: int) -> None:
        """A diagnostic rollout of the current team on every pending update's prompts (their reward_after)."""
        while self.pending:
            rec, items = self.pending[0]
            ro = self.rollout(list(items), _seed(seed, rec.update), group_size=self.cfg.group_size,
                              diagnostic=True, observe=False)
            rec.diag_tokens += ro.tokens
            self.observe(ro)

    def evaluate(self, n: int, seed: int) -> HeldoutEval:
        """Mean reward (accuracy for 0/1 rewards) of the current team on `n` held-out prompts x `eval_k`
        samples, and each prompt's score (for a paired comparison: same prompts, same seed)."""
        items = self.task.sample(n, seed=seed, split="heldout")
        ro = self.rollout(items, seed, group_size=self.cfg.eval_k, diagnostic=True, observe=False)
        return {"n": n, "k": self.cfg.eval_k, "accuracy": ro.reward, "tokens": ro.tokens,
                "scores": ro.prompt_scores()}

    def no_signal(self, ro: Rollouts) -> bool:
        """Whether every group of `ro` has equal rewards (every advantage 0: nothing to learn)."""
        return not any(self.advantages(ro))

    def training_rollout(self, items: list[Any], seed: int, prev: Rollouts | None, changed: set[str],
                         stage: int, i: int) -> Rollouts:
        """A training rollout set of the current team; a set without signal is redrawn (new seed, new prompts
        with `redraw_prompts`) up to `redraws` times. Redrawn sets' tokens and time are charged to the kept one."""
        c = self.cfg
        ro = self.rollout(items, seed, prev=prev, changed=changed)
        spent_tokens, spent_s, k = 0, 0.0, 0
        while k < c.redraws and self.no_signal(ro):
            k += 1
            spent_tokens, spent_s = spent_tokens + ro.tokens, spent_s + ro.wall_s
            if c.redraw_prompts:
                items = self.task.sample(c.prompts, seed=_seed(c.seed, "redraw-items", stage, i, k), split="train")
            ro = self.rollout(items, _seed(c.seed, stage, i, "redraw", k))
        ro.tokens += spent_tokens
        ro.wall_s += spent_s
        ro.redraws = k
        return ro

    def probe(self, role: str, update: int) -> Rollouts:
        """A rollout of the current (pre-update) team on `probe_prompts` prompts drawn for this update alone
        (one sample each): states that no update trained on, for the held-out D_tok."""
        items = self.task.sample(self.cfg.probe_prompts, seed=_seed(self.cfg.seed, "probe", update), split="train")
        return self.rollout(items, _seed(self.cfg.seed, "probe-seed", update), group_size=1, diagnostic=True,
                            observe=False)

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
        work = self.dp.working_copy(self.tm, parent, self.reg.version_path(parent), f"work-{self._work}",
                                    self.loss_cfg, c.micro_batch)
        rec = UpdateRecord(stage=stage, update=self.n_updates, role=role, method=c.method, ratio=c.ratio,
                           parent=parent, context=_context(data, role), rollout_seed=data.seed, delta=c.delta,
                           ess=ess, redraws=data.redraws)
        self._scored_on[rec.update] = (fresh or data).items
        if not data.charged:  # a rollout set's cost is booked once, on the first update trained on it
            rec.tokens, rec.wall_s, data.charged = data.tokens, data.wall_s, True
        self.n_updates += 1
        try:
            if not any(rows.adv):
                rec.no_signal = _no_signal_reason(data, rows, c)
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
                rec.certificate = certificate(fm.gain, fm.gain_se, c.delta, fm.adv_max, c.gamma)
                rec.occupancy_div = occupancy_divergence(self.tm, fresh.episodes, stage_start.pins, role,
                                                         temperature=self.loss_cfg.temperature,
                                                         batch_size=c.micro_batch)[0]
            # an unchanged copy is at D_tok 0 by construction: only changed versions are probed (and counted)
            if c.probe_prompts and work.changed():
                probe = self.probe(role, rec.update)
                rec.d_tok_heldout = work.measure(agent_rows(probe.episodes, role, [0.0] * len(probe.episodes))).d_mean
                rec.diag_tokens += probe.tokens
            if rec.d_tok_heldout is not None:
                rec.out_of_region = rec.d_tok_heldout > c.delta
            if stage_start is data or c.stale_gap:
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
        steps = 0 if rec.no_signal else c.steps
        opt = torch.optim.Adam(work.params, lr=c.lr)
        tr = TrustRegion(work.params, opt, c.delta, max_backtracks=c.max_backtracks, shrink=c.shrink,
                         hard=c.hard_check)
        cache: list[torch.Tensor | None] = []
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
            for rec, work in updates:  # data-parallel: the ranks must agree before rank 0 writes
                self.dp.check_same(work.params, f"the update of {rec.role}")
            versions, changes, self.manifest = self.dp.on_main(lambda: self._write_versions(updates, event))
            for (rec, _), (vid, name) in zip(updates, versions):
                rec.version, rec.version_name = vid, name
            if changes:
                for role, vid in changes.items():
                    self.tm.ensure_adapter(vid, self.reg.version_path(vid))
                    self.pins[role] = vid
                self.sync_engine()
        finally:
            for _, work in updates:
                work.close()
        for rec, _ in updates:
            rec.wall_s += (time.perf_counter() - t0) / len(updates)
        self.pending += [(rec, self._scored_on.pop(rec.update, ())) for rec, _ in updates]

    def _write_versions(self, updates: list[tuple[UpdateRecord, WorkingCopy]], event: str
                        ) -> tuple[list[tuple[str | None, str | None]], dict[str, str], Any]:
        """The registry part of `commit` (rank 0 only): the new versions and the pin move; returns each
        update's (version id, name), the changed pins and the new manifest."""
        changes: dict[str, str] = {}
        manifest = self.manifest
        lineages = {r: p["lineage"] for r, p in self.manifest["roles"].items()}
        # One hold of the registry lock over the new versions and the pin move: a `registry gc` cannot run
        # in between and remove the not-yet-pinned versions. The scratch dir lives under the registry's tmp/
        # with an owner lock: gc leaves it alone while this process lives, and removes it after a kill.
        with self.reg.hold():
            for rec, work in updates:
                if not work.changed():
                    continue
                with self.reg.scratch("train-") as tmp:
                    info = self.reg.add_version(
                        lineages[rec.role], work.save(tmp / "adapter"), made_by="train",
                        base=self.base.identity, parent=rec.parent, context=rec.context,
                        config=self._version_config(rec), metrics=_metrics(rec),
                        extra={"rollout_seed": rec.rollout_seed, "run": self.run_id})
                rec.version, rec.version_name = info.id, info.name
                changes[rec.role] = info.id
            if changes:
                manifest = self.reg.update_pins(self.team, changes, {
                    "event": event, "run": self.run_id, "method": self.cfg.method,
                    "updates": [{"role": r.role, "stage": r.stage, "update": r.update, "parent": r.parent,
                                 "version": r.version, "name": r.version_name, "d_tok": r.d_tok_mean,
                                 "l_fresh": r.l_fresh, "backtracks": r.backtracks}
                                for r, _ in updates if r.version]})
        return [(r.version, r.version_name) for r, _ in updates], changes, manifest

    def _version_config(self, rec: UpdateRecord) -> dict[str, Any]:
        return {"method": self.cfg.method, "stage": rec.stage, "update": rec.update, "role": rec.role,
                "train": asdict(self.cfg), "spec_hash": self.spec.spec_hash()}

    def flush(self, records: list[UpdateRecord] | None = None) -> None:
        """Write `records` (default: every pending one; their reward_after is known, or will never be)."""
        if records is None:
            records, self.pending = [rec for rec, _ in self.pending], []
        for rec in records:
            self.records.append(rec)
            if self.log is not None:  # data-parallel: rank 0 writes
                self.log.write(rec)
                if self.on_record is not None:
                    self.on_record(rec)

    def state(self) -> dict[str, Any]:
        """What a run carries from one stage to the next besides its registry (whose pins are the team): the
        finished update records, the KL coefficients and the update counters (update seeds and probe prompts
        derive from them). Taken between `run_stages` calls, it lets a new Trainer on a copy of the registry
        continue the run exactly (`restore`): benchmarks/learning.py resumes an interrupted run this way."""
        if self.pending or self._scored_on:
            raise RuntimeError("Trainer.state() between stages only (updates are waiting for their reward_after)")
        return {"records": list(self.records), "betas": {r: b.beta for r, b in self.betas.items()},
                "n_updates": self.n_updates, "work": self._work}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()` of a Trainer whose registry this one's is a copy of."""
        self.records = list(state["records"])
        for role, beta in state["betas"].items():
            self.betas[role].beta = beta
        self.n_updates, self._work = state["n_updates"], state["work"]

    def write_config(self, extra: dict[str, Any]) -> None:
        if not self.dp.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(json.dumps(
            {"run": self.run_id, "team": self.team, "train": asdict(self.cfg), "backend": self.backend,
             "pins_before": self.pins, "data_parallel": self.dp.world, **extra},
            indent=2, sort_keys=True))

    def write_summary(self, extra: dict[str, Any]) -> RunSummary:
        summary = cast(RunSummary, {
                   "run": self.run_id, "team": self.team, "method": self.cfg.method, "backend": self.backend,
                   **summarise(self.records), "logprob_gap": gap_summary(self.records),
                   "pins_after": dict(self.pins), "run_dir": str(self.run_dir), "data_parallel": self.dp.world,
                   **extra})
        if self.dp.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return summary


def gap_summary(records: list[UpdateRecord]) -> LogprobGapSummary:
    """The engine-vs-trainer log-prob gap over a run: token-weighted means of the per-update gaps
    (signed, absolute, k3 KL) and the largest absolute gap."""
    gaps = [r.logprob_gap for r in records if r.logprob_gap and r.logprob_gap["tokens"]]
    n = sum(g["tokens"] for g in gaps)
    if not n:
        return {"tokens": 0, "mean": 0.0, "mean_abs": 0.0, "max_abs": 0.0, "kl_k3": 0.0}
    return cast(LogprobGapSummary, {
        "tokens": n, **{k: sum(g[k] * g["tokens"] for g in gaps) / n for k in ("mean", "mean_abs", "kl_k3")},
        "max_abs": max(g["max_abs"] for g in gaps)})


def _no_signal_reason(data: Rollouts, rows: LossRows, c: ResolvedTrainConfig) -> str:
    """Why an update has nothing to learn from, with what to change."""
    if not len(rows):
        return "the agent wrote no tokens in these rollouts; raise --max-new-tokens"
    return (f"every group of {len(data.episodes) // c.group_size} prompts x {c.group_size} samples had equal "
            f"rewards (mean reward {data.reward:.2f}) after {data.redraws} redraw(s); try more prompts (-P), larger "
            "groups (-G), longer messages (--max-new-tokens) or an easier task")


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
def run_stages(t: Trainer, stages: int, *, first_stage: int = 0, token_budget: int | None = None) -> RunResult:
    """`stages` stages (numbered from `first_stage`, which seeds their prompts); in each, every agent of the
    update order gets one component update. With `token_budget`, stop after the stage at which the run's
    training rollouts reach that many generated tokens."""
    c = t.cfg
    rng = random.Random(_seed(c.seed, "order", first_stage))
    before = t.evaluate(c.eval_n, _seed(c.seed, "eval")) if c.eval_n else None
    t.write_config({"stages": stages, "first_stage": first_stage, "token_budget": token_budget})
    try:
        for stage in range(first_stage, first_stage + stages):
            if token_budget is not None and sum(r.tokens for r in t.records + [p for p, _ in t.pending]) >= token_budget:
                break
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
                    if c.fresh_prompts and i:
                        items = t.task.sample(c.prompts, seed=_seed(c.seed, "stage", stage, i), split="train")
                    data = fresh = t.training_rollout(items, _seed(c.seed, stage, i), data, changed, stage, i)
                    stage_start = data if stage_start is None else stage_start
                    changed, happo = set(), {}
                # ... otherwise (stale baselines) only for diagnostics: the intermediate team's occupancy
                elif c.method == "joint":
                    fresh = stage_start  # a joint update acts on the stage-start team
                elif c.diag_fresh and (last or fresh is None):
                    fresh = t.rollout(items, _seed(c.seed, stage, i, "diag"), prev=fresh, changed=last,
                                      diagnostic=True)
                elif not c.diag_fresh:
                    fresh = None
                # (diag_fresh with nothing changed since: `fresh` is still a rollout of the current team)
                # 2. one component update of `role`, under the trust region
                assert data is not None and stage_start is not None  # set at i == 0
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
            # the stage's last updates' reward_after: the new team on the same prompts (diagnostic rollout)
            if c.reward_after:
                t.observe_pending(_seed(c.seed, "after", stage))
    finally:
        t.flush()
    after = t.evaluate(c.eval_n, _seed(c.seed, "eval")) if c.eval_n else None
    change = paired_change(before["scores"], after["scores"]) if before and after else None
    summary = t.write_summary({"stages": stages, "eval_before": before, "eval_after": after, "eval_change": change,
                               "tis_cap": t.tis_cap, "train_dtype": TRAIN_DTYPE, "rollout_dtype":
                               getattr(t.engine, "dtype", None)})
    return RunResult(t.run_id, t.run_dir, t.records, summary)
