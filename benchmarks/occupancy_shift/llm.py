"""The LLM half of the occupancy-shift study: the real trainer (`teamtr_adapters.train`) on generated teams of
n agents, one stage per (n, method, seed), measuring per component update the stale gap |L_fresh - L_stale|
(the trainer's diagnostics) and the occupancy divergence KL(d_intermediate || d_start) of the contexts the
updated agent reads; growth exponents in n with bootstrap intervals over seeds (fit.py), a printed table,
JSON and PNG plots (plots.py).

    python -m benchmarks.occupancy_shift.llm --quick     # tiny random model, n = 2, 3 (seconds)
    python -m benchmarks.occupancy_shift.llm             # SmolLM2-135M, n = 2, 3, 4, 6, 8 (docs/occupancy.md)

Every finished stage is appended to `runs.jsonl` in the output folder; a rerun with the same setup skips
the stages already there (delete the file to start over), so an interrupted full run resumes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from teamtr_adapters.registry import Registry
from teamtr_adapters.runtime.base import resolve_base
from teamtr_adapters.runtime.protocol import build_prompt
from teamtr_adapters.spec import TeamSpec, spec_from_dict
from teamtr_adapters.tasks import get_task
from teamtr_adapters.train.policy import agent_rows, occupancy_divergence
from teamtr_adapters.train.stage import TrainConfig, Trainer, run_stages

from .fit import fit_exponent
from .run import reference_slopes, write_json

RESULTS = Path(__file__).resolve().parents[1] / "results" / "occupancy_shift" / "llm"
METHODS = ("teamtr", "stale")
SCHEMA = 3  # what a stage record holds; a change makes earlier records of runs.jsonl stale
SEED_RANGE = 1000  # seed s trains with the first live seed of s * SEED_RANGE + 0, 1, ... (see run_one)
MAX_DEAD_STARTS = 50
TINY = "tiny"  # Config.base: build a tiny random digit-guessing Llama (see `build_tiny_base`)
DIGITS = [str(d) for d in range(10)]
DEFINITIONS = {
    "gaps": "per update |L_fresh - L_stale| (UpdateRecord.stale_gap): the update's surrogate gain on rollouts of "
            "the intermediate team minus that on the stage-start rollouts",
    "div": "per update KL(d_intermediate || d_start) of the contexts the updated agent reads, exact-conditional "
           "estimate: mean over the intermediate team's episodes of the sum, over the messages written before "
           "the agent's turn by agents already updated in the stage, of the full-vocabulary token KLs "
           "KL(pi_new(.|s) || pi_start(.|s)) at the message's token states",
    "div_sampled": "the same KL, sampled estimate: the sum of log pi_new(m) - log pi_start(m) over those messages",
    "null_gaps": "per update |L_stale - L_control|: the update's surrogate gain on the stage-start rollouts minus "
                 "that on an independent rollout of the stage-start team (same prompts, another seed): the stale "
                 "gap's sampling-noise level, with no occupancy shift",
    "dead_starts": "training seeds skipped before this stage because their first rollout set had equal rewards "
                   "within every group (no update of the stage could learn; both methods skip the same seeds)",
    "G": "stage stale gap: sum of gaps over the stage's n updates",
    "G0": "stage null gap: sum of null_gaps over the stage's n updates",
    "D": "stage occupancy divergence: sum of div over the stage's n updates",
}


@dataclass(frozen=True)
class Config:
    ns: tuple[int, ...] = (2, 3, 4, 6, 8)
    seeds: int = 2
    base: str = "embedded"
    max_new_tokens: int = 8
    prompts: int = 4
    group_size: int = 2
    steps: int = 1
    lr: float = 1.5e-3
    delta: float = 0.01
    temperature: float = 0.8
    lora_rank: int = 4
    dtype: str = "float32"  # bf16 logits put a floor of ~2.4e-3 under a token KL (docs/gate.md)
    n_boot: int = 4000

    def setup(self) -> dict[str, Any]:
        """What a stage's numbers depend on (the grid, ns and seeds, may grow between runs)."""
        return {"schema": SCHEMA, **{k: v for k, v in asdict(self).items() if k not in ("ns", "seeds", "n_boot")}}

    def setup_id(self) -> str:
        return hashlib.sha256(json.dumps(self.setup(), sort_keys=True).encode()).hexdigest()[:12]


QUICK = Config(ns=(2, 3), seeds=2, base=TINY, max_new_tokens=1, prompts=2, group_size=4, lr=1e-2, delta=0.05,
               temperature=1.0, dtype="float32", n_boot=1000)


# -- the team and its model ------------------------------------------------------------------------------
def team_spec(n: int, cfg: Config, base: str) -> TeamSpec:
    """n agents agent1..agentN speaking once each in order on arithmetic (difficulty 1); the last one's
    message is scored. Validated like a user's spec."""
    roles = [{"name": f"agent{i}", "max_new_tokens": cfg.max_new_tokens,
              "system_prompt": f"You are agent{i} of {n}. Reply 'Answer: <number>'."} for i in range(1, n + 1)]
    return spec_from_dict({
        "name": f"occupancy-n{n}", "base": base, "roles": roles,
        "task": {"name": "arithmetic", "params": {"difficulty": 1}},
        "sampling": {"temperature": cfg.temperature},
        "lora": {"rank": cfg.lora_rank, "alpha": 2 * cfg.lora_rank, "target_modules": ["q_proj", "v_proj"]},
        "trust_region": {"delta": cfg.delta, "group_size": cfg.group_size, "prompts_per_update": cfg.prompts,
                         "lr": cfg.lr},
    })


def build_tiny_base(out: Path) -> Path:
    """A tiny random Llama (2 layers, hidden 64, the embedded model's tokenizer; as in tests/conftest.py)
    whose digit tokens' embeddings lie along its mean final hidden state, so that it answers with a
    near-uniform random digit: a random team with a reward rate of a few percent on one-token messages, so
    the arithmetic task gives a learning signal in seconds."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    for f in resolve_base("embedded").path.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, out / f.name)
    tok = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=1,
        eos_token_id=2, pad_token_id=2))
    items = get_task("arithmetic", {"difficulty": 1}).sample(8, seed=0)
    digits = tok.convert_tokens_to_ids(DIGITS)
    with torch.no_grad():
        h = torch.stack([model.model(torch.tensor([build_prompt(tok, "You are agent1.", it.prompt, [])]))
                         .last_hidden_state[0, -1] for it in items]).mean(0)
        emb = model.model.embed_tokens.weight
        emb[digits] = 15.0 * h / h.norm() ** 2 + 0.02 * torch.randn(len(digits), emb.shape[1])
    model.save_pretrained(out)
    (out / "teamtr_base.json").write_text(json.dumps({"name": "tiny-digit-llama"}))
    return out


# -- the divergence ---------------------------------------------------------------------------------------
class DeadStart(Exception):
    """The first rollout set of a stage has equal rewards within every group: no update can learn."""


class StudyTrainer(Trainer):
    """The trainer, unchanged, plus two measurements per update: the occupancy divergence of its intermediate
    team (the rollouts its L_fresh is scored on) from the stage-start team, taken before the update; and
    its surrogate gain on a control set, an independent rollout of the stage-start team (one per stage,
    made before the first update), for the sampling-noise level of the stale gap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.divergence: dict[int, tuple[float, float]] = {}  # update index -> (exact, sampled)
        self.l_control: dict[int, float] = {}  # update index -> surrogate gain on the control set
        self._items: list[Any] = []  # the prompts of the stage (as the loop last rolled them out)
        self._control: tuple[int, Any] | None = None  # (stage, control rollouts)

    def rollout(self, items, seed, *args, **kwargs):
        self._items = items
        return super().rollout(items, seed, *args, **kwargs)

    def update(self, role, data, *, stage, stage_start, fresh, happo=None):
        if self._control is None or self._control[0] != stage:  # no agent of the stage is updated yet
            if not any(self.advantages(data)):
                raise DeadStart(f"stage {stage}: no reward spread in any group of the first rollouts")
            seed = int(hashlib.sha256(f"occupancy-control/{self.cfg.seed}/{stage}".encode()).hexdigest()[:8], 16)
            self._control = stage, super().rollout(self._items, seed, diagnostic=True, observe=False)
        div = occupancy_divergence(self.tm, fresh.episodes, stage_start.pins, role,
                                   temperature=self.loss_cfg.temperature, batch_size=self.cfg.micro_batch)
        rec, work = super().update(role, data, stage=stage, stage_start=stage_start, fresh=fresh, happo=happo)
        control = self._control[1]
        self.divergence[rec.update] = div
        self.l_control[rec.update] = work.measure(agent_rows(control.episodes, role, self.advantages(control))).gain
        return rec, work


# -- one stage --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    n: int
    method: str
    seed: int


def _r(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.4g}")


def prepare_team(n: int, cfg: Config, base: str, root: Path) -> Path:
    """A registry home holding the fresh team of n agents (copied for every stage: each starts from it)."""
    home = root / f"team-n{n}"
    if not home.is_dir():
        Registry(home).init_team(team_spec(n, cfg, base))
    return home


def run_one(task: Task, cfg: Config, base: str, team_home: Path, threads: int = 1) -> dict:
    """One live stage of `task.method` from the fresh team: the first training seed of the task's range
    (task.seed * SEED_RANGE + 0, 1, ...) whose first rollout set has a reward spread in some group (a dead
    start teaches nothing, and teaches both methods the same nothing); its per-update measurements."""
    torch.set_num_threads(threads)
    for skipped in range(MAX_DEAD_STARTS):
        train_seed = task.seed * SEED_RANGE + skipped
        try:
            out = run_stage(task, train_seed, cfg, base, team_home)
        except DeadStart:
            continue
        return {"n": task.n, "method": task.method, "seed": task.seed, "setup": cfg.setup_id(),
                "train_seed": train_seed, "dead_starts": skipped, **out}
    raise RuntimeError(f"n = {task.n}: no reward spread in the first rollouts of {MAX_DEAD_STARTS} seeds")


def run_stage(task: Task, train_seed: int, cfg: Config, base: str, team_home: Path) -> dict:
    """One stage (raises DeadStart when its first rollout set carries no signal)."""
    spec = team_spec(task.n, cfg, base)
    with tempfile.TemporaryDirectory(prefix="occupancy-llm-") as tmp:
        home = Path(tmp) / "home"
        shutil.copytree(team_home, home)
        t0 = time.perf_counter()
        trainer = StudyTrainer(Registry(home), spec.name,
                               TrainConfig(method=task.method, steps=cfg.steps, seed=train_seed, diag_fresh=True,
                                           redraws=0, probe_prompts=0,  # the study is of speaking order:
                                           order="speaking"),  # earlier speakers shift later ones' states
                               device="cpu", dtype=cfg.dtype, run_dir=Path(tmp) / "run")
        res = run_stages(trainer, 1)
        wall = time.perf_counter() - t0
    recs = res.records
    div = [trainer.divergence[r.update] for r in recs]
    out = {
        "gaps": [_r(r.stale_gap) for r in recs], "div": [_r(d[0]) for d in div],
        "div_sampled": [_r(d[1]) for d in div],
        "l_fresh": [_r(r.l_fresh) for r in recs], "l_stale": [_r(r.l_stale) for r in recs],
        "null_gaps": [_r(abs(r.l_stale - trainer.l_control[r.update])) for r in recs],
        "d_tok": [_r(r.d_tok_mean) for r in recs], "d_tok_fresh": [_r(r.d_tok_fresh) for r in recs],
        "accepted": [r.version is not None for r in recs], "backtracks": sum(r.backtracks for r in recs),
        "reward_start": _r(recs[0].reward_before), "reward_end": _r(recs[-1].reward_after),
        "tokens": res.summary["tokens"], "diag_tokens": res.summary["diag_tokens"], "wall_s": round(wall, 1),
    }
    out["G"] = _r(sum(out["gaps"]))
    out["G0"] = _r(sum(out["null_gaps"]))
    out["D"] = _r(sum(out["div"]))
    out["D_sampled"] = _r(sum(out["div_sampled"]))
    return out


def read_runs(path: Path, cfg: Config) -> list[dict]:
    """The stages of `path` (runs.jsonl) measured with this setup, on this grid."""
    if not path.is_file():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in runs if r["setup"] == cfg.setup_id() and r["n"] in cfg.ns and r["seed"] < cfg.seeds]


def run_all(cfg: Config, out: Path, jobs: int = 1, threads: int = 1, log=print) -> list[dict]:
    """Every (seed, n, method) stage not yet in out/runs.jsonl, seed-major (complete sweeps over n first);
    each finished stage is appended at once. Returns every stage of the grid in the file."""
    path = out / "runs.jsonl"
    done = {(r["n"], r["method"], r["seed"]) for r in read_runs(path, cfg)}
    todo = [Task(n, m, s) for s in range(cfg.seeds) for n in cfg.ns for m in METHODS if (n, m, s) not in done]
    if todo:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with tempfile.TemporaryDirectory(prefix="occupancy-llm-teams-") as tmp, open(path, "a") as f:
                root = Path(tmp)
                base = str(build_tiny_base(root / "tiny-base")) if cfg.base == TINY else cfg.base
                homes = {n: prepare_team(n, cfg, base, root) for n in sorted({t.n for t in todo})}
                for r in _finished([(t, cfg, base, homes[t.n], threads) for t in todo], jobs):
                    f.write(json.dumps(r, separators=(",", ":")) + "\n")
                    f.flush()
                    log(f"  n = {r['n']} {r['method']:<6} seed {r['seed']}: G = {r['G']:.4g}, D = {r['D']:.4g} "
                        f"({r['wall_s']:.0f} s)")
        finally:
            torch.set_num_threads(before)
    return read_runs(path, cfg)


def _finished(work: list[tuple], jobs: int) -> Iterator[dict]:
    """`run_one` over `work`, as the stages finish: in this process with one job, else in `jobs` spawned
    processes (fresh interpreters: no OpenMP state forked from this one)."""
    if jobs <= 1:
        for w in work:
            yield run_one(*w)
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for fut in as_completed([pool.submit(run_one, *w) for w in work]):
            yield fut.result()


# -- analysis ---------------------------------------------------------------------------------------------
def by_n(runs: list[dict], method: str, key: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for r in sorted(runs, key=lambda r: (r["n"], r["seed"])):
        if r["method"] == method:
            out.setdefault(r["n"], []).append(r[key])
    return out


def paired(runs: list[dict], key: str) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """{n: [stale values]}, {n: [teamtr values]} over the seeds measured with both methods, in seed order."""
    vals = {(r["n"], r["seed"], r["method"]): r[key] for r in runs}
    keys = sorted({(n, s) for n, s, _ in vals if all((n, s, m) in vals for m in METHODS)})
    num: dict[int, list[float]] = {}
    den: dict[int, list[float]] = {}
    for n, s in keys:
        num.setdefault(n, []).append(vals[n, s, "stale"])
        den.setdefault(n, []).append(vals[n, s, "teamtr"])
    return num, den


def try_fit(values: dict, cfg: Config, relative_to: dict | None = None) -> dict:
    """fit_exponent's result as a dict, or {"error": why} (fewer than two sizes, a zero mean)."""
    try:
        return fit_exponent(values, relative_to=relative_to, n_boot=cfg.n_boot).as_dict()
    except ValueError as e:
        return {"error": str(e)}


QUANTITIES = ("G", "G0", "D")


def analyse(runs: list[dict], cfg: Config) -> dict:
    """Exponent fits in n (per method; stale over teamtr paired by seed; G over its null G0 paired by stage),
    means and shares per n."""
    fits = {f"{q}_{m}": try_fit(by_n(runs, m, q), cfg) for q in QUANTITIES for m in METHODS}
    for q in ("G", "D"):
        num, den = paired(runs, q)
        fits[f"{q}_stale/{q}_teamtr"] = try_fit(num, cfg, relative_to=den)
    for m in METHODS:
        fits[f"G_{m}/G0_{m}"] = try_fit(by_n(runs, m, "G"), cfg, relative_to=by_n(runs, m, "G0"))
    means = {f"{q}_{m}": {n: float(np.mean(v)) for n, v in by_n(runs, m, q).items()}
             for q in (*QUANTITIES, "D_sampled", "reward_start", "reward_end") for m in METHODS}
    accepted = {m: {n: float(np.mean([np.mean(a) for a in v])) for n, v in by_n(runs, m, "accepted").items()}
                for m in METHODS}
    out_of_region = {m: {n: float(np.mean([np.mean([d > cfg.delta for d in x if d is not None]) for x in v]))
                         for n, v in by_n(runs, m, "d_tok_fresh").items()} for m in METHODS}
    dead = {m: {n: float(np.mean(v)) for n, v in by_n(runs, m, "dead_starts").items()} for m in METHODS}
    per_n = {m: {n: [r for r in runs if r["method"] == m and r["n"] == n] for n in cfg.ns} for m in METHODS}
    return {"fits": fits, "mean": means, "accepted_share": accepted, "out_of_region_share": out_of_region,
            "dead_starts_per_stage": dead,
            "kl_per_changed_agent": {m: {n: _mean([k for r in rs for k in kl_per_changed_agent(r)])
                                         for n, rs in by.items() if rs} for m, by in per_n.items()},
            "silent_eval_share": {m: {n: _mean([x for r in rs for x in silent_evaluations(r)])
                                      for n, rs in by.items() if rs} for m, by in per_n.items()},
            "per_seed_exponents": {f"{q}_{m}": per_seed_exponents(runs, m, q) for q in QUANTITIES for m in METHODS},
            "seeds_per_n": {m: {n: len(v) for n, v in by_n(runs, m, "G").items()} for m in METHODS}}


def per_seed_exponents(runs: list[dict], method: str, key: str) -> dict[int, float | None]:
    """The log-log slope in n of one seed's values alone (None unless every value is positive and there are
    two sizes): the seed-to-seed spread that a bootstrap over 2-3 seeds per n understates."""
    out: dict[int, float | None] = {}
    for seed in sorted({r["seed"] for r in runs}):
        pts = sorted((r["n"], r[key]) for r in runs if r["method"] == method and r["seed"] == seed)
        ok = len(pts) >= 2 and all(v > 0 for _, v in pts)
        out[seed] = float(np.polyfit(np.log([n for n, _ in pts]), np.log([v for _, v in pts]), 1)[0]) if ok else None
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def kl_per_changed_agent(run: dict) -> list[float]:
    """div_i / (the number of earlier updates of the stage that changed their agent), for every update with
    at least one: the divergence each changed agent adds to the contexts of the agents after it."""
    changed = np.cumsum([0] + run["accepted"][:-1])
    return [d / k for d, k in zip(run["div"], changed) if k > 0]


def silent_evaluations(run: dict) -> list[bool]:
    """For every update after the first that changed its agent: whether one of the two sets its stale gap
    compares carried no signal (equal rewards within every group, so the surrogate gain there is exactly 0),
    the case where the gap reduces to |L| on the other set."""
    return [lf == 0 or ls == 0 for lf, ls, a in zip(run["l_fresh"][1:], run["l_stale"][1:], run["accepted"][1:])
            if a]


def make_plots(runs: list[dict], summary: dict, cfg: Config, out: Path) -> list[str]:
    """Scaling of G, G0 and D in n (means with bootstrap intervals, every seed as a dot), the paired ratios,
    and the per-update gap and divergence profiles. Series that cannot be fitted are left out."""
    from .plots import FIT_CAPTION, save_profile_figure, save_ratio_figure, save_scaling_figure

    fits = summary["fits"]
    setting = (f"LLM study ({cfg.base} base, LoRA rank {cfg.lora_rank}, {cfg.dtype}): {cfg.seeds} training seeds "
               f"(instances) per team size n and method; per-update KL radius delta = {cfg.delta:g}, {cfg.prompts} "
               f"prompts x {cfg.group_size} samples, {cfg.steps} step(s) per update at lr {cfg.lr:g}. ")
    control = ("L_control: the update's surrogate gain on an independent rollout of the stage-start team (same "
               "prompts, another seed), so |L_stale - L_control| is the gap's sampling-noise level with no shift. ")
    titles = {"G": "stage stale gap G", "G0": "null gap G0 (no shift)", "D": "occupancy divergence D"}
    panels = {titles[q]: {m: by_n(runs, m, q) for m in METHODS if "error" not in fits[f"{q}_{m}"]}
              for q in QUANTITIES}
    names = []
    if any(panels.values()):
        save_scaling_figure({t: s for t, s in panels.items() if s}, out / "scaling.png", ylabel="sum over the stage",
                            points=True, sharey=True,
                            caption=setting + "G = sum over the stage's updates of |L_fresh - L_stale|; G0 = the "
                                    "same sum of |L_stale - L_control|; D = sum of KL(d_intermediate || d_start) of "
                                    "the contexts each updated agent reads. " + control + FIT_CAPTION
                                    + " Dots: individual seeds.")
        names.append("scaling.png")
    pairs = {**{f"{q}_stale/{q}_teamtr": paired(runs, q) for q in ("G", "D")},
             **{f"G_{m}/G0_{m}": (by_n(runs, m, "G"), by_n(runs, m, "G0")) for m in METHODS}}
    ratios = {k: v for k, v in pairs.items() if "error" not in fits[k]}
    if ratios:
        save_ratio_figure(ratios, out / "ratio.png", ylabel="ratio of means", n_boot=cfg.n_boot,
                          caption=setting + "Ratios of means over seeds (stale/teamtr paired by seed); G/G0 above 1: "
                                  "the stale gap exceeds its sampling-noise level. " + control + FIT_CAPTION)
        names.append("ratio.png")
    for key, name, ylabel, what in (
            ("gaps", "gap_profile.png", "stale gap |L_fresh - L_stale|", "Stale gap of the i-th update."),
            ("null_gaps", "null_profile.png", "null gap |L_stale - L_control|", "Null gap of the i-th update. " + control),
            ("div", "div_profile.png", "KL(d_intermediate || d_start)",
             "Occupancy divergence at the i-th update (contexts the updated agent reads).")):
        save_profile_figure({m: by_n(runs, m, key) for m in METHODS if by_n(runs, m, key)}, out / name,
                            ylabel=ylabel, sharey=True,
                            caption=setting + what + " Mean over seeds; one line per team size n.")
        names.append(name)
    return names


def replot(folder: Path) -> list[str]:
    """Redraw the PNGs of a written study from runs.jsonl and occupancy_llm.json (no stage is run)."""
    head = json.loads((folder / "occupancy_llm.json").read_text())
    c = head["config"]
    cfg = Config(**{**c, "ns": tuple(c["ns"])})
    runs = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines() if line.strip()]
    return make_plots(runs, head["summary"], cfg, folder)


def _fmt_mean(values: list[float]) -> str:
    return f"{np.mean(values):.4g} ± {np.std(values, ddof=1) / np.sqrt(len(values)):.2g}" if len(values) > 1 \
        else f"{values[0]:.4g}"


def _cell(x: float | None, spec: str) -> str:
    return "--" if x is None else format(x, spec)


def table(runs: list[dict], summary: dict, cfg: Config) -> str:
    lines = [f"{'n':>3} {'method':<7}{'seeds':>6} {'G (mean ± se)':>20} {'G0 (mean ± se)':>20} "
             f"{'D (mean ± se)':>20} {'D sampled':>10} {'KL/agent':>9} {'accepted':>9} {'silent':>7} {'dead':>5} "
             f"{'reward':>13}"]
    for n in cfg.ns:
        for m in METHODS:
            rs = [r for r in runs if r["n"] == n and r["method"] == m]
            if not rs:
                continue
            acc = np.mean([np.mean(r["accepted"]) for r in rs])
            rew = f"{np.mean([r['reward_start'] for r in rs]):.2f} -> {np.mean([r['reward_end'] for r in rs]):.2f}"
            lines.append(f"{n:>3} {m:<7}{len(rs):>6} {_fmt_mean([r['G'] for r in rs]):>20} "
                         f"{_fmt_mean([r['G0'] for r in rs]):>20} {_fmt_mean([r['D'] for r in rs]):>20} "
                         f"{np.mean([r['D_sampled'] for r in rs]):>10.4g} "
                         f"{_cell(summary['kl_per_changed_agent'][m].get(n), '.4f'):>9} {acc:>9.2f} "
                         f"{_cell(summary['silent_eval_share'][m].get(n), '.2f'):>7} "
                         f"{np.mean([r['dead_starts'] for r in rs]):>5.1f} {rew:>13}")
    lines.append("exponents in n (95 % bootstrap over seeds; then each seed's own slope):")
    for k, fit in summary["fits"].items():
        text = f"{fit['exponent']:6.2f}  [{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]" if "error" not in fit \
            else f"    -- ({fit['error'].split(';')[0]})"
        seeds = summary["per_seed_exponents"].get(k)
        if seeds and "error" not in fit:
            text += "   seeds: " + ", ".join(_cell(b, ".2f") for b in seeds.values())
        lines.append(f"  {k:<18} {text}")
    ref = ", ".join(f"{k}: {v:.2f}" for k, v in reference_slopes(cfg.ns).items())
    lines.append(f"the same regression over n = {', '.join(map(str, cfg.ns))} on exact shapes: {ref}")
    return "\n".join(lines)


def columns(runs: list[dict]) -> list[dict]:
    """One compact record per (n, method) with one list per field over the seeds."""
    groups: dict[tuple, dict] = {}
    for r in sorted(runs, key=lambda r: (r["n"], METHODS.index(r["method"]), r["seed"])):
        g = groups.setdefault((r["n"], r["method"]), {"n": r["n"], "method": r["method"]})
        for k, v in r.items():
            if k not in ("n", "method", "setup"):
                g.setdefault(k, []).append(v)
    return list(groups.values())


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.occupancy_shift.llm", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny random model, n = 2, 3, 2 seeds (seconds)")
    p.add_argument("--out", type=Path, help="output folder (default: benchmarks/results/occupancy_shift/llm, "
                                            "or a temp folder with --quick)")
    p.add_argument("--seeds", type=int, help="seeds per (n, method)")
    p.add_argument("--ns", type=int, nargs="+", help="team sizes (2..8)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="stages run in parallel processes")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default 1: on a shared, loaded machine 2 threads made a "
                        "prefill 18x slower through OpenMP spin-waits)")
    p.add_argument("--replot", type=Path, metavar="FOLDER",
                   help="only redraw the PNGs of a written study from its runs.jsonl and occupancy_llm.json")
    a = p.parse_args(argv)
    if a.replot:
        print("\n".join(str(a.replot / name) for name in replot(a.replot)))
        return {}
    cfg = QUICK if a.quick else Config()
    if a.seeds is not None:
        if a.seeds < 1:
            p.error("--seeds must be at least 1")
        cfg = replace(cfg, seeds=a.seeds)
    if a.ns:
        if any(not 2 <= n <= 8 for n in a.ns) or len(set(a.ns)) != len(a.ns):
            p.error("--ns must be distinct team sizes within 2..8")
        cfg = replace(cfg, ns=tuple(sorted(a.ns)))
    if a.jobs < 1 or a.threads < 1:
        p.error("--jobs and --threads must be at least 1")
    out = a.out or (Path(tempfile.gettempdir()) / "occupancy_shift_llm_quick" if a.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    t0 = time.perf_counter()
    runs = run_all(cfg, out, a.jobs, a.threads)
    runtime = time.perf_counter() - t0
    summary = analyse(runs, cfg)
    plots = make_plots(runs, summary, cfg, out)
    head = {"config": asdict(cfg), "setup_id": cfg.setup_id(), "jobs": a.jobs, "threads": a.threads,
            "stages": len(runs),
            "runtime_s_this_call": round(runtime, 1), "stage_wall_s_total": round(sum(r["wall_s"] for r in runs), 1),
            "definitions": DEFINITIONS, "reference_slopes": reference_slopes(cfg.ns), "summary": summary,
            "plots": plots}
    write_json(out / "occupancy_llm.json", head, columns(runs))
    print(table(runs, summary, cfg))
    print(f"\n{len(runs)} stages ({head['stage_wall_s_total']:.0f} s of stage wall time in all; "
          f"{runtime:.0f} s in this call); wrote {out}")
    return head


if __name__ == "__main__":
    main()
