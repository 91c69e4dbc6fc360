"""Crash-safe file primitives: atomic JSON writes, fsynced appends, hashing, locks."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from ..errors import ConflictError

LOCK_TIMEOUT_S = 120.0


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same dir, fsync, rename over `path`, fsync the dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
    return json.loads(path.read_text())


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync (callers hold the file's lock)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


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
