"""`swap`, `rollback`, `team rollback`, `align` and `adapter diff`: thin wrappers over `teamtr_adapters.gate`,
`registry.rollback`, `registry.diff`, `train.kl` and `train.align`."""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Iterator, Mapping, Optional

import typer
from rich.markup import escape
from rich.text import Text

from ..errors import GateInconclusive, GateRefused, InputError
from ..registry import Registry
from .home import check_adapter_meta, default_team, open_registry
from .registry_cmds import adapter_app, short, team_app, team_base
from .render import JsonOpt, console, emit, err_console, progress, table
from .runtime_cmds import BackendOpt

TeamOpt = typer.Option(None, "--team", "-t", help="The team (default: the only team in the registry).")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")
DtypeOpt = typer.Option("auto", "--dtype", help="auto (bf16 where the CPU/GPU has it), float32, bfloat16.")


def register(app: typer.Typer) -> None:
    app.command("swap")(swap)
    app.command("rollback")(rollback)
    app.command("align")(align)
    team_app.command("rollback")(team_rollback)
    adapter_app.command("diff")(adapter_diff)


@contextmanager
def progress_callback() -> Iterator[Any]:
    """A `(description, done, total)` callback drawing rich progress bars on stderr when it is a terminal,
    started on first use (so that a command failing early prints nothing but its error)."""
    with ExitStack() as stack:
        tasks: dict[str, Any] = {}
        bars: list[Any] = []

        def update(desc: str, done: int, total: int) -> None:
            if not err_console.is_terminal:
                return
            if not bars:
                bars.append(stack.enter_context(progress()))
            if desc not in tasks:
                tasks[desc] = bars[0].add_task(desc, total=total)
            bars[0].update(tasks[desc], completed=done, total=total)

        yield update


# -- swap ------------------------------------------------------------------------------------------
def swap(
    role: str = typer.Argument(..., help="The role to replace, e.g. solver."),
    ref: str = typer.Argument(..., help="vN or ALIAS of the role's lineage, LINEAGE:vN, a version id prefix, "
                                        "a local PEFT adapter dir, or hf://ORG/REPO\\[@REV]\\[#ROLE]."),
    team: Optional[str] = TeamOpt,
    gate: bool = typer.Option(False, "--gate", help="Swap only if the KL-bounded regression gate accepts."),
    delta: Optional[float] = typer.Option(None, "--delta", help="Largest accepted D_tok (default: the team's trust_region.delta)."),
    epsilon: float = typer.Option(0.1, "--epsilon", help="Non-inferiority margin of the team's mean score."),
    alpha: float = typer.Option(0.05, "--alpha", help="One-sided level of the score tests (false accept / false refuse)."),
    n: int = typer.Option(360, "--n", help="Budget: held-out prompts in the paired evaluation (played in --looks batches)."),
    samples: int = typer.Option(1, "--samples", help="Episodes per prompt (a prompt's score is their mean reward)."),
    looks: int = typer.Option(4, "--looks", help="Batches of the budget; the gate stops early when it can decide."),
    max_regressions: float = typer.Option(0.3, "--max-regressions", help="Refuse when significantly more than this share "
                                          "of prompts regress (incumbent team solved, candidate team fails); >= 1: off."),
    seed: int = typer.Option(0, "--seed", help="Seed of prompts and sampling."),
    force: bool = typer.Option(False, "--force", help="Swap even if the gate refuses (recorded in history)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check (and gate) only; change nothing."),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    backend: str = BackendOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Replace one agent. Exit 0 accepted, 3 refused by the gate, 7 gate inconclusive, 2 bad input."""
    from .. import gate as gate_mod

    check_adapter_meta(ref)
    reg = open_registry()
    if not dry_run:
        reg.check_writable()  # e.g. a Hub registry offline: refused before the gate runs
    team = default_team(reg, team)
    cfg = None
    if gate:
        d = reg.team_spec(team).trust_region.delta if delta is None else delta
        cfg = gate_mod.GateConfig(delta=d, epsilon=epsilon, alpha=alpha, n=n, samples=samples, looks=looks,
                                  max_regressions=max_regressions, seed=seed).check()
    elif delta is not None or backend != "hf":
        raise InputError(f"{'--delta' if delta is not None else '--backend'} applies to the gate; add --gate")
    refuse_deprecated(reg, team, role, ref, force)
    base = team_base(reg, team)
    with progress_callback() as cb:
        try:
            result = gate_mod.swap(reg, team, role, ref, gate=cfg, force=force, dry_run=dry_run, device=device,
                                   dtype=dtype, backend=backend, base=base, progress=cb)
        except (GateRefused, GateInconclusive) as e:
            emit(e.report, as_json, render_swap)
            raise type(e)(f"{e}; next: {next_step(e.report, ref)}", e.report) from None
    emit(result, as_json, render_swap)


def refuse_deprecated(reg: Registry, team: str, role: str, ref: str, force: bool) -> None:
    """A deprecated stored version is not swapped in without --force."""
    from ..errors import TeamTRError
    from ..registry import lineage_of
    from ..registry.catalog import deprecated

    dep = deprecated(reg)
    if not dep or force:
        return
    try:
        info = reg.resolve(ref, lineage_of(team, role)) if ":" not in ref else reg.resolve(ref)
    except TeamTRError:  # a dir, an hf:// ref, or unknown: the swap itself reports it
        return
    if info.id in dep:
        why = dep[info.id].get("reason")
        raise InputError(f"{info.ref} is deprecated{': ' + why if why else ''}; pass --force (with --gate) to swap it in anyway")


def next_step(result: Mapping[str, Any], ref: str) -> str:
    """What to do after a refused or inconclusive gate, from its report (the KL reason and the inconclusive
    message already name their own remedy: alignment or a larger --n)."""
    rep = result.get("report") or {}
    force = "`--force` swaps anyway (recorded in history)"
    if result.get("decision") == "inconclusive":
        return f"rerun with the larger --n, or {force}"
    if rep.get("score_decision") == "refused" or rep.get("regression_share_lcb", 0) > (rep.get("config") or {}).get(
            "max_regressions", 1):
        return (f"keep the incumbent and train the candidate further, e.g. `teamtr-adapters train "
                f"{result.get('role')} --team {result.get('team')}`, then gate the new version; or {force}")
    return f"align as above, or {force}"


def render_swap(r: Mapping[str, Any]) -> None:
    rep = r.get("report")
    if rep:
        render_report(rep)
    c = r["compat"]
    verb = (("would swap" if r["dry_run"] else "swapped") if r["accepted"] or r["forced"]
            else "not swapped (inconclusive)" if r.get("decision") == "inconclusive" else "refused")
    console.print(f"{verb} {r['team']}/{r['role']}: {r['incumbent']['ref']} ({short(r['incumbent']['id'])}) -> "
                  f"{r['candidate']['ref']} ({short(r['candidate']['id'])}); compatible: base "
                  f"{c['base']['name']} {c['base']['hash']}, r={c['r']}, {c['modules']} modules "
                  f"({', '.join(c['module_kinds'])})"
                  + (" [bold red]FORCED past the gate[/]" if r["forced"] else "")
                  + (f"; team revision {r['revision']}" if r["revision"] else "")
                  + ("" if r["gated"] else " (ungated)"), highlight=False)


def render_report(rep: Mapping[str, Any]) -> None:
    cfg = rep["config"]
    ok = {True: Text("pass", "green"), False: Text("FAIL", "red")}
    regs = rep["regressions"]
    score = {"accepted": "[green]pass[/]", "refused": "[red]FAIL[/]", "inconclusive": "[yellow]?[/]"}
    rows: list[list[Any]] = [
        ["D_tok(incumbent || candidate), float32",
         f"{rep['d_tok']:.4g} +- {rep['d_tok_se']:.2g} (SE) over {rep['kl_states']} states of {rep['kl_contexts']} "
         f"messages (p99 {rep['d_tok_p99']:.4g})", f"<= {cfg['delta']:g}", ok[rep["d_tok"] <= cfg["delta"]]],
        ["mean score incumbent -> candidate", f"{rep['score_incumbent']:.3f} -> {rep['score_candidate']:.3f}", "", ""],
        [f"paired diff, one-sided {1 - rep['alpha']:.0%} bounds (z boundary {rep['boundary']:.2f})",
         f"{rep['diff_mean']:+.3f} [{rep['diff_lcb']:+.3f}, {rep['diff_ucb']:+.3f}]",
         f"LCB >= {-cfg['epsilon']:g} accepts; UCB < 0 refuses", score.get(rep["score_decision"], "")],
        ["coordination regressions", f"{len(regs)} of {rep['prompts']} prompts"
         + (f" (#{', #'.join(map(str, regs[:8]))}{', ...' if len(regs) > 8 else ''})" if regs else "")
         + f"; {rep['improvements']} improved",
         f"share <= {cfg['max_regressions']:g}" if cfg["max_regressions"] < 1 else "off",
         ok[not (cfg["max_regressions"] < 1 and rep["regression_share_lcb"] > cfg["max_regressions"])]],
    ]
    title = (f"gate {rep['team']}/{rep['role']}: {rep['incumbent']['ref']} -> {rep['candidate']['ref']} "
             f"({rep['prompts']} of {cfg['n']} held-out prompts x {cfg['samples']}, look {rep['looks_used']} of "
             f"{rep['budget']['looks']}, alpha {rep['alpha']:g}, seed {cfg['seed']})")
    console.print(table(title, ["check", "measured", "threshold", "result"], rows))
    verdict = {"accepted": "[bold green]ACCEPTED[/]", "refused": "[bold red]REFUSED[/]: ",
               "inconclusive": "[bold yellow]INCONCLUSIVE[/]: "}[rep["decision"]]
    more = (f" (about {rep['more_prompts']} more prompts would likely decide)"
            if rep["decision"] == "inconclusive" else "")
    console.print(f"decision: {verdict}" + escape("; ".join(rep["reasons"]) + more), highlight=False)


# -- rollback --------------------------------------------------------------------------------------
def rollback(
    role: str = typer.Argument(..., help="The role whose pin to restore."),
    team: Optional[str] = TeamOpt,
    to: Optional[int] = typer.Option(None, "--to", help="Restore the role's pin at this team revision "
                                                        "(default: undo the role's last change)."),
    as_json: bool = JsonOpt,
) -> None:
    """Restore a role's earlier version exactly (by content id)."""
    from ..registry.rollback import rollback_role

    reg = open_registry()
    team = default_team(reg, team)
    before = reg.manifest(team)["roles"].get(role)
    manifest = rollback_role(reg, team, role, to)
    assert before is not None  # rollback_role refuses a role the team lacks
    emit(manifest, as_json, lambda m: console.print(
        f"{team}/{role}: {before['lineage']}:{before['name']} -> {m['roles'][role]['lineage']}:"
        f"{m['roles'][role]['name']} ({short(m['roles'][role]['id'])}); team revision {m['revision']}",
        highlight=False))


def team_rollback(team: str = typer.Argument(...), revision: int = typer.Argument(..., help="A revision from `history`."),
                  as_json: bool = JsonOpt) -> None:
    """Restore every pin of a team exactly as it was at REVISION."""
    from ..registry.rollback import rollback_team

    reg = open_registry()
    before = reg.manifest(team)["roles"]
    manifest = rollback_team(reg, team, revision)
    emit(manifest, as_json, lambda m: console.print(table(
        f"{team} restored to the pins of revision {revision} (now revision {m['revision']})",
        ["role", "before", "after", "id"],
        [[r, f"{before[r]['lineage']}:{before[r]['name']}", f"{p['lineage']}:{p['name']}", short(p["id"])]
         for r, p in m["roles"].items()])))


# -- align -----------------------------------------------------------------------------------------
def align(
    role: str = typer.Argument(..., help="The role whose incumbent the candidate is aligned toward."),
    ref: str = typer.Argument(..., help="The candidate: as in `swap` (a version, LINEAGE:vN, a dir, hf://...)."),
    team: Optional[str] = TeamOpt,
    delta0: float = typer.Option(0.01, "--delta0", help="Stop once D_tok(incumbent || aligned) <= delta0."),
    probes: int = typer.Option(32, "--probes", help="Probe prompts rolled out with the team (one context per role turn)."),
    steps: int = typer.Option(200, "--steps", help="Optimiser step budget."),
    lr: float = typer.Option(2e-3, "--lr", help="Adam learning rate on the candidate's LoRA weights."),
    seed: int = typer.Option(0, "--seed"),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Stage-0 alignment: distil a candidate toward the incumbent; write the result as a new version."""
    from ..train.align import AlignConfig, align_candidate

    check_adapter_meta(ref)
    reg = open_registry()
    reg.check_writable()
    team = default_team(reg, team)
    cfg = AlignConfig(delta0=delta0, probes=probes, steps=steps, lr=lr, seed=seed).check()
    base = team_base(reg, team)
    with progress_callback() as cb:
        result = align_candidate(reg, team, role, ref, cfg, base=base, device=device, dtype=dtype, progress=cb)
    emit(result, as_json, render_align)


def render_align(r: dict[str, Any]) -> None:
    reached = Text("reached", "green") if r["reached"] else Text("not reached within the step budget", "red")
    console.print(table(
        f"Stage-0 alignment of {r['candidate']['ref']} toward {r['team']}/{r['role']} {r['incumbent']['ref']}",
        ["", "value"],
        [["probe contexts", f"{r['contexts']} ({r['states']} token states)"],
         ["D_tok(incumbent || candidate) before", f"{r['d_tok_before']:.4g}"],
         ["D_tok(incumbent || aligned) after", f"{r['d_tok_after']:.4g}"],
         ["delta0", Text.assemble(f"{r['config']['delta0']:g} (", reached, ")")],
         ["optimiser steps", r["steps"]],
         ["stored as", f"{r['version']['ref']} ({short(r['version']['id'])})"]]))
    console.print(f"next: teamtr-adapters swap {r['role']} {r['version']['ref']} --team {r['team']} --gate",
                  highlight=False)


# -- adapter diff ----------------------------------------------------------------------------------
def adapter_diff(
    a: str = typer.Argument(..., help="A version reference or a local adapter dir."),
    b: str = typer.Argument(..., help="A version reference or a local adapter dir."),
    team: Optional[str] = typer.Option(None, "--team", help="Team whose rollouts give the probe contexts "
                                                            "(default: the team of A's lineage, if any)."),
    role: Optional[str] = typer.Option(None, "--role", help="Role whose turns are probed (default: A's lineage's role)."),
    probes: int = typer.Option(8, "--probes", help="Probe prompts for the KL (0: no KL)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Config differences, per-module norm of the weight delta, and D_tok(A || B) on probe contexts."""
    from ..registry import diff as g
    from ..registry.candidates import locate
    from ..registry.catalog import natural_key
    from ..train.kl import probe_kl

    check_adapter_meta(a)
    check_adapter_meta(b)
    reg = open_registry()
    x, y = locate(reg, a), locate(reg, b)
    result: dict[str, Any] = {"a": x.to_dict(), "b": y.to_dict(), "config_diff": g.config_diff(x.path, y.path),
                              "modules": sorted(g.weight_diff(x.path, y.path), key=lambda m: natural_key(m["module"])),
                              "kl": None}
    target = g.probe_target(reg, x, team, role) if probes > 0 else None
    if target is None:
        result["kl_note"] = "--probes 0" if probes <= 0 else "A is no team's role version: name --team and --role"
    else:
        with progress_callback() as cb:
            result["kl"] = probe_kl(reg, *target, x, y, probes=probes, seed=seed, base=team_base(reg, target[0]),
                                      device=device, dtype=dtype, progress=cb)
    emit(result, as_json, render_diff)


def render_diff(r: dict[str, Any]) -> None:
    cfg_rows = [[k, v["a"], v["b"]] for k, v in r["config_diff"].items()]
    console.print(table(f"config: {r['a']['ref']} vs {r['b']['ref']}", ["key", "A", "B"], cfg_rows)
                  if cfg_rows else "configs: identical")
    console.print(table("per-module weight delta (Frobenius norms of scale * B @ A)",
                        ["module", "|dW_A|", "|dW_B|", "|dW_A - dW_B|"],
                        [[m["module"], f"{m['norm_a']:.4g}", f"{m['norm_b']:.4g}", f"{m['norm_diff']:.4g}"]
                         for m in r["modules"]]))
    kl = r.get("kl")
    if kl:
        console.print(f"D_tok(A || B) = {kl['d_tok']:.4g} over {kl['states']} states at {kl['team']}/{kl['role']}'s "
                      f"turns ({kl['contexts']} contexts, {kl['probes']} prompts, seed {kl['seed']})", highlight=False)
    else:
        console.print(f"D_tok: not measured ({r.get('kl_note', 'no team to probe')})", highlight=False)
