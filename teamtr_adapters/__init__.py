"""teamtr-adapters: versioned LoRA agent teams over one frozen base model.

The public API (no torch is imported until a function needs it):
    from teamtr_adapters import Registry, load_spec, TeamSpec, resolve_base
"""
from .errors import (ConflictError, GateRefused, IncompatibleAdapterError, InputError, IntegrityError,
                     InvalidNameError, NotFoundError, SpecError, StorageError, TaskError, TeamTRError,
                     TrainingAborted, UnsafeAdapterError)
from .registry import Registry, VersionInfo
from .runtime.base import BaseRef, resolve_base
from .spec import TeamSpec, load_spec, parse_spec

__version__ = "0.1.0"
__all__ = [
    "Registry", "VersionInfo", "TeamSpec", "load_spec", "parse_spec", "resolve_base", "BaseRef",
    "TeamTRError", "InputError", "SpecError", "NotFoundError", "InvalidNameError", "UnsafeAdapterError",
    "IncompatibleAdapterError", "TaskError", "StorageError", "IntegrityError", "ConflictError", "GateRefused", "TrainingAborted",
    "load_team",
]


def __getattr__(name: str):  # `load_team` is imported on first use
    if name == "load_team":
        from .runtime.team import load_team

        return load_team
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
