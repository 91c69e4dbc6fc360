"""Swap candidates: turning a REF (a version, alias, `LINEAGE:vN`, id prefix, local PEFT dir or
`hf://ORG/REPO[@REV][#ROLE]`) into an adapter dir, and the compatibility check every swap runs first (safe
files, a LoRA config peft loads, the team's base identity, target modules of the base with matching shapes).
Used by the swap gate, `align` and `adapter diff`. No torch at import.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import IncompatibleAdapterError, NotFoundError
from ..runtime.base import BaseRef
from ..types import CandidateInfo, Compatibility
from .store import Registry, content_hashes, lineage_of
from .validate import CONFIG, check_adapter_dir, check_compatible, lora_modules

HUB_PREFIX = "hf://"


@dataclass(frozen=True)
class Candidate:
    """An adapter considered for a role: its content id, a human label, its dir, and whether it is stored."""

    id: str
    ref: str
    path: Path
    stored: bool = True

    def to_dict(self) -> CandidateInfo:
        return {"id": self.id, "ref": self.ref, "stored": self.stored}


def looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.startswith((".", "~"))


def resolve_candidate(registry: Registry, team: str, role: str, ref: str, base: BaseRef, *,
                      store: bool = True) -> Candidate:
    """Turn REF into a candidate: a registry reference (resolved in the role's lineage), a local adapter
    dir (imported into the role's lineage when `store`; checked in place otherwise) or an `hf://` bundle
    role (pulled into the registry)."""
    if ref.startswith(HUB_PREFIX):
        from .hub import pull_role

        info = pull_role(registry, ref, role=role, base=base)
        return Candidate(info.id, info.ref, info.path)
    if not looks_like_path(ref):
        try:
            info = registry.resolve(ref, lineage_of(team, role))
            return Candidate(info.id, info.ref, registry.version_path(info.id))
        except NotFoundError:
            if not Path(ref).is_dir():
                raise
    path = Path(ref).expanduser()
    if not path.exists():
        raise NotFoundError(f"no adapter dir {ref!r}")
    if store:
        info = registry.import_adapter(path, lineage_of(team, role), base)
        return Candidate(info.id, info.ref, info.path)
    check_adapter_dir(path)
    check_compatible(path, base)
    return Candidate(content_hashes(path)[1], str(path), path, stored=False)


def check_candidate(path: Path, base: BaseRef) -> Compatibility:
    """Compatibility of an adapter dir with the team's base; raises on the first failure, returns a summary.

    Safe files only (safetensors, no pickles or symlinks), a LoRA config that peft loads, the recorded base
    identity (if any) equal to the team's, and every LoRA module present in the base with matching shapes
    (an adapter matching no module would silently act as the bare base)."""
    config = check_adapter_dir(path)
    check_compatible(path, base)
    from peft import LoraConfig

    try:
        LoraConfig.from_pretrained(str(path))
    except (TypeError, ValueError, KeyError) as e:
        raise IncompatibleAdapterError(f"{path / CONFIG}: peft cannot load this LoRA config "
                                       f"({str(e).splitlines()[0]})") from None
    modules = lora_modules(path)
    kinds = sorted({m.rsplit(".", 1)[-1] for m in modules})
    return {"base": base.identity, "r": config["r"], "lora_alpha": config.get("lora_alpha"),
            "modules": len(modules), "module_kinds": kinds, "ok": True}


def locate(registry: Registry, ref: str) -> Candidate:
    """A stored version (any registry reference) or a local adapter dir (checked, not imported)."""
    if looks_like_path(ref) or (Path(ref).is_dir() and ":" not in ref):
        path = Path(ref).expanduser()
        check_adapter_dir(path)
        return Candidate(content_hashes(path)[1], str(path), path, stored=False)
    info = registry.resolve(ref)
    return Candidate(info.id, info.ref, registry.version_path(info.id))
