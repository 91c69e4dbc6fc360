"""Data-parallel component updates: `train` under `torchrun` / `accelerate launch` with N processes.

TeamTR trains one agent at a time, so data parallelism over the update's loss rows is all an update
needs (DESIGN.md, "Past one machine"); this module is the whole of it, on `torch.distributed`:

- **Rollouts**: rank 0 plays them (on its engine: the trainer's model, a `vllm` engine, or `vllm-server`
  replicas, which is where rollouts scale out) and broadcasts the episodes, so every rank holds the same
  rollout set, rewards included. The other ranks never generate and never open a separate engine.
- **Loss rows split across ranks**: rank r computes the loss and its gradient on its contiguous block of
  the trained agent's rows, normalised by the *whole* update's token and row counts, so the per-rank
  gradients add up to the one-process gradient; the LoRA gradients of the working copy (its only
  trainable parameters) are all-reduced (sum) after every backward pass. This is what DDP does for these
  parameters; an explicit `all_reduce` is used because the trainable set changes with every update
  (a new working copy inside one PeftModel), which a DDP wrapper built once cannot follow.
- **One trust-region decision**: the per-row KLs, log-probs and losses are gathered from every rank in
  rank order, and every rank computes D_tok (mean and p99), k1/k3 and the surrogate gain from the same
  gathered values, so the accept / backtrack / roll-back verdict, the adaptive beta and the optimiser
  state are identical on every rank. A non-finite loss on any rank aborts the update on all of them.
  Before a commit the ranks check that their accepted parameters agree (a checksum all-gather).
- **Only rank 0 writes**: versions, the manifest, history, the run's files; its result (new version ids
  and names, the manifest) or its error is broadcast, and the other ranks load the new versions from the
  registry (the same path on every node: one machine or a shared filesystem).

Single process (no `WORLD_SIZE` > 1 in the environment): `DataParallel()` is a no-op with world 1, and
the trainer runs exactly as before. The process group is created here from torchrun's environment
(`gloo` on CPU, `nccl` on CUDA, each rank on `cuda:LOCAL_RANK`) unless the caller created one.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch

from ..errors import TeamTRError, TrainingAborted
from ..runtime.rows import LossRows
from .policy import Measurement, WorkingCopy

T = TypeVar("T")


def env_world_size() -> int:
    """The world size torchrun / accelerate launch put in the environment (1 when not launched so)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def env_rank() -> int:
    """This process's rank from the environment (0 when not launched by torchrun / accelerate)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@dataclass
class DataParallel:
    """The process group of a data-parallel update (rank, world size) and its collectives."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False  # this object created the process group (and destroys it on close)
    local_rows: int = 0  # loss rows this rank has computed, over all passes (the split is checkable)
    total_rows: int = 0  # loss rows of those passes over all ranks

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> "DataParallel":
        """World 1 unless launched with WORLD_SIZE > 1; then join (or create) the process group."""
        import torch.distributed as dist

        if env_world_size() <= 1 and not (dist.is_available() and dist.is_initialized()):
            return cls()
        if not dist.is_available():
            raise TeamTRError("this torch build has no torch.distributed: run train in one process")
        owns = False
        if not dist.is_initialized():
            cuda = device in ("auto", "cuda") and torch.cuda.is_available()
            if cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend="nccl" if cuda else "gloo")
            owns = True
        return cls(dist.get_rank(), dist.get_world_size(), owns)

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False

    # -- collectives ------------------------------------------------------------------------------
    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only and hand its result to every rank; an error on rank 0 is raised on every
        rank (on the others as a TeamTRError with rank 0's message), so no rank waits for a dead peer."""
        if self.world == 1:
            return fn()
        if self.is_main:
            try:
                out: Any = ("ok", fn())
            except BaseException as e:
                self.broadcast(("error", f"{type(e).__name__}: {e}"))
                raise
            return self.broadcast(out)[1]
        got: Any = self.broadcast(None)
        if got[0] == "error":
            raise TeamTRError(f"rank 0 failed: {got[1]}")
        return got[1]

    def gather(self, items: list[Any]) -> list[Any]:
        """Every rank's `items`, concatenated in rank order, on every rank."""
        if self.world == 1:
            return list(items)
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, items)
        return [x for part in parts for x in part]

    def any(self, flag: bool) -> bool:
        """Whether `flag` holds on some rank."""
        if self.world == 1:
            return flag
        return any(self.gather([bool(flag)]))

    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of `params` over the ranks (a missing gradient counts as zeros)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def check_same(self, params: list[torch.nn.Parameter], what: str) -> None:
        """Raise (on every rank) unless `params` are bitwise identical on every rank."""
        if self.world == 1:
            return
        h = hashlib.sha256()
        for p in params:
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        digests = self.gather([h.hexdigest()])
        if len(set(digests)) != 1:
            raise TrainingAborted(f"data-parallel ranks disagree on the parameters of {what} "
                                  f"({len(set(digests))} different checksums); nothing was written")

    # -- rows -------------------------------------------------------------------------------------
    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's contiguous block [start, stop) of n rows (the first n % world ranks get one more)."""
        q, r = divmod(n, self.world)
        start = self.rank * q + min(self.rank, r)
        return start, start + q + (1 if self.rank < r else 0)

    def shard(self, rows: LossRows) -> LossRows:
        """This rank's block of `rows`."""
        a, b = self.bounds(len(rows))
        return LossRows(prompts=rows.prompts[a:b], completions=rows.completions[a:b], adv=rows.adv[a:b],
                        episode=rows.episode[a:b], engine_logprobs=rows.engine_logprobs[a:b])

    def working_copy(self, *args: Any, **kwargs: Any) -> WorkingCopy:
        """A `WorkingCopy` (world 1) or a `DataParallelCopy` over this group."""
        if self.world == 1:
            return WorkingCopy(*args, **kwargs)
        return DataParallelCopy(self, *args, **kwargs)


class DataParallelCopy(WorkingCopy):
    """A working copy whose passes run on this rank's block of rows, with summed gradients and the
    measurement made from every rank's rows (identical on every rank)."""

    def __init__(self, dp: DataParallel, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dp = dp

    def run_pass(self, rows: LossRows, ref_cache: list[torch.Tensor | None] | None, beta: float, *,
                 backward: bool) -> Measurement:
        shard = self.dp.shard(rows)
        self.dp.local_rows += len(shard)
        self.dp.total_rows += len(rows)
        error = ""
        try:
            kls, new_rows, old_rows, loss = self.local_pass(shard, ref_cache, beta, backward=backward,
                                                            n_tokens=rows.n_tokens, n_rows=len(rows))
        except TrainingAborted as e:
            error, kls, new_rows, old_rows, loss = str(e), [], [], [], 0.0
        errors = [e for e in self.dp.gather([error]) if e]
        if errors:
            self.zero_grad()
            raise TrainingAborted(errors[0])
        if backward:
            self.dp.all_reduce_grads(self.params)
        parts = self.dp.gather([(kls, new_rows, old_rows, loss)])
        return self._measure([k for p in parts for k in p[0]], [r for p in parts for r in p[1]],
                             [r for p in parts for r in p[2]], rows.adv, sum(p[3] for p in parts))
