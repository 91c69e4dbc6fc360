"""The adapter registry: local store (versions, lineages, aliases, teams, history) and Hub bundles."""
from .store import Registry, VersionInfo, default_home, lineage_of

__all__ = ["Registry", "VersionInfo", "default_home", "lineage_of"]
