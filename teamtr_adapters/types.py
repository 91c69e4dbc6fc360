"""Typed shapes of the public API's results (TypedDicts: plain dicts at run time, so `--json` output, JSON files
and `result["key"]` access are unchanged; a type checker sees the keys and their types).

Imports nothing heavy (no torch, no numpy): `from teamtr_adapters import TeamManifest, HistoryEvent, ...`.

Keys marked `NotRequired` are present only in some results (an event kind, an option that was on, an older
file). Result dicts may carry keys not listed here when a caller adds its own; the listed ones are what the
library writes.
"""
from typing import Any, NotRequired, TypedDict

# -- registry: team manifests, history, maintenance --------------------------------------------------------


class Pin(TypedDict):
    """A role's pinned version in a team manifest."""

    lineage: str
    name: str
    id: str


class TeamManifest(TypedDict):
    """`teams/<team>/manifest.json`: returned by `Registry.manifest`, `init_team`, `create_team`, `update_pins`
    and the rollbacks. `roles` is in the team's speaking order; `base` is the base identity {"name", "hash"}."""

    team: str
    revision: int
    spec_hash: str
    base: dict[str, str]
    base_ref: str
    roles: dict[str, Pin]
    order: list[str]
    updated: str


class TrainedVersion(TypedDict):
    """One update of a `train` history event (`version` None: every step was rolled back)."""

    role: str
    stage: int
    update: int
    parent: str
    version: str | None
    name: str | None
    d_tok: float
    l_fresh: float | None
    backtracks: int


class HistoryEvent(TypedDict):
    """One line of `history.jsonl` (`Registry.history`). `event` is init | train | train-joint | swap |
    swap-refused | swap-inconclusive | rollback | team-rollback | push | pull | gc | deprecate | undeprecate.
    Pin changes carry `revision` and `pins_after` (and `pins_before`, except `init`); the other keys belong to
    the event kinds that write them."""

    ts: str
    user: str
    host: str
    id: str  # unique per event (the pin journal replays an event at most once)
    event: str
    team: NotRequired[str]
    revision: NotRequired[int]
    pins_before: NotRequired[dict[str, str]]
    pins_after: NotRequired[dict[str, str]]
    base: NotRequired[dict[str, str]]  # init
    run: NotRequired[str]  # train
    method: NotRequired[str]
    updates: NotRequired[list[TrainedVersion]]
    role: NotRequired[str]  # swap, rollback, pull of one role
    ref: NotRequired[str]
    candidate: NotRequired[str]
    gated: NotRequired[bool]
    forced: NotRequired[bool]
    report: NotRequired["GateReport | None"]
    revision_at: NotRequired[int]  # swap-refused, swap-inconclusive: the revision the gate judged
    undo: NotRequired[bool]  # rollback
    to_revision: NotRequired[int]
    repo: NotRequired[str]  # push, pull
    branch: NotRequired[str]
    commit: NotRequired[str]
    parent: NotRequired[str]
    tag: NotRequired[str | None]
    hub_revision: NotRequired[str | None]
    remote_team_revision: NotRequired[int | None]
    unchanged: NotRequired[bool]
    version: NotRequired[str]  # gc, deprecate, pull of one role
    lineage: NotRequired[str | None]
    name: NotRequired[str]
    reason: NotRequired[str]


class VerifyReport(TypedDict):
    """`Registry.verify()`: `unnamed` are stored version ids no lineage names."""

    ok: bool
    versions: int
    unnamed: list[str]
    unhashed_meta: list[str]  # versions stored before teamtr.json hashes were recorded
    problems: list[str]


class GcReport(TypedDict):
    """`Registry.gc()`: the version ids removed (or that would be, with `dry_run`), how many are kept, the bytes
    freed and the stale temp dirs."""

    dry_run: bool
    remove: list[str]
    keep: int
    bytes: int
    stale_tmp: list[str]
    stale_files: list[str]  # `.X.json.*.tmp` files of interrupted atomic writes
    live_tmp: int  # temp dirs a live process still owns


# -- training ----------------------------------------------------------------------------------------------


class RankCorrelation(TypedDict):
    """Spearman's rho with a 95% bootstrap interval (None when the resamples had no spread)."""

    rho: float
    ci95: list[float] | None
    n: int


class PairedChange(TypedDict):
    """A paired change of per-prompt scores: mean of after - before with a 95% t interval."""

    n: int
    before: float
    after: float
    change: float
    ci95: list[float]
    wins: int
    losses: int


class HeldoutEval(TypedDict):
    """The trainer's held-out score (`Trainer.evaluate`): `scores` per prompt, for a paired comparison."""

    n: int
    k: int
    accuracy: float
    tokens: int
    scores: list[float]


class LogprobGapSummary(TypedDict):
    """The rollout engine's minus the trainer's log-probs over a run (token-weighted)."""

    tokens: int
    mean: float
    mean_abs: float
    max_abs: float
    kl_k3: float


class TrainStats(TypedDict):
    """Run-level figures over update records (`train.diagnostics.summarise`)."""

    updates: int
    accepted: int
    no_signal: int
    redraws: int
    out_of_region_rate: float | None
    out_of_region_updates: int
    probed_updates: int
    out_of_region_events: int
    backtracks: int
    rejected_steps: int
    stale_gap_mean: float | None
    d_tok_mean: float | None
    d_tok_fresh_mean: float | None
    d_tok_heldout_mean: float | None
    d_tok_max: float | None
    occupancy_div_mean: float | None
    reward_first: float | None
    reward_last: float | None
    tokens: int
    diag_tokens: int
    wall_s: float
    certificate_rank_corr: RankCorrelation | None
    ess_mean: float | None


class RunSummary(TrainStats, total=False):
    """A training run's summary (`summary.json`, `RunResult.summary`, `train --json`): the `TrainStats` plus
    what the trainer adds. `finished` is set by `train.report.load_run` (False: recomputed from the records of
    a run cut short, which then has only the `TrainStats`)."""

    run: str
    team: str
    method: str
    backend: str
    logprob_gap: LogprobGapSummary
    pins_after: dict[str, str]
    run_dir: str
    stages: int
    eval_before: HeldoutEval | None
    eval_after: HeldoutEval | None
    eval_change: PairedChange | None
    tis_cap: float | None
    train_dtype: str
    rollout_dtype: str | None
    finished: bool


# -- the swap gate -----------------------------------------------------------------------------------------


class VersionRef(TypedDict):
    id: str
    ref: str


class CandidateInfo(TypedDict):
    """A swap candidate (`registry.candidates.Candidate.to_dict`); `stored`: it is a registry version."""

    id: str
    ref: str
    stored: bool


class Compatibility(TypedDict):
    """`registry.candidates.check_candidate`: what was checked about a candidate adapter."""

    base: dict[str, str]
    r: int
    lora_alpha: float | None
    modules: int
    module_kinds: list[str]
    ok: bool


class KLSummary(TypedDict):
    """D_tok over a set of states (`train.kl.kl_summary`): mean, its standard error clustered by message, p99,
    max, and the number of states and messages."""

    d_tok: float
    d_tok_se: float
    d_tok_p99: float
    d_tok_max: float
    kl_states: int
    kl_contexts: int


class GateBudget(TypedDict):
    prompts: int
    samples: int
    looks: int


class RegressedPrompt(TypedDict):
    index: int
    prompt: str
    answer: str


class PromptOutcome(TypedDict):
    prompt: str
    answer: str
    incumbent: float
    candidate: float
    regressed: bool


class GateReport(KLSummary):
    """The swap gate's evidence and decision (`gate.evaluate`): D_tok(incumbent || candidate) with its standard
    error, the paired score test (one-sided bounds at the look's boundary), coordination regressions, and
    `decision` accepted | refused | inconclusive with its `reasons`. `config` is the `GateConfig` as a dict
    plus the sampling temperature."""

    team: str
    role: str
    incumbent: VersionRef
    candidate: CandidateInfo
    backend: str
    config: dict[str, Any]
    alpha: float
    epsilon: float
    delta: float
    budget: GateBudget
    prompts: int
    episodes: int
    looks_used: int
    contexts: int
    score_incumbent: float
    score_candidate: float
    diff_mean: float
    diff_lcb: float
    diff_ucb: float
    z_accept: float
    z_refuse: float
    boundary: float
    score_decision: str
    regressions: list[int]
    improvements: int
    regression_share_lcb: float
    regressed_prompts: list[RegressedPrompt]
    per_prompt: list[PromptOutcome]
    more_prompts: int | None
    accepted: bool
    decision: str
    reasons: list[str]


class SwapResult(TypedDict):
    """`gate.swap`: what was swapped (or refused: carried by `GateRefused` / `GateInconclusive`), the
    compatibility summary, the gate's report (None without `--gate`) and the team's new revision (None when
    nothing moved)."""

    team: str
    role: str
    ref: str
    dry_run: bool
    gated: bool
    incumbent: VersionRef
    candidate: CandidateInfo
    compat: Compatibility
    report: GateReport | None
    accepted: bool
    decision: str
    forced: bool
    revision: int | None


# -- playing a team ----------------------------------------------------------------------------------------


class AgentStats(TypedDict):
    version: str
    messages: int
    tokens: int
    mean_tokens: float
    answer_format_rate: float


# `Team.score`: a set of episodes' avg@k, pass@k, answer rates and tokens (functional syntax: keys hold "@").
TeamScore = TypedDict("TeamScore", {
    "avg@k": float,  # mean reward
    "pass@k": float,  # share of prompts with a correct sample
    "final_format_rate": float,
    "answered_rate": float,
    "tokens": int,
    "episodes": int,
    "agents": NotRequired[dict[str, AgentStats]],  # the team's result only
})

# `Team.evaluate`'s report: the team's score (with per-agent stats) and, with base_alone, the base model's
# alone on the same prompts and the difference.
EvalReport = TypedDict("EvalReport", {
    "team": str,
    "task": str,
    "split": str,
    "n": int,
    "k": int,
    "seed": int,
    "temperature": float | None,
    "team_result": TeamScore,
    "wall_s": float,
    "base_alone": NotRequired[TeamScore],  # with base_alone=True
    "gain_avg@k": NotRequired[float],
    "gain_paired": NotRequired[PairedChange | None],  # the `eval` command: team - base alone, paired
    "saved": NotRequired[str],  # the `eval --save` transcripts file
})

__all__ = [
    "Pin", "TeamManifest", "TrainedVersion", "HistoryEvent", "VerifyReport", "GcReport", "RankCorrelation",
    "PairedChange", "HeldoutEval", "LogprobGapSummary", "TrainStats", "RunSummary", "VersionRef", "CandidateInfo",
    "Compatibility", "KLSummary", "GateBudget", "RegressedPrompt", "PromptOutcome", "GateReport", "SwapResult", "AgentStats",
    "TeamScore", "EvalReport",
]
