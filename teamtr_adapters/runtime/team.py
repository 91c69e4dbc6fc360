"""A playable team: spec + pinned versions + a backend. `load_team` builds one from the registry.

```python
from teamtr_adapters import Registry, load_team
team = load_team(Registry(), "math-trio")
episode = team.run("What is 7 + 5?")            # records.Episode: turns, final_answer
report, team_eps, base_eps = team.evaluate(n=32, k=1, seed=0, split="heldout")
```
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping, Sequence

from ..errors import TaskError
from ..spec import ProtocolSpec, RoleSpec, TeamSpec
from ..types import AgentStats, EvalReport, TeamScore
from .backend import Backend, create_backend
from .base import BaseRef
from .protocol import rollout
from .records import Episode

Progress = Callable[[int, int], None]


class Team:
    """A team ready to play: `spec`, `pins` (role -> version id), a loaded `backend`."""

    def __init__(self, spec: TeamSpec, pins: dict[str, str], backend: Backend, base: BaseRef,
                 names: dict[str, str] | None = None, tokenizer: Any = None) -> None:
        from ..tasks import get_task

        self.spec, self.pins, self.backend, self.base = spec, dict(pins), backend, base
        self.names = dict(names or {})  # version id -> human name ("v3")
        self.tokenizer = tokenizer if tokenizer is not None else _tokenizer(backend, base)
        self.context_window = getattr(backend, "context_window", None) or _context_window(base)
        self.task = get_task(spec.task)

    def label(self, version: str) -> str:
        """`v3 (1a2b3c4d)` for a registry version, `base` for the bare base."""
        name = self.names.get(version)
        return f"{name} ({version[:8]})" if name else version[:12]

    def rollout(self, items: Sequence[Any], group_size: int = 1, seed: int = 0, *,
                pins: Mapping[str, str | None] | None = None, spec: TeamSpec | None = None,
                temperature: float | None = None, progress: Progress | None = None, **kw: Any) -> list[Episode]:
        """Team episodes on `items` (see `protocol.rollout`); `pins`/`spec` override the team's."""
        return rollout(self.backend, spec or self.spec, items, pins=pins or self.pins, group_size=group_size,
                       seed=seed, tokenizer=self.tokenizer, task=self.task, temperature=temperature,
                       context_window=self.context_window, progress=progress, **kw)

    def run(self, question: str, *, answer: str = "", seed: int = 0, temperature: float | None = None) -> Episode:
        """Play one episode on `question` (scored against `answer` when given)."""
        from ..tasks import TaskItem

        if not question.strip():
            raise TaskError("the question is empty")
        return self.rollout([TaskItem(question, answer)], 1, seed, temperature=temperature)[0]

    def base_alone_spec(self) -> TeamSpec:
        """The base model answering alone: one turn with the last role's system prompt and budget."""
        last = self.spec.roles[-1]
        return self.spec.replace(roles=(RoleSpec("base", last.system_prompt, last.max_new_tokens),),
                                 protocol=ProtocolSpec("round-robin", 1))

    def evaluate(self, n: int = 32, k: int = 1, seed: int = 0, split: str = "heldout", *, base_alone: bool = True,
                 temperature: float | None = None, progress: Progress | None = None
                 ) -> tuple[EvalReport, list[Episode], list[Episode]]:
        """Accuracy of the team (and of the base alone on the same prompts): (report, team eps, base eps)."""
        from ..tasks.base import check_eval_args

        check_eval_args(n, k, split)
        items = self.task.sample(n, seed=seed, split=split)
        total = self.spec.n_turns + (1 if base_alone else 0)
        start = time.perf_counter()
        team_eps = self.rollout(items, k, seed, temperature=temperature,
                                progress=progress and (lambda t, _n: progress(t, total)))
        base_eps: list[Episode] = []
        if base_alone:
            base_eps = self.rollout(items, k, seed, pins={"base": None}, spec=self.base_alone_spec(),
                                    temperature=temperature,
                                    progress=progress and (lambda t, _n: progress(self.spec.n_turns + t, total)))
        report: EvalReport = {"team": self.spec.name, "task": self.task.name, "split": split, "n": n, "k": k, "seed": seed,
                  "temperature": self.spec.sampling.temperature if temperature is None else temperature,
                  "team_result": self.score(team_eps, k),
                  "wall_s": round(time.perf_counter() - start, 2)}
        report["team_result"]["agents"] = self._agent_stats(team_eps)
        if base_alone:
            report["base_alone"] = self.score(base_eps, k)
            report["gain_avg@k"] = round(report["team_result"]["avg@k"] - report["base_alone"]["avg@k"], 4)
        return report, team_eps, base_eps

    def score(self, episodes: list[Episode], k: int) -> TeamScore:
        """avg@k (mean reward), pass@k (share of prompts with a correct sample), answer rates, tokens."""
        by_item: dict[int, list[float]] = {}
        for ep in episodes:
            by_item.setdefault(ep.item_index, []).append(ep.reward)
        finals = [ep.turns[-1].text for ep in episodes]
        return {"avg@k": _mean([ep.reward for ep in episodes]),
                "pass@k": _mean([float(max(r) > 0) for r in by_item.values()]),
                "final_format_rate": _mean([float(self._explicit(t)) for t in finals]),
                "answered_rate": _mean([float(ep.final_answer is not None) for ep in episodes]),
                "tokens": sum(len(t.message_ids) for ep in episodes for t in ep.turns),
                "episodes": len(episodes)}

    def _explicit(self, text: str) -> bool:
        from ..tasks.answers import EXPLICIT_FORMATS

        return self.task.answer_format(text) in EXPLICIT_FORMATS

    def _agent_stats(self, episodes: list[Episode]) -> dict[str, AgentStats]:
        """Per role: version, messages, mean tokens per message, share with an explicit answer format."""
        stats: dict[str, AgentStats] = {}
        for role in self.spec.role_names:
            turns = [t for ep in episodes for t in ep.turns if t.role == role]
            stats[role] = {"version": self.label(self.pins[role]), "messages": len(turns),
                           "tokens": sum(len(t.message_ids) for t in turns),
                           "mean_tokens": round(_mean([len(t.message_ids) for t in turns]), 2),
                           "answer_format_rate": _mean([float(self._explicit(t.text)) for t in turns])}
        return stats


def _mean(xs: Sequence[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else 0.0


def _tokenizer(backend: Backend, base: BaseRef) -> Any:
    tok = getattr(backend, "tokenizer", None)
    if tok is None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(base.path)
    return tok


def _context_window(base: BaseRef) -> int | None:
    return json.loads((base.path / "config.json").read_text()).get("max_position_embeddings")


def load_team(registry: Any, team: str, *, backend: str | Backend = "hf", device: str = "auto",
              dtype: str = "auto") -> Team:
    """Load team `team` from a `Registry` (None: `open_registry()`, i.e. $TEAMTR_REGISTRY or $TEAMTR_HOME): its base, pinned versions and a backend
    (`hf` by default; or an already created backend over the same base)."""
    if registry is None:
        from ..registry import open_registry

        registry = open_registry()
    from .open import team_base

    spec, manifest = registry.team_spec(team), registry.manifest(team)
    base = team_base(registry, team)  # BaseMismatchError when the reference now resolves to another base
    engine = create_backend(backend, base, device=device, dtype=dtype) if isinstance(backend, str) else backend
    pins = {role: pin["id"] for role, pin in manifest["roles"].items()}
    for vid in pins.values():
        engine.ensure_adapter(vid, registry.version_path(vid))
    names = {pin["id"]: pin["name"] for pin in manifest["roles"].values()}
    return Team(spec, pins, engine, base, names)
