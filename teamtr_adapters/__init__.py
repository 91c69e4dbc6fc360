"""teamtr-adapters: versioned LoRA agent teams over one frozen base model.

The public API (no torch is imported until a function needs it):
    from teamtr_adapters import Registry, load_spec, TeamSpec, resolve_base

Results are typed (`teamtr_adapters.types`, TypedDicts: plain dicts at run time), e.g. `TeamManifest`,
`HistoryEvent`, `RunSummary`, `GateReport`, `SwapResult`, `EvalReport`; the package ships `py.typed`.
"""
from .errors import (ConflictError, GateRefused, IncompatibleAdapterError, InputError, IntegrityError,
                     InvalidNameError, NotFoundError, SpecError, StorageError, TaskError, TeamTRError,
                     TrainingAborted, UnsafeAdapterError)
from .registry import Registry, VersionInfo
from .runtime.base import BaseRef, resolve_base
from .spec import TeamSpec, load_spec, parse_spec
from .types import (AgentStats, CandidateInfo, Compatibility, EvalReport, GateReport, GcReport, HeldoutEval,
                    HistoryEvent, KLSummary, LogprobGapSummary, PairedChange, Pin, RankCorrelation, RunSummary,
                    SwapResult, TeamManifest, TeamScore, TrainedVersion, TrainStats, VerifyReport)

__version__ = "0.1.0"
__all__ = [
    "Registry", "VersionInfo", "TeamSpec", "load_spec", "parse_spec", "resolve_base", "BaseRef",
    "TeamTRError", "InputError", "SpecError", "NotFoundError", "InvalidNameError", "UnsafeAdapterError",
    "IncompatibleAdapterError", "TaskError", "StorageError", "IntegrityError", "ConflictError", "GateRefused", "TrainingAborted",
    "load_team",
    # typed results (teamtr_adapters.types)
    "TeamManifest", "Pin", "HistoryEvent", "TrainedVersion", "VerifyReport", "GcReport", "TrainStats", "RunSummary",
    "HeldoutEval", "PairedChange", "RankCorrelation", "LogprobGapSummary", "GateReport", "SwapResult",
    "CandidateInfo", "Compatibility", "KLSummary", "EvalReport", "TeamScore", "AgentStats",
]


def __getattr__(name: str):  # `load_team` is imported on first use
    if name == "load_team":
        from .runtime.team import load_team

        return load_team
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
