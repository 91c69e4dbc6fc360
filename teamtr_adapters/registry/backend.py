"""Opening a registry: the one function train, gate, CLI and library callers use, for either backend.

A location is `hf://ORG/REPO[@BRANCH]` (a Hub-backed registry, `registry.hubstore.HubRegistry`, cached under
`$TEAMTR_HOME`) or a directory (a local registry, `registry.store.Registry`); none means `$TEAMTR_REGISTRY`, else
the local registry at `$TEAMTR_HOME` (default `~/.teamtr`). Both implement the same interface (`Registry`)."""
from __future__ import annotations

import os
from pathlib import Path

from .store import Registry, default_home

REGISTRY_ENV = "TEAMTR_REGISTRY"


def registry_location(location: str | None = None) -> str | None:
    """The location a command uses: `location`, else `$TEAMTR_REGISTRY`, else None (the local `$TEAMTR_HOME`)."""
    return location or os.environ.get(REGISTRY_ENV) or None


def is_hub_location(location: str | None) -> bool:
    return isinstance(location, str) and location.startswith("hf://")


def open_registry(location: str | None = None, home: str | Path | None = None) -> Registry:
    """The registry at `location` (see the module docstring); `home` is the local registry's dir or, for a Hub
    registry, its cache (default `$TEAMTR_HOME`)."""
    location = registry_location(location)
    if location is not None and is_hub_location(location):
        from .hubstore import HubRegistry

        return HubRegistry(location, home)
    if location:
        return Registry(Path(location).expanduser())
    return Registry(home or default_home())
