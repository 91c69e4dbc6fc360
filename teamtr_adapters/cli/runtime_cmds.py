"""`eval` and `run`: play a registry team on a task split or on one question."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from ..types import PairedChange
from .render import JsonOpt, console, emit, progress, table

TeamOpt = typer.Option(None, "--team", "-t", help="The team to play (default: the only team in the registry).")
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda.")
DtypeOpt = typer.Option("auto", "--dtype", help="auto (bf16 where supported) | float32 | bfloat16 | float16.")
BackendOpt = typer.Option("hf", "--backend", help="Rollout backend: hf (default), vllm[=OPTIONS] or "
                                               "vllm-server=URL[,URL...] (docs/vllm.md).")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
    app.command("run")(run_cmd)


def check_play_options(device: str, dtype: str, temperature: float | None) -> None:
    """Refuse a bad --device, --dtype or --temperature before the model is loaded (seconds), not after."""
    from ..errors import InputError
    from ..runtime.base import DTYPES

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device {device!r} (choose auto, cpu or cuda)")
    if dtype != "auto" and dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r} (choose from auto, {', '.join(DTYPES)})")
    if temperature is not None and not 0.0 <= temperature <= 5.0:
        raise InputError(f"--temperature must be in [0, 5], got {temperature:g}")


def _load(team: str, backend: str, device: str, dtype: str):
    from ..runtime.team import load_team
    from .home import open_registry

    return load_team(open_registry(), team, backend=backend, device=device, dtype=dtype)


def _team(team: str | None) -> str:
    from .home import default_team, open_registry

    return default_team(open_registry(), team)


def eval_cmd(
    team: Optional[str] = TeamOpt,
    n: int = typer.Option(32, "--n", help="Number of prompts."),
    k: int = typer.Option(1, "--k", help="Samples per prompt (avg@k, pass@k)."),
    seed: int = typer.Option(0, "--seed"),
    split: str = typer.Option("heldout", "--split", help="train | heldout."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Default: the team spec's."),
    base_alone: bool = typer.Option(True, "--base/--no-base", help="Also score the base model answering alone."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write every transcript as JSON lines here."),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    backend: str = BackendOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Accuracy of a team on a task split, next to the base model answering alone on the same prompts."""
    from ..tasks.base import check_eval_args

    check_eval_args(n, k, split)
    check_play_options(device, dtype, temperature)
    team = _team(team)
    t = _load(team, backend, device, dtype)
    with progress() as bar:
        task_id = bar.add_task(f"eval {team}", total=t.spec.n_turns + int(base_alone))
        report, team_eps, base_eps = t.evaluate(n, k, seed, split, base_alone=base_alone, temperature=temperature,
                                                progress=lambda done, total: bar.update(task_id, completed=done))
    if base_alone and base_eps:
        report["gain_paired"] = paired_gain(team_eps, base_eps)
    if save:
        save.parent.mkdir(parents=True, exist_ok=True)
        with open(save, "w", encoding="utf-8") as f:
            for who, eps in (("team", team_eps), ("base", base_eps)):
                for ep in eps:
                    f.write(json.dumps({"who": who, **ep.to_dict()}) + "\n")
        report["saved"] = str(save)
    emit(report, as_json, _render_report)


def paired_gain(team_eps: list[Any], base_eps: list[Any]) -> PairedChange | None:
    """Team minus base alone, paired by prompt (same prompts, same seeds; a prompt's score is the mean of its k
    samples): the mean change with a 95% t interval over prompts (`train.diagnostics.paired_change`)."""
    from ..train.diagnostics import paired_change

    def per_prompt(eps: list[Any]) -> dict[int, float]:
        by: dict[int, list[float]] = {}
        for ep in eps:
            by.setdefault(ep.item_index, []).append(float(ep.reward))
        return {i: sum(v) / len(v) for i, v in by.items()}

    team, base = per_prompt(team_eps), per_prompt(base_eps)
    common = sorted(set(team) & set(base))
    return paired_change([base[i] for i in common], [team[i] for i in common]) if common else None


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def _render_report(r: dict[str, Any]) -> None:
    def row(who: str, x: dict[str, Any]) -> list[Any]:
        return [who, _pct(x["avg@k"]), _pct(x["pass@k"]), _pct(x["answered_rate"]), _pct(x["final_format_rate"]),
                x["tokens"]]

    rows = [row("team", r["team_result"])]
    if "base_alone" in r:
        rows.append(row("base alone", r["base_alone"]))
    cols = ["who", "avg@k", "pass@k", "answered", "format", "tokens"]
    console.print(table(f"{r['team']} on {r['task']} ({r['split']}, n={r['n']}, k={r['k']}, seed={r['seed']})",
                        cols, rows, right=tuple(cols[1:]),
                        caption="avg@k: mean reward; pass@k: share of prompts with a correct sample; answered: "
                                "share of episodes with an extractable final answer; format: share whose final "
                                "message uses an explicit answer format"))
    g = r.get("gain_paired")
    if g:
        ci = g["ci95"]
        verdict = ("the team is better" if ci[0] > 0 else "the team is worse" if ci[1] < 0
                   else "no significant difference at this n")
        console.print(f"gain_avg@k (team - base alone) {g['change']:+.3f}, 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}] "
                      f"over {g['n']} paired prompts ({g['wins']} better, {g['losses']} worse): {verdict}",
                      highlight=False)
    elif "gain_avg@k" in r:
        console.print(f"gain_avg@k (team - base alone) {r['gain_avg@k']:+.3f}", highlight=False)
    console.print(table("agents", ["role", "version", "mean tokens", "answer format"],
                        [[role, a["version"], a["mean_tokens"], _pct(a["answer_format_rate"])]
                         for role, a in r["team_result"]["agents"].items()], right=("mean tokens", "answer format")))
    if "saved" in r:
        console.print(f"transcripts: {r['saved']}")


def run_cmd(
    question: str = typer.Argument(..., help="The problem to give the team."),
    team: Optional[str] = TeamOpt,
    answer: str = typer.Option("", "--answer", help="Reference answer: the episode is scored against it."),
    seed: int = typer.Option(0, "--seed"),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Default: the team spec's."),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    backend: str = BackendOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Play one episode and print the transcript turn by turn, then the final answer."""
    check_play_options(device, dtype, temperature)
    team = _team(team)
    t = _load(team, backend, device, dtype)
    ep = t.run(question, answer=answer, seed=seed, temperature=temperature)
    data = {"team": team, "question": question, "seed": seed,
            "turns": [{"role": x.role, "version": x.version, "label": t.label(x.version), "message": x.text,
                       "tokens": len(x.message_ids)} for x in ep.turns],
            "final_answer": ep.final_answer}
    if answer:
        data.update(answer=answer, reward=ep.reward)
    emit(data, as_json, _render_run)


def _render_run(d: dict[str, Any]) -> None:
    for i, turn in enumerate(d["turns"], 1):
        console.print(f"[bold]{i}. {turn['role']}[/] [dim]{escape(turn['label'])}[/]")
        console.print(escape(turn["message"]) or "[dim](empty message)[/]", highlight=False)
        console.print()
    final = d["final_answer"]
    console.print("[bold]final answer:[/] " + (escape(str(final)) if final is not None else
                                               "[dim]no answer found (no agent gave an extractable answer)[/]"),
                  highlight=False)
    if "reward" in d:
        console.print(f"reward: {d['reward']} (reference {escape(d['answer'])})", highlight=False)
