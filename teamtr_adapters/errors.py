"""The error hierarchy. Every error a user can cause is a `TeamTRError`; the CLI prints its
message on one line and exits with its `exit_code`."""
from __future__ import annotations

from typing import Any, Mapping


class TeamTRError(Exception):
    """Base class of every error this library raises on purpose."""

    exit_code = 1


class InputError(TeamTRError):
    """Bad input: a malformed spec, an unknown name, an invalid argument."""

    exit_code = 2


class SpecError(InputError):
    """A team spec that does not parse or does not validate."""


class NotFoundError(InputError):
    """An unknown team, role, lineage, version, alias or run."""


class InvalidNameError(InputError):
    """A name with `/`, `..`, an absolute path or other characters a name may not hold."""


class UnsafeAdapterError(InputError):
    """An adapter dir or bundle holding pickle files, symlinks, unsafe paths or unknown files."""


class IncompatibleAdapterError(InputError):
    """An adapter that does not fit the base model (other base, modules that do not match)."""


class BaseMismatchError(IncompatibleAdapterError):
    """A team (or adapter) made for another base than the one its reference now resolves to."""


class TaskError(InputError):
    """An unknown task, a malformed dataset line, a prompt that does not fit the context."""


class IntegrityError(TeamTRError):
    """Stored bytes no longer match their recorded hash."""

    exit_code = 4


class ConflictError(TeamTRError):
    """A concurrent writer got there first (a stale Hub parent commit, a held lock)."""

    exit_code = 5


class GateRefused(TeamTRError):
    """The swap gate refused a candidate; `report` holds the evidence."""

    exit_code = 3

    def __init__(self, message: str, report: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report: Mapping[str, Any] = report or {}


class GateInconclusive(TeamTRError):
    """The swap gate spent its budget without deciding; `report` holds the evidence and the number of
    further prompts that would likely decide."""

    exit_code = 7

    def __init__(self, message: str, report: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report: Mapping[str, Any] = report or {}


class TrainingAborted(TeamTRError):
    """A training update aborted (non-finite loss) and wrote nothing."""

    exit_code = 6


class StorageError(TeamTRError):
    """The file system refused an operation: permission denied, a path that is not a directory, no space left."""

    exit_code = 8
