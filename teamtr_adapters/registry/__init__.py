"""The adapter registry: one interface (`Registry`), two backends (a local directory, a Hub repo:
`registry.hubstore.HubRegistry`), opened with `open_registry`; and Hub bundles."""
from .backend import REGISTRY_ENV, open_registry
from .store import Registry, VersionInfo, default_home, lineage_of

__all__ = ["Registry", "VersionInfo", "default_home", "lineage_of", "open_registry", "REGISTRY_ENV"]
