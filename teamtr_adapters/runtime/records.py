"""Rollout records: what one team episode leaves behind. Plain dataclasses (no torch) so that the
registry, the gate report and JSON-lines transcripts can carry them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Turn:
    """One agent's message in the shared context.

    `prompt_ids` are the exact input ids the agent read (chat template applied); `message_ids` the ids
    it generated (EOS included when produced); `logprobs[t]` the behaviour log-prob of `message_ids[t]`
    under the sampling distribution softmax(logits / temperature) of version `version`.
    """

    role: str
    version: str
    prompt_ids: list[int]
    message_ids: list[int]
    logprobs: list[float]
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Episode:
    """One team episode on one task item: the prompt, the turns in order, and the verifier's reward."""

    prompt: str
    answer: str
    item_index: int  # index of the task item in the rollout batch (episodes of one group share it)
    sample: int  # index within the group (0..G-1)
    seed: int
    turns: list[Turn] = field(default_factory=list)
    reward: float = 0.0
    final_answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Episode":
        d = dict(d)
        d["turns"] = [Turn(**t) for t in d.get("turns", [])]
        return cls(**d)
