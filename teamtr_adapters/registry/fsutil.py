"""Crash-safe file primitives: atomic JSON writes, fsynced appends that repair a torn tail, hashing, locks
(per-file mutexes, the registry-wide shared/exclusive lock and owner locks on scratch dirs)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from ..errors import ConflictError

try:  # POSIX: flock gives shared and exclusive locks; elsewhere both modes are exclusive
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCK_TIMEOUT_S = 120.0
_POLL_S = (0.001, 0.05)  # first and longest sleep between attempts on a contended lock


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def temp_siblings(path: Path) -> list[Path]:
    """Temp files `atomic_write_text` leaves beside `path` when it is killed before its rename."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same dir, fsync, rename over `path`, fsync the dir.

    Callers hold the lock that serialises writers of `path`, so temp files of earlier writers of the same
    path are leftovers of killed processes: they are removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in temp_siblings(path):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, canonical_json(obj))


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes().decode("utf-8"))


def _complete_json_line(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data.decode("utf-8")), dict)
    except (UnicodeDecodeError, ValueError):
        return False


def repair_tail(f) -> None:
    """Make the file open in `f` (binary, read/write) end with a newline: a last line without one was left
    by a writer killed mid-append. A complete JSON object is kept (its newline added); a torn one is cut."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return
    f.seek(end - 1)
    if f.read(1) == b"\n":
        return
    pos, tail = end, b""
    while pos > 0:  # find the last newline, reading backwards in blocks
        step = min(1 << 16, pos)
        pos -= step
        f.seek(pos)
        block = f.read(step)
        tail = block + tail
        nl = block.rfind(b"\n")
        if nl >= 0:
            pos += nl + 1
            tail = tail[nl + 1:]
            break
    if _complete_json_line(tail):
        f.seek(0, os.SEEK_END)
        f.write(b"\n")
    else:
        f.truncate(pos)
    f.flush()
    os.fsync(f.fileno())


def append_line(path: Path, line: str, *, unless_contains: bytes | None = None) -> bool:
    """Append one line and fsync (callers hold the file's lock); a torn last line is repaired first. With
    `unless_contains`, nothing is appended when a line already holds those bytes (a replayed write).
    Returns whether the line was appended."""
    with open(path, "ab+") as f:
        repair_tail(f)
        if unless_contains is not None:
            f.seek(0)
            if unless_contains in f.read():
                return False
        f.seek(0, os.SEEK_END)
        f.write(line.rstrip("\n").encode("utf-8") + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return True


@contextmanager
def lock(path: Path) -> Iterator[None]:
    """Hold an inter-process lock on `path` (a `.lock` file); ConflictError when held too long by another."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fl = FileLock(str(path) + ".lock")
    try:
        fl.acquire(timeout=LOCK_TIMEOUT_S)
    except Timeout:
        raise ConflictError(f"registry lock {fl.lock_file} is held by another process; retry later") from None
    try:
        yield
    finally:
        fl.release()


# -- the registry-wide shared/exclusive lock ---------------------------------------------------------
def _try_flock(fd: int, exclusive: bool) -> bool:
    if fcntl is None:  # pragma: no cover
        from filelock import lock_descriptor
        return lock_descriptor(fd, blocking=False)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unflock(fd: int) -> None:
    if fcntl is None:  # pragma: no cover
        from filelock import unlock_descriptor
        unlock_descriptor(fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _flock_within(fd: int, exclusive: bool, deadline: float, what: str) -> None:
    sleep = _POLL_S[0]
    while not _try_flock(fd, exclusive):
        if time.monotonic() > deadline:
            raise ConflictError(f"{what} is held by another process; retry later")
        time.sleep(sleep)
        sleep = min(sleep * 2, _POLL_S[1])


class _Held(threading.local):
    def __init__(self) -> None:
        self.locks: dict[str, list] = {}  # path -> [fd, exclusive, depth]


_HELD = _Held()


@contextmanager
def rw_lock(path: Path, exclusive: bool, *, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold `path` shared (many holders) or exclusive (one), across processes; reentrant within a thread.

    A turnstile (`path` + ".gate", taken exclusively for the moment of entry) keeps a stream of shared holders
    from starving an exclusive one: an exclusive taker holds the gate while it waits for the holders inside to
    leave, so no new one enters. A shared taker that cannot create the lock files (a read-only registry,
    where nobody can write either) proceeds without them. Nested calls in one thread share the outer hold; an
    exclusive request inside a shared hold is a programming error (it would wait for itself)."""
    key = str(path)
    held = _HELD.locks.get(key)
    if held is not None:
        if exclusive and not held[1]:
            raise RuntimeError(f"{path}: exclusive lock requested while this thread holds it shared")
        held[2] += 1
        try:
            yield
        finally:
            held[2] -= 1
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if exclusive:
            raise
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield  # nothing can be locked, so nothing can be written here either
            return
    deadline = time.monotonic() + timeout
    what = f"registry lock {path}"
    try:
        gate = FileLock(key + ".gate")
        gated = True
        try:
            gate.acquire(timeout=timeout)
        except Timeout:
            raise ConflictError(f"{what} is held by another process; retry later") from None
        except OSError:
            if exclusive:
                raise
            gated = False
        try:
            _flock_within(fd, exclusive, deadline, what)
        finally:
            if gated:
                gate.release()
        _HELD.locks[key] = [fd, exclusive, 1]
        try:
            yield
        finally:
            del _HELD.locks[key]
            _unflock(fd)
    finally:
        os.close(fd)


def holds(path: Path) -> str | None:
    """'exclusive' or 'shared' when this thread holds `path` through `rw_lock`, else None."""
    held = _HELD.locks.get(str(path))
    return None if held is None else ("exclusive" if held[1] else "shared")


# -- owner locks: a live process marks the scratch dir it works in ---------------------------------------
OWNER = ".owner"


def claim_dir(d: Path) -> int:
    """Mark dir `d` as held by this process: an exclusively locked `d/.owner`, put in place by a rename so no
    one can see it unlocked. Returns the fd; closing it (or dying) releases the claim."""
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".owner-", suffix=".tmp")
    try:
        if not _try_flock(fd, True):  # a fresh file nobody else has opened
            raise RuntimeError(f"cannot lock {tmp}")
        os.rename(tmp, d / OWNER)
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd


def owner_alive(d: Path) -> bool | None:
    """True when a live process holds `d/.owner`, False when it is there but unheld (its owner died),
    None when there is none."""
    try:
        fd = os.open(d / OWNER, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    try:
        if _try_flock(fd, True):
            _unflock(fd)
            return False
        return True
    finally:
        os.close(fd)
