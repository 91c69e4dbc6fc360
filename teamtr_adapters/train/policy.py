"""The trained agent inside the TeamModel: loss rows from its turns, and its working copy, a trainable
LoRA adapter initialised from the pre-update version, with forward/backward passes that measure the
exact token KL to that version on the same states.

The rollout engine's behaviour log-probs ride along with each row (`LossRows.engine_logprobs`) but never
enter the ratio: the surrogate's old policy is the trainer's own forward of the pre-update version. They
serve the engine-vs-trainer gap (`Measurement.trainer_logprobs` is the other side) and, optionally,
truncated importance sampling (`LossConfig.tis_cap`).

The pre-update version stays loaded, frozen, as the KL reference and the surrogate's old policy
(never the bare base). Only the working copy's LoRA matrices require grad; peft's `set_adapter` would
silently change that, so the trainable set is set and asserted explicitly on every pass.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import TrainingAborted
from ..runtime.logprob_gap import tis_weights
from ..runtime.records import Episode
from ..runtime.rows import LossRows, agent_rows  # noqa: F401  (moved to runtime.rows; re-exported)
from .losses import (LossConfig, gather_logp, kl_estimators, log_softmax_t, masked_quantile, surrogate_gain,
                     update_loss)

WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"


@dataclass
class Measurement:
    """What one pass over the rows measured for the parameters in place."""

    d_mean: float
    d_p99: float
    k1: float
    k3: float
    gain: float  # surrogate(new) - surrogate(old)
    gain_se: float
    loss: float
    adv_max: float
    trainer_logprobs: list[list[float]] = field(default_factory=list)  # pre-update version, per row


def pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-align 1-D tensors into [B, C] with a mask."""
    width = max((r.numel() for r in rows), default=0)
    out = torch.zeros(len(rows), width)
    mask = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        out[i, :r.numel()] = r
        mask[i, :r.numel()] = 1
    return out, mask


def tis_tensor(engine: list[list[float]], trainer_logp: torch.Tensor, mask: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance weights min(pi_trainer / pi_engine, cap) laid out like `mask` [B, T] (1 off
    the mask), from the engine's per-row log-probs and the trainer's token log-probs [B, T]."""
    m = mask.bool()
    trainer = [trainer_logp[r][m[r]].tolist() for r in range(m.shape[0])]
    weights = torch.ones_like(trainer_logp)
    weights[m] = torch.tensor([w for row in tis_weights(engine, trainer, cap) for w in row],
                              dtype=weights.dtype, device=weights.device)
    return weights


def adapter_param_names(model: Any, name: str) -> set[str]:
    """The parameter names of adapter `name`'s LoRA matrices (and nothing else)."""
    pat = re.compile(rf"\.lora_(A|B)\.{re.escape(name)}\.weight$")
    return {n for n, _ in model.named_parameters() if pat.search(n)}


class WorkingCopy:
    """A trainable copy of `parent` (a loaded version id) in TeamModel `tm`, under the key `key`."""

    def __init__(self, tm: Any, parent: str, parent_path: Path, key: str, cfg: LossConfig,
                 micro_batch: int = 8) -> None:
        self.tm, self.parent, self.parent_path, self.key = tm, parent, Path(parent_path), key
        self.cfg, self.micro_batch = cfg, micro_batch
        tm.ensure_adapter(parent, parent_path)
        tm.ensure_adapter(key, parent_path)
        self.name = tm.adapter_name(key)
        self.expected = adapter_param_names(tm.peft, self.name)
        by_name = dict(tm.peft.named_parameters())
        for n, p in by_name.items():
            p.requires_grad_(n in self.expected)
        self.params = [by_name[n] for n in sorted(self.expected)]
        self.initial = [p.detach().clone() for p in self.params]
        self.assert_trainable()

    def changed(self) -> bool:
        """Whether the parameters differ (bitwise) from the parent's."""
        return any(not torch.equal(p.detach(), p0) for p, p0 in zip(self.params, self.initial))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def assert_trainable(self) -> None:
        """Fail loudly unless exactly this agent's LoRA weights require grad."""
        trainable = {n for n, p in self.tm.peft.named_parameters() if p.requires_grad}
        if not self.expected or trainable != self.expected:
            extra, missing = sorted(trainable - self.expected), sorted(self.expected - trainable)
            raise RuntimeError(f"trainable set is not the trained agent's LoRA: extra {extra[:3]}, missing {missing[:3]}")

    def close(self) -> None:
        """Drop the working copy from the model (the frozen versions stay loaded)."""
        for p in self.params:
            p.requires_grad_(False)
        self.tm.unload_adapter(self.key)

    def save(self, out_dir: Path) -> Path:
        """Write the working copy as a plain PEFT adapter dir (the parent's config, the new weights)."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        # save_embedding_layers=False: LoRA never trains the embeddings here, and peft's default "auto" looks the
        # base up on the Hub (a network call, and an "Unable to fetch" line offline) on every save.
        state = get_peft_model_state_dict(self.tm.peft, adapter_name=self.name, save_embedding_layers=False)
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(out_dir / WEIGHTS),
                  metadata={"format": "pt"})
        (out_dir / CONFIG).write_bytes((self.parent_path / CONFIG).read_bytes())
        return out_dir

    def _logits(self, rows: LossRows, idx: list[int], version: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.tm.completion_logits([rows.prompts[i] for i in idx], [rows.completions[i] for i in idx], version)

    def batches(self, rows: LossRows) -> list[list[int]]:
        """Micro-batches of row indices, rows sorted by length (prompt + completion) so that each micro-batch
        pads little; the same for every pass over the same rows (the reference cache is per micro-batch)."""
        order = sorted(range(len(rows)), key=lambda i: (len(rows.prompts[i]) + len(rows.completions[i]), i))
        return [order[s:s + self.micro_batch] for s in range(0, len(order), self.micro_batch)]

    def run_pass(self, rows: LossRows, ref_cache: list[torch.Tensor | None] | None, beta: float, *,
                 backward: bool) -> Measurement:
        """One pass over `rows` with the parameters in place: loss (and gradients when `backward`),
        exact D_tok to the parent on the same states, k1/k3 and the surrogate gain.

        `ref_cache` holds the parent's full-vocabulary log-probs per micro-batch; an empty slot is filled
        from the parent version's forward, or, when `ref_cache` is a fresh list and the working copy
        still equals the parent (the first pass of an update), from this very forward.
        A non-finite loss zeroes the gradients and raises `TrainingAborted`.
        """
        kls, new_rows, old_rows, loss_sum = self.local_pass(rows, ref_cache, beta, backward=backward)
        return self._measure(kls, new_rows, old_rows, rows.adv, loss_sum)

    def local_pass(self, rows: LossRows, ref_cache: list[torch.Tensor | None] | None, beta: float, *,
                   backward: bool, n_tokens: int | None = None, n_rows: int | None = None
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], float]:
        """The body of `run_pass` on `rows`, with the loss normalised by `n_tokens` / `n_rows` (default:
        those of `rows`; a data-parallel rank passes the whole update's, `train.distributed`): the per-row
        token KLs, new and old log-probs of the rows' tokens, and the summed loss."""
        self.assert_trainable()
        self.zero_grad()
        n_tok = rows.n_tokens if n_tokens is None else n_tokens
        n_rows = len(rows) if n_rows is None else n_rows
        kls: list[Any] = [None] * len(rows)  # per row, in row order (micro-batches run in length order)
        new_rows: list[Any] = [None] * len(rows)
        old_rows: list[Any] = [None] * len(rows)
        loss_sum = 0.0
        adv = torch.tensor(rows.adv, dtype=torch.float32, device=self.tm.device)
        for i, idx in enumerate(self.batches(rows)):
            with torch.set_grad_enabled(backward):
                logits, targets, mask = self._logits(rows, idx, self.key)
                ref = ref_cache[i] if ref_cache is not None and i < len(ref_cache) else None
                if ref is None:
                    if ref_cache is not None:  # first pass: the working copy is the parent
                        ref = log_softmax_t(logits.detach(), self.cfg.temperature)
                    else:
                        with torch.no_grad():
                            ref = log_softmax_t(self._logits(rows, idx, self.parent)[0], self.cfg.temperature)
                    if ref_cache is not None:
                        ref_cache.append(ref)
                old_logp = gather_logp(ref, targets)
                tis = (tis_tensor([rows.engine_logprobs[j] for j in idx], old_logp, mask, self.cfg.tis_cap)
                       if self.cfg.tis_cap else None)
                loss, kl, new_logp = update_loss(logits, targets, ref, adv[idx], mask, self.cfg, beta, n_tok,
                                                 n_rows, tis)
            if not math.isfinite(float(loss.detach())):
                self.zero_grad()
                raise TrainingAborted(f"non-finite loss ({float(loss.detach())}) in an update of {self.key}; "
                                      "nothing was written")
            if backward:
                loss.backward()
            loss_sum += float(loss.detach())
            for r, j in enumerate(idx):
                m = mask[r]
                kls[j] = kl[r][m].float().cpu()
                new_rows[j] = new_logp[r][m].float().cpu()
                old_rows[j] = old_logp[r][m].float().cpu()
        return kls, new_rows, old_rows, loss_sum

    def _measure(self, kls: list[torch.Tensor], new_rows: list[torch.Tensor], old_rows: list[torch.Tensor],
                 adv: list[float], loss: float) -> Measurement:
        if not kls:  # the agent did not speak in these rollouts
            return Measurement(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, loss, 0.0)
        kl_all = torch.cat(kls)
        new, mask = pad_rows(new_rows)
        old, _ = pad_rows(old_rows)
        a = torch.tensor(adv, dtype=torch.float32)
        gain, se = surrogate_gain(new, old, a, mask, clip_eps=self.cfg.clip_eps, mode=self.cfg.ratio,
                                  log_clamp=self.cfg.log_clamp)
        est = kl_estimators(old, new, mask)
        return Measurement(d_mean=float(kl_all.double().mean()),
                           d_p99=masked_quantile(kl_all, torch.ones_like(kl_all), 0.99), k1=est["k1"],
                           k3=est["k3"], gain=gain, gain_se=se, loss=loss,
                           adv_max=float(a.abs().max()) if a.numel() else 0.0,
                           trainer_logprobs=[r.tolist() for r in old_rows])

    def measure(self, rows: LossRows, beta: float = 0.0) -> Measurement:
        """Score the parameters in place against the parent on other states (no gradients)."""
        return self.run_pass(rows, None, beta, backward=False)


def occupancy_divergence(tm: Any, episodes: Sequence[Episode], start_pins: dict[str, str], role: str, *,
                         temperature: float, batch_size: int = 8) -> tuple[float, float]:
    """KL(d_now || d_start) of the contexts `role` reads, estimated on `episodes` (rollouts of the current
    team, which differs from the stage-start team `start_pins` only in agents updated since).

    Only the updated agents' message probabilities differ, so by the chain rule the KL is the expected sum,
    over those agents' messages before `role`'s first turn, of the token KLs KL(pi_new(.|s) || pi_start(.|s))
    at the message's token states (full vocabulary, softmax(logits / temperature), in float64 over the
    trainer's float32 logits). Returns (that mean over episodes, never negative; the sampled mean of
    log pi_new(m) - log pi_start(m) over the same messages, unbiased for the same KL). Both are 0 when no agent
    has changed."""
    rows = []  # (episode index, turn) of every updated agent's message the role reads
    for k, ep in enumerate(episodes):
        for turn in ep.turns:
            if turn.role == role:
                break
            if turn.version != start_pins[turn.role] and turn.message_ids:
                rows.append((k, turn))
    exact, sampled = [0.0] * len(episodes), [0.0] * len(episodes)
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            prompts, comps = [t.prompt_ids for _, t in chunk], [t.message_ids for _, t in chunk]
            versions = [t.version for _, t in chunk] + [start_pins[t.role] for _, t in chunk]
            logits, targets, mask = tm.completion_logits(prompts * 2, comps * 2, versions)
            new, old = torch.log_softmax(logits.double() / (temperature or 1.0), -1).split(len(chunk))
            mask = mask[:len(chunk)].double()
            kl = ((new.exp() * (new - old)).sum(-1).clamp(min=0.0) * mask).sum(-1)  # clamp: rounding only
            ratio = ((new - old).gather(-1, targets[:len(chunk), :, None])[..., 0] * mask).sum(-1)
            for (k, _), a, b in zip(chunk, kl.tolist(), ratio.tolist()):
                exact[k] += a
                sampled[k] += b
    n = len(episodes)
    return (sum(exact) / n, sum(sampled) / n) if n else (0.0, 0.0)
