"""The engine that plays a team's rollouts next to the TeamModel that scores them (trainer, gate)."""
from __future__ import annotations

from typing import Any

from .backend import Backend, create_backend, parse_backend


def rollout_engine(backend: str, tm: Any, *, device: str = "auto", dtype: str = "auto") -> Backend:
    """The engine that plays rollouts for backend spec `backend`: the TeamModel `tm` itself for `hf` in
    `tm`'s dtype (`dtype` "auto" or equal), else a new backend on the same base (close it with `close_engine`)."""
    if parse_backend(backend)[0] == "hf" and dtype in ("auto", tm.dtype):
        return tm
    return create_backend(backend, tm.base, device=device, dtype=dtype)


def close_engine(engine: Backend, tm: Any) -> None:
    """Shut down a rollout engine made by `rollout_engine` (the TeamModel stays)."""
    if engine is not tm:
        getattr(engine, "close", lambda: None)()
