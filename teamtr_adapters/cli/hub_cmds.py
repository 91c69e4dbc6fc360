"""`hub push` and `hub pull`: team bundles on the Hugging Face Hub (thin wrappers over `registry.hub`).

The Hub endpoint, token and cache follow `huggingface_hub` (`HF_ENDPOINT`, `HF_TOKEN` or `hf auth login`,
`HF_HOME`, `HF_HUB_OFFLINE`); the token is never printed."""
from __future__ import annotations

from typing import Any, Optional

import typer

from .home import open_registry
from .render import JsonOpt, console, emit, err_console, table

hub_app = typer.Typer(help="Push team bundles to and pull them from the Hugging Face Hub.", no_args_is_help=False)


def register(app: typer.Typer) -> None:
    app.add_typer(hub_app, name="hub")


@hub_app.command("push")
def hub_push(
    team: str = typer.Argument(..., help="Local team to push."),
    repo: str = typer.Argument(..., help="Hub model repo ORG/REPO (created if missing)."),
    revision: str = typer.Option("main", "--revision", help="Branch to commit to (created from main if missing)."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Tag for this push (default TEAM-rREVISION)."),
    private: bool = typer.Option(False, "--private", help="Create the repo private (if it does not exist yet)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the branch even if it moved since this registry "
                               "last pushed or pulled it, or holds another team's bundle."),
    as_json: bool = JsonOpt,
) -> None:
    """Push TEAM as one commit (only changed files are uploaded) and tag the team revision.

    The commit's parent is the commit this registry last pushed or pulled on that branch: if someone else
    pushed since, nothing is committed and the push exits 5 (pull, then push again, or pass --force)."""
    from ..registry.hub import push_team

    result = push_team(open_registry(), team, repo, branch=revision, tag=tag, private=private, force=force)
    emit(result, as_json, _render_push)
    if result.get("tag_error"):
        err_console.print(f"warning: {result['tag_error']}", markup=False, highlight=False, soft_wrap=True)


def _render_push(r: dict[str, Any]) -> None:
    verb = ("force-pushed" if r.get("forced") else "pushed") if r["uploaded"] or r["deleted"] else "up to date:"
    tag = f"tag {r['tag']}" if r["tag"] else "not tagged"
    console.print(f"{verb} {r['team']} revision {r['team_revision']} to {r['repo']}@{r['branch']} "
                  f"commit {r['commit'][:12]} ({tag}): {len(r['uploaded'])} file(s) uploaded, "
                  f"{r['unchanged']} unchanged, {len(r['deleted'])} deleted", markup=False, highlight=False)
    for path in r["uploaded"]:
        console.print(f"  + {path}", markup=False, highlight=False)
    for path in r["deleted"]:
        console.print(f"  - {path}", markup=False, highlight=False)


@hub_app.command("pull")
def hub_pull(
    ref: str = typer.Argument(..., help="ORG/REPO, or ORG/REPO@REV for a branch, tag or commit (default main)."),
    name: Optional[str] = typer.Option(None, "--as", help="Local team name (default: the bundle's)."),
    role: Optional[str] = typer.Option(None, "--role", help="Pull only this role's adapter (not pinned)."),
    base: Optional[str] = typer.Option(None, "--base", help="Local base to check against ('embedded', a dir or a Hub id)."),
    as_json: bool = JsonOpt,
) -> None:
    """Download a bundle, verify every hash, and import it (a team, or one role's version with --role)."""
    from ..registry import lineage_of
    from ..registry.hub import parse_hub_ref, pull_role, pull_team

    reg = open_registry()
    href = parse_hub_ref(ref)
    one_role = role or href.role
    if one_role:
        lineage = lineage_of(name, one_role) if name else None
        info = pull_role(reg, ref, role=role, lineage=lineage, base=base)
        data = {"ref": info.ref, "id": info.id, "repo": info.meta.get("repo"), "commit": info.meta.get("commit")}
        emit(data, as_json, lambda d: console.print(
            f"pulled {d['ref']} ({d['id'][:12]}) from {d['repo']}@{(d['commit'] or '')[:12]}", markup=False,
            highlight=False))
        return
    result = pull_team(reg, ref, name=name, base=base)
    emit(result, as_json, _render_pull)


def _render_pull(r: dict[str, Any]) -> None:
    verb = "created" if r["created"] else "updated"
    console.print(table(f"{verb} team {r['team']} (revision {r['team_revision']}) from {r['repo']}@{r['commit'][:12]}",
                        ["role", "version", "id"], [[role, p["ref"], p["id"][:12]] for role, p in r["roles"].items()]))
