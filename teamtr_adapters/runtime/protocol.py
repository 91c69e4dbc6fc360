"""The shared-context protocol: who speaks when, what each agent reads, and the per-turn records.

An episode starts from a task prompt; at each turn the router picks an agent, which reads (through the
base model's chat template) its own system prompt and a user message holding the problem and every
earlier message, then writes one message. All episodes of a turn go to the backend as one batch.
Reproducibility: the speaking order comes from (seed, episode index) and turn t samples with the seed
`turn_seed(seed, t)`, so the same call on the same machine gives the same transcripts.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Callable, Mapping, Sequence

from ..errors import TaskError
from ..spec import RoleSpec, TeamSpec
from .backend import Backend, GenRequest
from .records import Episode, Turn

BASE_VERSION = "base"  # Turn.version of a message written by the bare base model


def turn_seed(seed: int, turn: int) -> int:
    """The sampling seed of turn `turn` in a rollout seeded with `seed`."""
    return int(hashlib.sha256(f"turn|{seed}|{turn}".encode()).hexdigest()[:15], 16)


def speaking_order(spec: TeamSpec, seed: int, episode: int) -> list[RoleSpec]:
    """The roles speaking at turns 0..n_turns-1: the spec's order (round-robin) or a seeded shuffle
    per episode (random), repeated when there are more turns than roles."""
    roles = list(spec.roles)
    if spec.protocol.router == "random":
        random.Random(f"router|{seed}|{episode}").shuffle(roles)
    return [roles[t % len(roles)] for t in range(spec.n_turns)]


def context_text(question: str, turns: Sequence[Turn]) -> str:
    """The user message an agent reads: the problem and the earlier agents' messages."""
    text = f"Problem: {question}"
    for t in turns:
        text += f"\n\n{t.role}: {t.text}"
    return text


def build_prompt(tokenizer: Any, system_prompt: str, question: str, turns: Sequence[Turn]) -> list[int]:
    """Token ids of an agent's input, built with the base model's chat template."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": context_text(question, turns)})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def check_fits(prompt_len: int, max_new_tokens: int, context_window: int | None, where: str) -> None:
    """TaskError when a prompt plus its message budget exceeds the model's context window."""
    if context_window and prompt_len + max_new_tokens > context_window:
        raise TaskError(f"{where}: prompt of {prompt_len} tokens + {max_new_tokens} new tokens exceeds the "
                        f"model's context window of {context_window} tokens; shorten the prompt or lower "
                        f"max_new_tokens")


def rollout(backend: Backend, spec: TeamSpec, items: Sequence[Any], *, pins: Mapping[str, str | None],
            group_size: int = 1, seed: int = 0, tokenizer: Any = None, task: Any = None,
            temperature: float | None = None, top_p: float | None = None, context_window: int | None = None,
            prefix: Sequence[Episode] | None = None, from_turn: int | Sequence[int] = 0,
            progress: Callable[[int, int], None] | None = None) -> list[Episode]:
    """Play `group_size` episodes per item (episode k = item k // group_size, sample k % group_size).

    `pins` maps each role to its version id (None: the bare base). `task` scores the final message
    (default: the spec's task). `prefix`/`from_turn` resample a suffix: episode k keeps the first
    `from_turn[k]` turns of `prefix[k]` (and its speaking order) and plays the rest anew.
    `temperature`/`top_p` default to the spec's sampling; `tokenizer` to the backend's.
    """
    from ..tasks import get_task

    tokenizer = tokenizer if tokenizer is not None else backend.tokenizer
    task = task if task is not None else get_task(spec.task)
    temperature = spec.sampling.temperature if temperature is None else temperature
    top_p = spec.sampling.top_p if top_p is None else top_p
    context_window = context_window or getattr(backend, "context_window", None)
    missing = [r for r in spec.role_names if r not in pins]
    if missing:
        raise TaskError(f"no version pinned for role(s) {', '.join(missing)}")
    n = len(items) * group_size
    starts = [from_turn] * n if isinstance(from_turn, int) else list(from_turn)
    if prefix is not None and (len(prefix) != n or len(starts) != n):
        raise TaskError(f"prefix has {len(prefix)} episodes and from_turn {len(starts)} entries; expected {n}")
    episodes, orders = [], []
    for k in range(n):
        order_seed = prefix[k].seed if prefix is not None else seed
        ep = Episode(prompt=items[k // group_size].prompt, answer=items[k // group_size].answer,
                     item_index=k // group_size, sample=k % group_size, seed=order_seed)
        if prefix is not None:
            ep.turns = list(prefix[k].turns[:starts[k]])
        episodes.append(ep)
        orders.append(speaking_order(spec, order_seed, k))
    for t in range(spec.n_turns):
        if progress:
            progress(t, spec.n_turns)
        todo = [k for k in range(n) if t >= (starts[k] if prefix is not None else 0)]
        requests = []
        for k in todo:
            role = orders[k][t]
            ids = build_prompt(tokenizer, role.system_prompt, episodes[k].prompt, episodes[k].turns)
            check_fits(len(ids), role.max_new_tokens, context_window, f"episode {k} turn {t} ({role.name})")
            requests.append(GenRequest(ids, pins[role.name], role.max_new_tokens, group=k // group_size))
        results = backend.generate(requests, temperature=temperature, top_p=top_p, seed=turn_seed(seed, t))
        for k, req, res in zip(todo, requests, results):
            role = orders[k][t]
            episodes[k].turns.append(Turn(role=role.name, version=req.version or BASE_VERSION,
                                          prompt_ids=req.prompt_ids, message_ids=res.ids, logprobs=res.logprobs,
                                          text=tokenizer.decode(res.ids, skip_special_tokens=True).strip()))
    if progress:
        progress(spec.n_turns, spec.n_turns)
    for k, ep in enumerate(episodes):
        final = ep.turns[-1].text if ep.turns else ""
        ep.final_answer = task.extract_answer(final)
        ep.reward = task.reward(final, ep.answer, item=items[k // group_size])
    return episodes
