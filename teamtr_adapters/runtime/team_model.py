"""TeamModel: one frozen base model plus N LoRA adapter versions in one PeftModel; the `hf` backend.

- `generate(requests, temperature, top_p, seed)`: all requests in one batch (left padding, KV cache,
  stop at EOS), each row under its own version. When every row uses the same version (a round-robin
  turn), that adapter is merged into the base weights for the call and the original weights are
  restored bitwise afterwards: un-merged LoRA costs about 0.55x of base speed at batch 32, merged
  about 1x (DESIGN.md). Mixed rows go through peft's per-row `adapter_names` path (exact).
- The fast rollout path (`fast = True`, the default; `hf=reference` keeps the previous path for
  benchmarks and tests): identical (prompt, version) requests, such as the G samples of a prompt at
  turn 0, are prefilled once and their KV cache rows copied; distinct prompts are prefilled in chunks of
  near-equal length (little padding); the KV cache is preallocated and written in place (transformers'
  DynamicCache concatenates every layer's keys and values at every step); the sampler draws by inverse CDF over exp(z - max) with one
  uniform per row and takes the token's log-prob as z - logsumexp(z) (z = logits / temperature), about
  8x cheaper than log_softmax + exp + multinomial over the 49k vocabulary (Gumbel-max was measured and is
  not cheaper here: one exponential variate per vocabulary entry costs more than the softmax).
- Shared prefix (fast path, and every scoring pass): when all rows of a batch run one adapter and their
  prompts start with the same tokens (a turn's rows share the agent's system prompt and the chat template's
  header, about 45 tokens of a 58-token turn-0 prompt for math-trio), that prefix is run once at batch 1 and
  its keys and values are read by every row: rows are laid out [prefix][padding][own tokens], positions
  count only unmasked tokens, so each row computes exactly what it would alone (up to float round-off).
  In a scoring pass with gradients the prefix's activations carry them (its keys and values are shared
  views; backward sums the rows' gradients into them).
- A forward in which every row uses one adapter runs that adapter as the LoRA layers' active adapter
  (peft's per-row `adapter_names` dispatch hooks and index ops are skipped; `requires_grad` is untouched).
- `logprobs(...)`: log-probs of given completion tokens under any loaded version or the bare base.
- `token_kl(p, q, ...)`: exact full-vocabulary KL(p || q) at every completion token state.

Versions are registry version ids; peft adapter names may not hold ".", so each id maps to
`v_<id[:16]>`. `None` (or "__base__" inside peft) is the bare base.
"""
from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..errors import IncompatibleAdapterError, InputError
from .backend import GenRequest, GenResult
from .base import BaseRef, load_base_model, resolve_device

BASE_NAME = "__base__"
# Prune finished rows from the KV cache once they are at least this share of the rows still in it.
PRUNE_SHARE = 0.25
# The shortest common prompt prefix worth its own prefill (module docstring).
MIN_SHARED = 8


def auto_dtype(device: str) -> str:
    """bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16 or AMX), float32 elsewhere."""
    if device == "cuda":
        return "bfloat16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


class TeamModel:
    """One base model and any number of loaded adapter versions (see module docstring)."""

    def __init__(self, base: BaseRef, *, device: str = "auto", dtype: str = "auto") -> None:
        import torch

        self.base = base
        self.device = resolve_device(device)
        self.dtype = auto_dtype(self.device) if dtype == "auto" else dtype
        self.model, self.tokenizer = load_base_model(base, self.dtype, self.device)
        self.peft: Any = None  # a PeftModel once the first adapter is loaded
        self._names: dict[str, str] = {}  # version id -> peft adapter name
        self._saved: dict[Any, Any] = {}  # LoRA layer -> its original base weight (for exact unmerge)
        self.merge_single = True
        self.fast = True  # the fast rollout path (module docstring); False: the reference path
        self._lora_layers: list[Any] | None = None  # peft's LoRA layers (cached; reset when adapters change)
        config = self.model.config
        self.context_window: int | None = getattr(config, "max_position_embeddings", None)
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = torch.tensor(sorted({i for i in eos + [self.tokenizer.eos_token_id] if i is not None}),
                                    device=self.device)

    # -- adapters ----------------------------------------------------------------------------------
    @property
    def versions(self) -> list[str]:
        """The loaded adapter versions."""
        return list(self._names)

    def adapter_name(self, version: str | None) -> str:
        """The peft adapter name of a loaded version (`__base__` for None)."""
        if version is None:
            return BASE_NAME
        if version not in self._names:
            raise InputError(f"adapter version {version[:16]} is not loaded")
        return self._names[version]

    def ensure_adapter(self, version: str, path: Path) -> None:
        """Load the adapter dir `path` as `version` (frozen); a no-op when it is already loaded."""
        if version in self._names:
            return
        name = "v_" + re.sub(r"[^A-Za-z0-9_]", "_", version)[:16]
        if name in self._names.values():
            raise InputError(f"adapter versions {version!r} and another loaded one share the name {name}")
        try:
            if self.peft is None:
                from peft import PeftModel

                with warnings.catch_warnings():
                    # peft 0.21 reads `model.is_gradient_checkpointing`, which transformers 5.24 deprecated in favour
                    # of `is_activation_checkpointing`: a FutureWarning on every load that no user can act on.
                    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                            category=FutureWarning)
                    self.peft = PeftModel.from_pretrained(self.model, str(path), adapter_name=name,
                                                          is_trainable=False)
            else:
                self.peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
        except (ValueError, RuntimeError, KeyError) as e:
            raise IncompatibleAdapterError(f"adapter {path} does not load on base {self.base.name}: "
                                           f"{str(e).splitlines()[0]}") from None
        self.peft.eval()
        self._names[version] = name
        self._lora_layers = None

    def unload_adapter(self, version: str) -> None:
        """Delete a loaded version from the model (no-op when it is not loaded)."""
        name = self._names.pop(version, None)
        if name is not None:
            with warnings.catch_warnings():  # peft: "Adapter ... was active which is now deleted" (we never use
                warnings.filterwarnings("ignore", message=r"Adapter .* was active")  # its active adapter)
                self.peft.delete_adapter(name)
            self._lora_layers = None

    # -- forward -----------------------------------------------------------------------------------
    def _row_names(self, versions: str | None | Sequence[str | None], n: int) -> list[str] | None:
        """peft adapter names per row, or None when every row is the bare base."""
        rows = _per_row(versions, n)
        return None if all(v is None for v in rows) else [self.adapter_name(v) for v in rows]

    def _forward(self, ids: Any, mask: Any, cache: Any, names: list[str] | None, keep: int, *,
                 routed: bool = False) -> Any:
        """Logits of the last `keep` positions; `names=None` runs the base weights as they are.

        Adapters are never chosen with peft's `set_adapter` or `disable_adapter`, which silently change
        `requires_grad` (a trainer's trainable set stays put). Rows that all use one adapter run it as the
        LoRA layers' active adapter (no per-row dispatch; `fast`), mixed rows through `adapter_names`.
        `routed`: the caller already holds `_route(names)` (a sampling loop enters it once)."""
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
        kw = dict(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                  use_cache=cache is not None, logits_to_keep=keep)
        if self.peft is None:
            return self.model(**kw).logits
        if routed:
            return self._routed_forward(kw, names)
        with self._route(names):
            return self._routed_forward(kw, names)

    def _routed_forward(self, kw: dict[str, Any], names: list[str] | None) -> Any:
        if names is None or (self.fast and len(set(names)) == 1):
            return self.model(**kw).logits
        return self.peft(**kw, adapter_names=names).logits

    @contextmanager
    def _route(self, names: list[str] | None) -> Iterator[None]:
        """The LoRA layers' state for a forward on rows `names`: adapters off (None), one active adapter
        (every row the same, fast path), or left as they are (per-row `adapter_names`, or no peft model)."""
        if self.peft is None:
            yield
        elif names is None:
            with self._lora_off():
                yield
        elif self.fast and len(set(names)) == 1:
            with self._lora_only(names[0]):
                yield
        else:
            yield

    def _layers(self) -> list[Any]:
        from peft.tuners.tuners_utils import BaseTunerLayer

        if self._lora_layers is None:
            self._lora_layers = [m for m in self.peft.modules() if isinstance(m, BaseTunerLayer)]
        return self._lora_layers

    @contextmanager
    def _lora_off(self) -> Iterator[None]:
        """Every LoRA layer computes its base layer only. peft's `disable_adapter` would do the same but
        also reset `requires_grad`; this flips only the layers' disable flag (peft 0.21 attribute) and
        skips the per-row `adapter_names` hooks, about 15% of a decode step at batch 32 here."""
        layers = self._layers()
        before = [m._disable_adapters for m in layers]
        for m in layers:
            m._disable_adapters = True
        try:
            yield
        finally:
            for m, flag in zip(layers, before):
                m._disable_adapters = flag

    @contextmanager
    def _lora_only(self, name: str) -> Iterator[None]:
        """Every LoRA layer computes its base layer plus adapter `name` only (peft 0.21's `_active_adapter`
        attribute, set directly: `set_adapter` would also change `requires_grad`)."""
        layers = self._layers()
        before = [(m._active_adapter, m._disable_adapters) for m in layers]
        for m in layers:
            m._active_adapter, m._disable_adapters = [name], False
        try:
            yield
        finally:
            for m, (active, flag) in zip(layers, before):
                m._active_adapter, m._disable_adapters = active, flag

    def _left_pad(self, seqs: list[list[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s):] = torch.tensor(s)
                mask[i, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _shared_len(self, prompts: Sequence[Sequence[int]], names: list[str] | None) -> int:
        """How many leading tokens every prompt shares, to be run once (module docstring): 0 unless the fast
        path is on, there are >= 2 rows on one adapter (the prefix's keys depend on it) and the common prefix
        has >= MIN_SHARED tokens; every row keeps at least its last prompt token to itself."""
        if not self.fast or len(prompts) < 2 or (names is not None and len(set(names)) > 1):
            return 0
        n = min(len(os.path.commonprefix([list(p) for p in prompts])), min(len(p) for p in prompts) - 1)
        return n if n >= MIN_SHARED else 0

    def _prefix_kv(self, prefix: Sequence[int], names: list[str] | None) -> list[tuple[Any, Any]]:
        """Keys and values [1, H, P, D] per layer of one run of `prefix` (gradients if enabled); the caller
        holds `_route(names)`."""
        import torch
        from transformers import DynamicCache

        cache: Any = DynamicCache(config=self.model.config)
        ids = torch.tensor([list(prefix)], device=self.device)
        self._forward(ids, torch.ones_like(ids), cache, None if names is None else names[:1], keep=1, routed=True)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _cache_from(self, kv: list[tuple[Any, Any]] | None, rows: int) -> Any:
        """A DynamicCache holding the prefix `kv` for `rows` rows (empty when `kv` is None)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i, (k, v) in enumerate(kv or []):
            cache.update(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1), i)
        return cache

    # -- merging -----------------------------------------------------------------------------------
    def _merge(self, version: str) -> None:
        """Add `version`'s LoRA delta into the base weights (originals kept for an exact restore)."""
        from peft.tuners.lora import LoraLayer

        name = self.adapter_name(version)
        for module in self.peft.modules():
            if isinstance(module, LoraLayer) and name in module.lora_A:
                layer: Any = module  # peft types LoraLayer as a mixin: get_delta_weight is on its subclasses
                weight = layer.get_base_layer().weight
                orig = self._saved.setdefault(module, weight.detach().clone())
                delta = layer.get_delta_weight(name)
                weight.data.copy_((orig.float() + delta.float()).to(weight.dtype))

    def _restore(self) -> None:
        for module, orig in self._saved.items():
            module.get_base_layer().weight.data.copy_(orig)
        self._saved.clear()

    # -- generation --------------------------------------------------------------------------------
    def generate(self, requests: list[GenRequest], *, temperature: float, top_p: float = 1.0,
                 seed: int = 0) -> list[GenResult]:
        """Sample a continuation for every request in one batch (see `GenResult` for the log-probs)."""
        import torch

        if not requests:
            return []
        versions = {r.version for r in requests}
        single = len(versions) == 1
        gen = torch.Generator(device=self.device).manual_seed(seed)
        sample = self._sample_fast if self.fast else self._sample
        with torch.no_grad():
            if single and (self.peft is None or None in versions or not self.merge_single):
                return sample(requests, self._row_names(requests[0].version, len(requests)), temperature, top_p, gen)
            if single:
                assert requests[0].version is not None  # the bare base (None) was sampled above
                self._merge(requests[0].version)
                try:
                    return sample(requests, None, temperature, top_p, gen)
                finally:
                    self._restore()
            return sample(requests, self._row_names([r.version for r in requests], len(requests)),
                          temperature, top_p, gen)

    def _sample_fast(self, requests: list[GenRequest], names: list[str] | None, temperature: float, top_p: float,
                     gen: Any) -> list[GenResult]:
        """The fast sampling loop (module docstring): identical requests prefilled once, a preallocated KV
        cache, the inverse-CDF sampler; finished rows are pruned from the batch as they pile up."""
        import torch

        keys = [(tuple(r.prompt_ids), None if names is None else names[i]) for i, r in enumerate(requests)]
        first: dict[Any, int] = {}
        for k in keys:
            first.setdefault(k, len(first))
        uniq = list(first)  # distinct (prompt, adapter) pairs, in order of first appearance
        expand = torch.tensor([first[k] for k in keys], device=self.device)
        budget = torch.tensor([r.max_new_tokens for r in requests], device=self.device)
        # one adapter state for the whole loop when every row has the same (pruning keeps that true)
        routed = names is None or len(set(names)) == 1
        with self._route(names if routed else []):
            cache, mask, logits = self._prefill([list(p) for p, _ in uniq],
                                                None if names is None else [n for _, n in uniq],
                                                int(budget.max()), routed)
            if len(uniq) < len(requests):  # copy the shared prompts' KV rows out to every request
                cache.batch_select_indices(expand)
                logits, mask = logits[expand], mask[expand]
            return self._decode(logits, mask, cache, names, budget,
                                lambda x: _pick_fast(x, temperature, top_p, gen),
                                lambda t, m, n: self._forward(t, m, cache, n, keep=1, routed=routed))

    def _prefill(self, prompts: list[list[int]], names: list[str] | None, new_tokens: int,
                 routed: bool) -> tuple[Any, Any, Any]:
        """Prefill `prompts` into a preallocated KV cache with room for `new_tokens` more positions; returns
        (cache, attention mask [B, W], last-position logits [B, V]). Prompts are sorted by length and run
        in chunks of near-equal length (a prefill's cost is its padded token count: one left-padded batch of
        a turn's prompts is 15-30% padding), then laid out left-padded to the longest prompt W, as one
        batch would be; a prefix common to all prompts is run once and laid out at the left of every row
        (module docstring)."""
        import torch

        lengths = [len(p) for p in prompts]
        width = max(lengths)
        mask = torch.zeros((len(prompts), width), dtype=torch.long, device=self.device)
        cache = _slab_cache(self.model.config, width + new_tokens)
        if not _is_slab(cache):  # a model with its own kind of cache layers: one batch, transformers' cache
            ids, mask = self._left_pad(prompts)
            return cache, mask, self._forward(ids, mask, cache, names, keep=1, routed=routed)[:, -1]
        shared = self._shared_len(prompts, names) if routed else 0
        kv = self._prefix_kv(prompts[0][:shared], names) if shared else None
        logits: Any = None
        for chunk in _length_chunks([n - shared for n in lengths]):
            ids, cmask = self._left_pad([prompts[i][shared:] for i in chunk])
            part = self._cache_from(kv, len(chunk))
            fmask = torch.cat([cmask.new_ones((len(chunk), shared)), cmask], dim=1) if shared else cmask
            out = self._forward(ids, fmask, part, None if names is None else [names[i] for i in chunk], keep=1,
                                routed=routed)[:, -1]
            rows = torch.tensor(chunk, device=self.device)
            if logits is None:
                logits = out.new_empty((len(prompts), out.shape[-1]))
            logits[rows] = out
            mask[rows, width - ids.shape[1]:] = cmask
            for slab, layer in zip(cache.layers, part.layers):
                slab.write_rows(rows, width - ids.shape[1], width, layer.keys[:, :, shared:], layer.values[:, :, shared:],
                                len(prompts))
        if kv is not None:  # the prefix once, at the left of every row: [prefix][padding][own tokens]
            mask[:, :shared] = 1
            every = torch.arange(len(prompts), device=self.device)
            for slab, (k, v) in zip(cache.layers, kv):
                slab.write_rows(every, 0, shared, k.expand(len(prompts), -1, -1, -1),
                                v.expand(len(prompts), -1, -1, -1), len(prompts))
        for slab in cache.layers:
            slab.set_length(width)
        return cache, mask, logits

    def _sample(self, requests: list[GenRequest], names: list[str] | None, temperature: float, top_p: float,
                gen: Any) -> list[GenResult]:
        """The reference sampling loop (`fast = False`): DynamicCache, log_softmax + multinomial, every
        request prefilled; finished rows are pruned from the batch as they pile up."""
        import torch
        from transformers import DynamicCache

        ids, mask = self._left_pad([r.prompt_ids for r in requests])
        budget = torch.tensor([r.max_new_tokens for r in requests], device=self.device)
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(ids, mask, cache, names, keep=1)[:, -1]
        return self._decode(logits, mask, cache, names, budget,
                            lambda x: _pick(x.float(), temperature, top_p, gen),
                            lambda t, m, n: self._forward(t, m, cache, n, keep=1))

    def _decode(self, logits: Any, mask: Any, cache: Any, names: list[str] | None, budget: Any,
                pick: Callable[[Any], tuple[Any, Any]],
                step: Callable[[Any, Any, list[str] | None], Any]) -> list[GenResult]:
        """The decode loop both sampling paths share. From the prefilled last-position `logits` [B, V], `pick`
        draws (tokens, log-probs) and `step(tokens [B, 1], mask, names)` runs one position through `cache`;
        a row stops at an EOS token or its request's `budget`; finished rows are pruned from the batch (and
        `cache`) once they are PRUNE_SHARE of it, otherwise they are fed padding under a zero mask."""
        import torch

        rows = torch.arange(len(budget), device=self.device)  # request index of each row in the batch
        done = torch.zeros(len(budget), dtype=torch.bool, device=self.device)
        out_ids: list[list[int]] = [[] for _ in range(len(budget))]
        out_lp: list[list[float]] = [[] for _ in range(len(budget))]
        n = 0
        while True:
            tok, lp = pick(logits)
            live, row_of = (~done).nonzero().flatten().tolist(), rows.tolist()
            for j, t, l in zip(live, tok[live].tolist(), lp[live].tolist()):
                out_ids[row_of[j]].append(t)
                out_lp[row_of[j]].append(l)
            n += 1
            done |= torch.isin(tok, self.eos_ids) | (n >= budget[rows])
            if bool(done.all()):
                break
            if int(done.sum()) >= max(1, PRUNE_SHARE * len(rows)):
                keep = (~done).nonzero().flatten()
                cache.batch_select_indices(keep)
                mask, rows, tok, done = mask[keep], rows[keep], tok[keep], done[keep]
                names = None if names is None else [names[i] for i in keep.tolist()]
            tok = torch.where(done, self.tokenizer.pad_token_id, tok)
            mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
            logits = step(tok[:, None], mask, names)[:, -1]
        return [GenResult(ids=i, logprobs=l) for i, l in zip(out_ids, out_lp)]

    # -- scoring -----------------------------------------------------------------------------------
    def completion_logits(self, prompts: list[list[int]], completions: list[list[int]],
                          versions: str | None | Sequence[str | None]) -> tuple[Any, Any, Any]:
        """Logits (float32) at every completion token state, right-aligned: returns (logits [B, C, V],
        targets [B, C], mask [B, C]) with C the longest completion; row r's tokens fill the last
        len(completions[r]) positions. Runs with gradients if the caller enables them. Rows on one adapter read
        their common prompt prefix from one run of it (module docstring)."""
        import torch

        if any(not p for p in prompts):
            raise InputError("every scored sequence needs a non-empty prompt")
        width = max((len(c) for c in completions), default=0)
        names = self._row_names(versions, len(prompts))
        shared = self._shared_len(prompts, names)
        ids, mask = self._left_pad([p[shared:] + c for p, c in zip(prompts, completions)])
        with self._route(names):
            cache = self._cache_from(self._prefix_kv(prompts[0][:shared], names), len(prompts)) if shared else None
            if shared:
                mask = torch.cat([mask.new_ones((len(prompts), shared)), mask], dim=1)
            logits = self._forward(ids, mask, cache, names, keep=width + 1, routed=True)
        logits = logits[:, :width].float()
        targets = ids[:, ids.shape[1] - width:]
        lengths = torch.tensor([len(c) for c in completions], device=self.device)
        cmask = torch.arange(width, device=self.device)[None, :] >= (width - lengths)[:, None]
        return logits, targets, cmask

    def logprobs(self, prompts: list[list[int]], completions: list[list[int]],
                 versions: str | None | Sequence[str | None], *, temperature: float = 1.0,
                 batch_size: int = 8) -> list[Any]:
        """Per-token log-probs of each completion under softmax(logits / temperature) of its version
        (temperature 0 means 1: the argmax's log-prob under the untempered softmax)."""
        import torch

        versions = _per_row(versions, len(prompts))
        out = []
        with torch.no_grad():
            for s in range(0, len(prompts), batch_size):
                sl = slice(s, s + batch_size)
                logits, targets, _ = self.completion_logits(prompts[sl], completions[sl], versions[sl])
                lp = torch.log_softmax(logits / (temperature or 1.0), -1).gather(-1, targets[..., None])[..., 0]
                out += [lp[i, lp.shape[1] - len(c):] for i, c in enumerate(completions[sl])]
        return out

    def token_kl(self, p_version: str | None, q_version: str | None, prompts: list[list[int]],
                 completions: list[list[int]], *, temperature: float = 1.0, batch_size: int = 8) -> list[Any]:
        """Exact full-vocabulary KL(p || q) at each completion token state (the state before each
        completion token), under softmax(logits / temperature). One tensor per sequence."""
        import torch

        self.adapter_name(p_version), self.adapter_name(q_version)
        out = []
        with torch.no_grad():
            for s in range(0, len(prompts), batch_size):
                pr, co = prompts[s:s + batch_size], completions[s:s + batch_size]
                if p_version == q_version:
                    logits, _, _ = self.completion_logits(pr, co, p_version)
                    logp = logq = torch.log_softmax(logits / (temperature or 1.0), -1)
                else:
                    logits, _, _ = self.completion_logits(pr + pr, co + co, [p_version] * len(pr) + [q_version] * len(pr))
                    logp, logq = torch.log_softmax(logits / (temperature or 1.0), -1).split(len(pr))
                kl = (logp.exp() * (logp - logq)).sum(-1)
                out += [kl[i, kl.shape[1] - len(c):] for i, c in enumerate(co)]
        return out


def _per_row(versions: str | None | Sequence[str | None], n: int) -> list[str | None]:
    if versions is None or isinstance(versions, str):
        return [versions] * n
    if len(versions) != n:
        raise InputError(f"{len(versions)} versions given for {n} rows")
    return list(versions)


def _pick(logits: Any, temperature: float, top_p: float, gen: Any) -> tuple[Any, Any]:
    """Sample (or argmax at temperature 0) one token per row; return it and its untruncated log-prob."""
    import torch

    if temperature == 0:
        logp = torch.log_softmax(logits, -1)
        tok = logits.argmax(-1)
    else:
        logp = torch.log_softmax(logits / temperature, -1)
        probs = logp.exp()
        if top_p < 1.0:
            sorted_p, order = probs.sort(-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # keep the smallest prefix reaching top_p
            probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
        tok = torch.multinomial(probs, 1, generator=gen)[:, 0]
    return tok, logp.gather(-1, tok[:, None])[:, 0]


def _pick_fast(logits: Any, temperature: float, top_p: float, gen: Any) -> tuple[Any, Any]:
    """`_pick`'s distribution and log-probs, cheaper: inverse-CDF sampling over exp(z - max z) with one
    uniform per row (z = logits / temperature, in float32) and log-prob z[tok] - logsumexp(z); with top-p,
    the same over the kept prefix of the sorted distribution. Temperature 0: the argmax and its
    log-prob under softmax(logits)."""
    import torch

    z = logits.float() if temperature == 0 else logits.float() / temperature
    peak = z.amax(-1, keepdim=True)
    w = (z - peak).exp_()  # unnormalised probabilities, the largest exactly 1
    if temperature == 0:
        tok = z.argmax(-1)
        total = w.double().sum(-1, keepdim=True)
    elif top_p < 1.0:
        u = torch.rand((z.shape[0], 1), generator=gen, device=z.device, dtype=torch.float64)
        sorted_w, order = w.sort(-1, descending=True)
        total = sorted_w.double().sum(-1, keepdim=True)
        cum = sorted_w.double().cumsum(-1)
        kept = (cum - sorted_w.double() < top_p * total).sum(-1, keepdim=True)  # smallest prefix reaching top_p
        idx = torch.searchsorted(cum, u * cum.gather(-1, kept - 1), right=True).clamp_(max=z.shape[1] - 1)
        idx = torch.minimum(idx, kept - 1)
        tok = order.gather(-1, idx)[:, 0]
    else:
        u = torch.rand((z.shape[0], 1), generator=gen, device=z.device, dtype=torch.float64)
        cum = w.double().cumsum(-1)  # float64: the running sum over 49k entries keeps every step exact enough
        total = cum[:, -1:]
        tok = torch.searchsorted(cum, u * total, right=True).clamp_(max=z.shape[1] - 1)[:, 0]
    # log softmax(z)[tok] = (z[tok] - max z) - log sum exp(z - max z), the sum in float64
    return tok, ((z.gather(-1, tok[:, None]) - peak)[:, 0].double() - total[:, 0].log()).float()


def _length_chunks(lengths: list[int], slack: float = 0.06, most: int = 32) -> list[list[int]]:
    """Indices of `lengths` sorted by length, cut into chunks in which padding to the chunk's longest costs at
    most `slack` of it (+2 tokens), `most` rows at most."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks: list[list[int]] = []
    for i in order:
        if chunks and len(chunks[-1]) < most and lengths[i] - lengths[chunks[-1][0]] <= slack * lengths[i] + 2:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def _is_slab(cache: Any) -> bool:
    return all(type(layer).__name__ == "_SlabLayer" for layer in cache.layers)


def _slab_cache(config: Any, capacity: int) -> Any:
    """A DynamicCache whose layers write keys and values in place into buffers of `capacity` positions
    (`_SlabLayer`); a model whose cache layers are not plain `DynamicLayer`s keeps transformers' own."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    if all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [_slab_layer_class()(capacity) for _ in cache.layers]
    return cache


_SLAB: Any = None


def _slab_layer_class() -> Any:
    """`_SlabLayer`, defined on first use (transformers is imported lazily)."""
    global _SLAB
    if _SLAB is None:
        from transformers.cache_utils import DynamicLayer

        class _SlabLayer(DynamicLayer):
            """A DynamicLayer over preallocated [B, H, capacity, D] buffers: `update` writes the new positions in
            place and returns views of the filled part (no per-step concatenation)."""

            def __init__(self, capacity: int) -> None:
                super().__init__()
                self.capacity, self.length = capacity, 0
                self.kbuf: Any = None
                self.vbuf: Any = None

            def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
                import torch

                self.device = key_states.device
                b, h, _, dk = key_states.shape
                # zeros, not empty: padding positions are masked, but a NaN there would still poison attention
                self.kbuf = torch.zeros((b, h, self.capacity, dk), dtype=key_states.dtype, device=self.device)
                self.vbuf = torch.zeros((b, h, self.capacity, value_states.shape[-1]), dtype=value_states.dtype,
                                        device=self.device)
                self.is_initialized = True

            def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
                if not self.is_initialized:
                    self.lazy_initialization(key_states, value_states)
                n = key_states.shape[-2]
                if self.length + n > self.capacity:
                    raise RuntimeError(f"KV cache capacity {self.capacity} exceeded")
                self.kbuf[:, :, self.length:self.length + n] = key_states
                self.vbuf[:, :, self.length:self.length + n] = value_states
                self.length += n
                self.keys, self.values = self.kbuf[:, :, :self.length], self.vbuf[:, :, :self.length]
                return self.keys, self.values

            def get_seq_length(self) -> int:
                return self.length

            def write_rows(self, rows: Any, start: int, stop: int, keys: Any, values: Any, batch: int) -> None:
                """Write a prefilled chunk's keys and values into rows `rows`, positions start..stop."""
                if not self.is_initialized:
                    self.lazy_initialization(keys.new_empty((batch, *keys.shape[1:])),
                                             values.new_empty((batch, *values.shape[1:])))
                self.kbuf[rows, :, start:stop] = keys
                self.vbuf[rows, :, start:stop] = values

            def set_length(self, length: int) -> None:
                self.length = length
                self.keys, self.values = self.kbuf[:, :, :length], self.vbuf[:, :, :length]

            def batch_select_indices(self, indices: Any) -> None:
                if self.is_initialized:
                    self.kbuf, self.vbuf = self.kbuf[indices], self.vbuf[indices]
                    self.keys, self.values = self.kbuf[:, :, :self.length], self.vbuf[:, :, :self.length]

        _SLAB = _SlabLayer
    return _SLAB


HF_ARGS = ("unmerged", "reference", "unmerged+reference")


def create_hf_backend(base: BaseRef, *, device: str = "auto", dtype: str = "auto", arg: str | None = None) -> TeamModel:
    """The `hf` backend factory (transformers + peft): a TeamModel. `hf=unmerged` never merges adapters;
    `hf=reference` uses the reference rollout path (the previous sampler and KV cache, no shared prefill,
    per-row adapter dispatch); `hf=unmerged+reference` both."""
    if arg not in (None, *HF_ARGS):
        raise InputError(f"the hf backend takes no argument but one of {', '.join(HF_ARGS)} (got {arg!r})")
    model = TeamModel(base, device=device, dtype=dtype)
    parts = set((arg or "").split("+"))
    model.merge_single = "unmerged" not in parts
    model.fast = "reference" not in parts
    return model
