"""Opening the registry from the command line: `$TEAMTR_HOME` is checked before any command reads or writes it."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError, UnsafeAdapterError
from ..registry import Registry
from ..registry.backend import is_hub_location, registry_location
from ..registry.store import default_home

# The `--registry` value of the command being run (set by the option's callback, reset by `app.run`).
CHOICE: dict[str, str | None] = {"registry": None}


def check_home(home: Path) -> Path:
    """Refuse a home that is (or lies under) something other than a directory; a missing home is fine
    (it is created on the first write, and reads find an empty registry)."""
    p = home
    while not p.exists() and p != p.parent:  # exists() is False under a file too (ENOTDIR)
        p = p.parent
    if not p.is_dir():
        where = "" if p == home else f" ({p} is not a directory)"
        raise InputError(f"TEAMTR_HOME {home} is not a directory{where}: point it at a directory "
                         "(or at a path where one can be created)")
    return home


def open_registry(read: bool = False) -> Registry:
    """The registry the command names: `--registry` (a directory or `hf://ORG/REPO[@BRANCH]`), else
    `$TEAMTR_REGISTRY`, else the local one at `$TEAMTR_HOME` (default `~/.teamtr`); a Hub registry is cached
    under `$TEAMTR_HOME`. The home is checked first (`check_home`).

    `read=True` (short read-only commands): the registry is held until the command ends, so all its reads
    see one state, and a Hub registry reads the branch head once instead of once per registry call."""
    from typer._click.globals import get_current_context

    from ..registry import open_registry as open_location

    location = registry_location(CHOICE["registry"])
    if location is not None and is_hub_location(location):
        reg = open_location(location, check_home(default_home()))
    else:
        reg = open_location(None, check_home(Path(location).expanduser() if location else default_home()))
    ctx = get_current_context(silent=True) if read else None
    if ctx is not None:
        ctx.with_resource(reg.hold())
    return reg


def default_team(reg: Registry, team: str | None) -> str:
    """The one rule for `--team` (train, eval, run, swap, rollback, align): the named team, or the registry's
    only team when none is named; with no team or several, a usage error that lists them."""
    if team:
        return team
    teams = reg.list_teams()
    if len(teams) == 1:
        return teams[0]
    if not teams:
        raise InputError("the registry holds no team: create one with `teamtr-adapters team init math-trio` "
                         "(or `hub pull ORG/REPO`)")
    raise InputError(f"name the team with --team: the registry holds {len(teams)} teams ({', '.join(teams)})")


def check_adapter_meta(src: str | Path) -> None:
    """An adapter dir given on the command line may carry a `teamtr.json` (lineage metadata): refuse one that
    is not a UTF-8 JSON object (with `base`, if present, an object) before the registry reads it.

    This belongs in `registry.validate.check_compatible`, which reads the file unguarded; kept here until it does."""
    meta = Path(src) / "teamtr.json"
    if not Path(src).is_dir() or not meta.is_file():
        return
    try:
        doc = json.loads(meta.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UnsafeAdapterError(f"{meta}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("base", {}), dict):
        raise UnsafeAdapterError(f"{meta}: must be a JSON object whose 'base' is an object")
