"""Per-agent rows of team episodes: one row per message of an agent, with the exact context it read.

Shared by the trainer (its loss rows), the swap gate and Stage-0 alignment (the states where D_tok is
measured). Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from .records import Episode


@dataclass
class LossRows:
    """One row per message of the trained agent: the exact context it read, its message, the rollout
    engine's log-probs of the message's tokens, and the advantage of the episode the message belongs to."""

    prompts: list[list[int]] = field(default_factory=list)
    completions: list[list[int]] = field(default_factory=list)
    adv: list[float] = field(default_factory=list)
    episode: list[int] = field(default_factory=list)
    engine_logprobs: list[list[float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def n_tokens(self) -> int:
        return sum(len(c) for c in self.completions)

    def batches(self, size: int) -> Iterator[slice]:
        for s in range(0, len(self), size):
            yield slice(s, s + size)


def agent_rows(episodes: list[Episode], role: str, adv: list[float]) -> LossRows:
    """The loss rows of `role`: its messages in `episodes`, each with its episode's advantage `adv[e]`.
    Other agents' messages appear only inside the contexts, never as targets."""
    rows = LossRows()
    for e, ep in enumerate(episodes):
        for turn in ep.turns:
            if turn.role == role and turn.message_ids:
                rows.prompts.append(turn.prompt_ids)
                rows.completions.append(turn.message_ids)
                rows.adv.append(float(adv[e]))
                rows.episode.append(e)
                rows.engine_logprobs.append(turn.logprobs)
    return rows
