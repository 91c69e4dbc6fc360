"""`train` (TeamTR component updates and stages, and the baselines) and `report` (a run's curves)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import InputError
from .home import default_team, open_registry
from .render import JsonOpt, console, emit, progress, table
from .runtime_cmds import BackendOpt, check_play_options


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("report")(report)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _f3(v: Any) -> str:
    """A table number: 3 significant digits, '-' when absent."""
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


TRAIN_LEGEND = ("R0/R1: mean reward of the update's rollouts before/after; L_fresh: surrogate on fresh rollouts; "
                "D_tok: mean token KL(old || new); bt: backtracks; oor: out of region (D_tok > delta on held-out "
                "states); tok: generated tokens; s: seconds")


def _render_train(s: dict[str, Any]) -> None:
    rows = [[r["update"], r["stage"], r["role"], r.get("version_name") or "-", _f3(r["reward_before"]),
             _f3(r["reward_after"]), _f3(r["l_fresh"]), _f3(r["d_tok_mean"]), _f3(r["beta"]), r["backtracks"],
             "yes" if r["out_of_region"] else "", r["tokens"], _f3(r["wall_s"])] for r in s["records"]]
    cols = ["#", "stage", "role", "ver", "R0", "R1", "L_fresh", "D_tok", "beta", "bt", "oor", "tok", "s"]
    console.print(table(f"run {s['run']} ({s['method']}; ver '-': no new version)", cols, rows,
                        right=tuple(c for c in cols if c not in ("role", "ver", "oor")), caption=TRAIN_LEGEND))
    keys = ["stale_gap_mean", "tokens", "diag_tokens", "wall_s"]
    console.print("  ".join(f"{k}={_fmt(s.get(k))}" for k in keys), highlight=False)
    if s.get("probed_updates"):
        console.print(f"out of region (D_tok > delta on held-out states): {s['out_of_region_updates']} of "
                      f"{s['probed_updates']} updates; hard-check excursions rolled back: "
                      f"{s['out_of_region_events']}", highlight=False)
    corr = s.get("certificate_rank_corr")
    if corr:
        ci = corr["ci95"]
        console.print(f"certificate vs measured reward change: Spearman {corr['rho']:.2f} "
                      f"(95% CI {_ci(ci)}, {corr['n']} updates)", highlight=False)
    for r in s["records"]:
        if r.get("no_signal"):
            console.print(f"update {r['update']} ({r['role']}): no learning signal: {r['no_signal']}",
                          highlight=False, markup=False, soft_wrap=True)
    gap = s.get("logprob_gap")
    if gap and gap["tokens"]:
        console.print(f"rollout backend {s['backend']}: engine - trainer log-prob gap mean |d| "
                      f"{_fmt(gap['mean_abs'])}, max |d| {_fmt(gap['max_abs'])}, KL k3 {_fmt(gap['kl_k3'])} "
                      f"over {gap['tokens']} trained tokens", highlight=False)
    ch = s.get("eval_change")
    if ch:
        k = s["eval_before"]["k"]
        console.print(f"held-out accuracy {ch['before']:.3f} -> {ch['after']:.3f} on {ch['n']} prompts"
                      f"{f' x {k} samples' if k > 1 else ''}: change {ch['change']:+.3f}, 95% CI {_ci(ch['ci95'])} "
                      f"(paired: same prompts, same seeds; {ch['wins']} better, {ch['losses']} worse)",
                      highlight=False)
    console.print(f"diagnostics: {s['run_dir']}/updates.jsonl  (curves: teamtr-adapters report {s['run']})")


def _ci(ci: Any) -> str:
    return "n/a" if not ci else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


class _Bars:
    """Maps the trainer's (phase, done, total) callbacks onto rich progress bars, one per phase."""

    def __init__(self, bars: Any) -> None:
        self.bars = bars
        self.tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.bars.add_task(phase, total=total)
        self.bars.update(self.tasks[phase], completed=done, total=total)


def train(
    role: Optional[str] = typer.Argument(None, help="Train this agent only (K component updates)."),
    team: Optional[str] = typer.Option(None, "--team", "-t", help="The team to train (default: the only team in "
                                       "the registry)."),
    updates: int = typer.Option(1, "--updates", help="With ROLE: component updates, each on fresh rollouts."),
    stages: Optional[int] = typer.Option(None, "--stages", help="Without ROLE: full TeamTR stages."),
    order: str = typer.Option("reverse", "--order", help="Update order: reverse (last speaker first; suffix "
                              "resampling then regenerates (n+1)/2n of the turns) | speaking | random | ROLE,ROLE,..."),
    method: str = typer.Option("teamtr", "--method",
                               help="teamtr | stale | stale-is | resample-every-k | joint | single"),
    resample: str = typer.Option("suffix", "--resample", help="suffix (exact, cheaper) | full"),
    resample_every: int = typer.Option(2, "--resample-every", help="k of resample-every-k."),
    steps: int = typer.Option(4, "--steps", help="Optimiser steps per component update."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (default: the spec's)."),
    delta: Optional[float] = typer.Option(None, "--delta", help="Trust-region radius on the mean token KL."),
    beta: Optional[float] = typer.Option(None, "--beta", help="Initial KL coefficient."),
    kl_control: str = typer.Option("adaptive", "--kl-control", help="adaptive | fixed"),
    hard_check: bool = typer.Option(True, "--hard-check/--no-hard-check",
                                    help="Roll back steps whose measured D_tok exceeds delta."),
    ratio: Optional[str] = typer.Option(None, "--ratio", help="token | seq-product | seq-geomean"),
    group_size: Optional[int] = typer.Option(None, "--group-size", "-G", help="Samples per prompt."),
    prompts: Optional[int] = typer.Option(None, "--prompts", "-P", help="Prompts per rollout set."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Cap every role's message."),
    micro_batch: int = typer.Option(8, "--micro-batch", help="Rows per forward/backward."),
    seed: int = typer.Option(0, "--seed"),
    eval_n: int = typer.Option(0, "--eval", help="Score N held-out prompts before and after (0: off); the "
                               "change is paired (same prompts, same seeds) with a 95% interval."),
    eval_k: int = typer.Option(1, "--eval-k", help="Samples per held-out prompt (its score is their mean)."),
    probe_prompts: int = typer.Option(8, "--probe-prompts", help="Prompts of the per-update probe rollout "
                                      "that measures D_tok on held-out states (out-of-region; 0: off)."),
    redraws: int = typer.Option(2, "--redraws", help="Redraw a rollout set without learning signal (equal "
                                "rewards in every group) up to this many times."),
    redraw_prompts: bool = typer.Option(False, "--redraw-prompts", help="A redraw also draws new prompts."),
    fresh_prompts: bool = typer.Option(False, "--fresh-prompts", help="New prompts for every rollout set "
                                       "(out-of-sample updates; no suffix reuse)."),
    diag: bool = typer.Option(True, "--diag/--no-diag",
                              help="Stale methods: roll out intermediate teams for L_fresh and D_tok (extra tokens)."),
    stale_gap: bool = typer.Option(True, "--stale-gap/--no-stale-gap", help="Also score each update "
                                   "on the stage-start rollouts (L_stale, the stale gap; one extra forward per update)."),
    reward_after: bool = typer.Option(True, "--reward-after/--no-reward-after", help="Roll out the new team on the "
                                      "stage's last prompts for the last updates' reward_after (a diagnostic rollout "
                                      "per stage)."),
    tis_cap: Optional[float] = typer.Option(None, "--tis-cap", help="Truncated importance sampling: weight each "
                                            "token's surrogate term by min(pi_trainer / pi_engine, CAP); default "
                                            "2 when another engine or dtype plays the rollouts, else off; 0: off."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    dtype: str = typer.Option("auto", "--dtype", help="Rollout dtype: auto (= the trainer's float32, exact) | "
                              "bfloat16 (faster rollouts by a second model; TIS corrects the gap)."),
    backend: str = BackendOpt,
    track: Optional[str] = typer.Option(None, "--track", metavar="mlflow|wandb",
                                        help="Log the run to an experiment tracker (its package must be installed "
                                        "and configured): settings as params, each update's numbers as metrics "
                                        "(step = update), the summary at the end."),
    as_json: bool = JsonOpt,
) -> None:
    """Train agents with TeamTR: `train ROLE [--updates K]` or `train --stages S` (`--team T` with several teams)."""
    from ..train.distributed import env_rank
    from ..train.stage import TrainConfig, Trainer, run_stages

    if role is not None and stages is not None:
        raise InputError("give either ROLE (with --updates) or --stages, not both")
    if role is None and stages is None:
        raise InputError("give a ROLE to train (with --updates K) or --stages S for full stages")
    if (stages if stages is not None else updates) < 1:
        raise InputError("--updates and --stages must be >= 1")
    check_play_options(device, dtype, None)
    tracking = None
    if track is not None:  # a missing tracker package is an error before any model loads
        from ..train.tracking import RunTracking, open_tracker

        tracking = RunTracking(open_tracker(track), track)
    cfg = TrainConfig(method=method, order=role or order, resample=resample, resample_every=resample_every,
                      steps=steps, lr=lr, delta=delta, beta0=beta, kl_control=kl_control, hard_check=hard_check,
                      ratio=ratio, group_size=group_size, prompts=prompts, max_new_tokens=max_new_tokens,
                      micro_batch=micro_batch, seed=seed, diag_fresh=diag, eval_n=eval_n, eval_k=eval_k,
                      tis_cap=tis_cap, probe_prompts=probe_prompts, redraws=redraws, redraw_prompts=redraw_prompts,
                      fresh_prompts=fresh_prompts, stale_gap=stale_gap, reward_after=reward_after)
    reg = open_registry()
    reg.check_writable()  # e.g. a Hub registry offline: refused before any model loads
    team = default_team(reg, team)
    n = stages if stages is not None else updates
    main = env_rank() == 0  # under torchrun / accelerate launch only rank 0 draws, tracks and prints
    if not main:
        tracking = None
    with progress(disable=not main) as bars, Trainer(reg, team, cfg, device=device, dtype=dtype, progress=_Bars(bars),
                                     single_role=role, backend=backend,
                                     on_record=tracking.record if tracking else None) as trainer:
        if tracking is None:
            result = run_stages(trainer, n)
        else:
            from ..train.tracking import run_params

            tracking.start(trainer.run_id, run_params(trainer, **({"stages": n} if stages is not None else
                                                                   {"role": role, "updates": n})),
                           {"team": team, "method": cfg.method})
            try:
                result = run_stages(trainer, n)
            except BaseException:
                tracking.finish(None)
                raise
            tracking.finish(result.summary)
    if main:
        data = {**result.summary, "records": [r.to_dict() for r in result.records]}
        emit(data, as_json, _render_train)


def _render_report(d: dict[str, Any]) -> None:
    s = d["summary"]
    if not s.get("finished", True):
        console.print(f"run {d['run']} did not finish (interrupted or killed): the curves cover the "
                      f"{s['updates']} update(s) it recorded", highlight=False)
    console.print(f"run {d['run']}: {s['updates']} updates, {s.get('accepted')} accepted, "
                  f"out-of-region rate {_fmt(s.get('out_of_region_rate'))}, tokens {s.get('tokens')}, "
                  f"wall {_fmt(s.get('wall_s'))} s", highlight=False)
    console.print(f"curves: {d['png']}")


def report(
    run: str = typer.Argument(..., help="A run id (or unique prefix) under $TEAMTR_HOME/runs, or a run dir."),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG path (default: RUN_DIR/curves.png)."),
    as_json: bool = JsonOpt,
) -> None:
    """Draw a training run's per-update curves to PNG and print its summary."""
    from ..train.report import find_run, load_run, plot_run, read_config, run_title

    run_dir = find_run(run, open_registry().home)
    records, summary = load_run(run_dir)
    title = run_title(run_dir.name, summary, read_config(run_dir), records)
    png = plot_run(records, out or run_dir / "curves.png", title=title, summary=summary)
    emit({"run": run_dir.name, "run_dir": str(run_dir), "png": str(png), "summary": summary,
          "records": [r.to_dict() for r in records]}, as_json, _render_report)
