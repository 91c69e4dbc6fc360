"""An exact team MDP: n agents speak in turn over one shared context, with tabular softmax policies.

Episode: a prompt x (uniform over `n_prompts`), then agents 0..n-1 each write one message of
`tokens_per_message` tokens from a vocabulary of `vocab` tokens, appended to the shared context; the
return is a function of the final transcript. A token state is the whole context so far, so states form
a tree: the states at token level t are indexed by `x * vocab**t + (the t tokens read as a base-vocab
number)`, and the child of state s under token a is `s * vocab + a`. Each state is visited at most once,
so the occupancy of a state is its reach probability, and occupancies, values, advantages, surrogates and
KLs are computed exactly by sweeping the levels (numpy only).

The acting agent conditions on an observation of the state: the whole context (`window=None`) or the
prompt, the last `window` earlier messages and its own tokens so far (shared tables across histories,
the tabular stand-in for a network that generalises across contexts). gamma = 1 (finite horizon).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Logits = tuple[np.ndarray, ...]          # per token level t: (n_obs(t), vocab)
Mode = Literal["stale", "fresh"]
REWARDS = ("answer", "chain", "vote")


@dataclass(frozen=True)
class TeamMDP:
    """The episode structure and the terminal return of every transcript."""

    n_agents: int
    tokens_per_message: int
    vocab: int
    n_prompts: int
    window: int | None
    reward: np.ndarray = field(repr=False)   # (n_prompts * vocab**horizon,)

    @property
    def horizon(self) -> int:
        return self.n_agents * self.tokens_per_message

    def n_nodes(self, t: int) -> int:
        return self.n_prompts * self.vocab**t

    def levels(self, agent: int) -> range:
        """The token levels at which `agent` acts (its one message)."""
        T = self.tokens_per_message
        return range(agent * T, (agent + 1) * T)

    def visible(self, t: int) -> int:
        """How many of the last context tokens the acting agent sees at level t (besides the prompt)."""
        if self.window is None:
            return t
        return min(t, self.window * self.tokens_per_message + t % self.tokens_per_message)

    def n_obs(self, t: int) -> int:
        return self.n_prompts * self.vocab ** self.visible(t)

    def obs_index(self, t: int) -> np.ndarray:
        """Observation (policy table row) of every state at level t."""
        node = np.arange(self.n_nodes(t))
        k = self.visible(t)
        return (node // self.vocab**t) * self.vocab**k + node % self.vocab**k


@dataclass(frozen=True)
class Analysis:
    """Exact rollout statistics of one team: what infinitely many rollouts of it would measure."""

    probs: tuple[np.ndarray, ...]     # per level, policy table (n_obs, vocab)
    reach: tuple[np.ndarray, ...]     # per level, occupancy of each state (sums to 1 per level)
    adv: tuple[np.ndarray, ...]       # per level, advantage A(s, a) of each state (n_nodes, vocab)
    value: float                      # J = expected return


def rowsum(x: np.ndarray) -> np.ndarray:
    """Sum over the last (small) axis; column adds beat numpy's reduction over a short inner axis."""
    return sum(x[..., k] for k in range(x.shape[-1]))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - np.maximum.reduce([logits[..., k] for k in range(logits.shape[-1])])[..., None])
    return z / rowsum(z)[..., None]


def kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) of each row (strictly positive distributions)."""
    return rowsum(p * (np.log(p) - np.log(q)))


def analyse(mdp: TeamMDP, logits: Logits) -> Analysis:
    """Exact occupancies (forward sweep), values and advantages (backward sweep) of a team."""
    V = mdp.vocab
    probs = tuple(softmax(lg) for lg in logits)
    act = [probs[t][mdp.obs_index(t)] for t in range(mdp.horizon)]       # per state (n_nodes, V)
    reach = [np.full(mdp.n_prompts, 1.0 / mdp.n_prompts)]
    for t in range(mdp.horizon - 1):
        reach.append((reach[t][:, None] * act[t]).reshape(-1))
    value = mdp.reward
    adv: list[np.ndarray] = [np.empty(0)] * mdp.horizon
    for t in reversed(range(mdp.horizon)):
        q = value.reshape(-1, V)
        value = rowsum(act[t] * q)
        adv[t] = q - value[:, None]
    return Analysis(probs, tuple(reach), tuple(adv), float(reach[0] @ value))


def obs_occupancy(mdp: TeamMDP, t: int, data: Analysis) -> np.ndarray:
    """Occupancy of each observation at level t under the team that produced `data`."""
    return np.bincount(mdp.obs_index(t), weights=data.reach[t], minlength=mdp.n_obs(t))


def obs_advantage(mdp: TeamMDP, t: int, data: Analysis) -> np.ndarray:
    """Occupancy-weighted advantage of each (observation, token) at level t: the tabular policy gradient."""
    obs, w = mdp.obs_index(t), data.reach[t]
    d = obs_occupancy(mdp, t, data)
    a = np.stack([np.bincount(obs, weights=w * data.adv[t][:, k], minlength=mdp.n_obs(t))
                  for k in range(mdp.vocab)], axis=1)
    return np.divide(a, d[:, None], out=np.zeros_like(a), where=d[:, None] > 0)


def token_kl(mdp: TeamMDP, agent: int, old: tuple[np.ndarray, ...], new: tuple[np.ndarray, ...],
             data: Analysis) -> float:
    """D_tok = E over the agent's token states under `data`'s team of KL(old(.|s) || new(.|s)).

    `old` and `new` are the agent's policy tables (probabilities), one per level of its message.
    """
    total = 0.0
    for k, t in enumerate(mdp.levels(agent)):
        total += float(obs_occupancy(mdp, t, data) @ kl_rows(old[k], new[k]))
    return total / mdp.tokens_per_message


def surrogate(mdp: TeamMDP, agent: int, new: tuple[np.ndarray, ...], data: Analysis) -> float:
    """L = sum over the agent's token states s ~ d(data) of sum_a new(a|s) A_data(s, a)."""
    total = 0.0
    for k, t in enumerate(mdp.levels(agent)):
        p = new[k][mdp.obs_index(t)]
        total += float(data.reach[t] @ rowsum(p * data.adv[t]))
    return total


def agent_probs(mdp: TeamMDP, logits: Logits, agent: int) -> tuple[np.ndarray, ...]:
    return tuple(softmax(logits[t]) for t in mdp.levels(agent))


def npg_step(mdp: TeamMDP, logits: Logits, agent: int, data: Analysis, delta: float,
             rtol: float = 1e-12) -> tuple[tuple[np.ndarray, ...], float]:
    """Trust-region step for one agent: logits + eta * A_data, with eta set so that D_tok on `data` = delta.

    pi' proportional to pi * exp(eta * A) is the natural-gradient (and KL-regularised) improvement step.
    D_tok(eta) is convex and increasing in eta with derivative E_{pi'}[A] (as E_pi[A] = 0), so Newton's
    method started right of the root converges monotonically. Returns (new logits per level, eta).
    """
    levels = mdp.levels(agent)
    base = tuple(logits[t] for t in levels)
    if delta <= 0:
        return base, 0.0
    grad = tuple(obs_advantage(mdp, t, data) for t in levels)
    weight = tuple(obs_occupancy(mdp, t, data) / mdp.tokens_per_message for t in levels)
    old = tuple(softmax(b) for b in base)

    def kl_and_slope(eta: float) -> tuple[float, float]:
        kl = slope = 0.0
        for b, g, w, p in zip(base, grad, weight, old):
            q = softmax(b + eta * g)
            kl += float(w @ kl_rows(p, q))
            slope += float(w @ rowsum(q * g))
        return kl, slope

    eta = 1.0
    while (ks := kl_and_slope(eta))[0] < delta:
        eta *= 2
        if eta > 1e12:                     # flat advantages: no step reaches the radius
            return base, 0.0
    for _ in range(100):
        kl, slope = ks
        step = (kl - delta) / slope
        eta -= step
        if step <= rtol * eta:
            break
        ks = kl_and_slope(eta)
    return tuple(b + eta * g for b, g in zip(base, grad)), eta


def replace_agent(mdp: TeamMDP, logits: Logits, agent: int, new: tuple[np.ndarray, ...]) -> Logits:
    out = list(logits)
    for k, t in enumerate(mdp.levels(agent)):
        out[t] = new[k]
    return tuple(out)


@dataclass(frozen=True)
class Update:
    """One component update of a stage, measured exactly."""

    agent: int
    surrogate_used: float     # L_i on the data the update was computed from
    surrogate_fresh: float    # L_i on the intermediate team's data (team after updates 1..i-1)
    surrogate_stale: float    # L_i on the stage-start team's data
    improvement: float        # J(team_i) - J(team_{i-1})
    dtok_used: float          # D_tok on the data used (= delta by construction)
    dtok_actual: float        # D_tok on the states of the intermediate team (where the agent acts)
    eta: float

    @property
    def error(self) -> float:
        """Signed surrogate error L_i(used) - true improvement."""
        return self.surrogate_used - self.improvement

    @property
    def gap(self) -> float:
        """Stale gap L_i^fresh - L_i^stale of this update."""
        return self.surrogate_fresh - self.surrogate_stale


@dataclass(frozen=True)
class Stage:
    mode: Mode
    j_start: float
    j_end: float
    updates: tuple[Update, ...]

    @property
    def penalty(self) -> float:
        """Sum of surrogate predictions minus the realised improvement of the stage (signed)."""
        return sum(u.surrogate_used for u in self.updates) - (self.j_end - self.j_start)

    @property
    def abs_error(self) -> float:
        """Sum over updates of |L_i(used) - (J(team_i) - J(team_{i-1}))|."""
        return sum(abs(u.error) for u in self.updates)

    @property
    def abs_gap(self) -> float:
        """Sum over updates of |L_i^fresh - L_i^stale|."""
        return sum(abs(u.gap) for u in self.updates)


def run_stage(mdp: TeamMDP, logits: Logits, delta: float, mode: Mode,
              order: list[int] | None = None) -> Stage:
    """One sequential stage: each agent in `order` takes one trust-region step of radius delta,
    computed from the stage-start team's data (stale) or the intermediate team's data (fresh)."""
    order = list(range(mdp.n_agents)) if order is None else order
    start = current = analyse(mdp, logits)
    updates = []
    for agent in order:
        data = start if mode == "stale" else current
        new_logits, eta = npg_step(mdp, logits, agent, data, delta)
        new = tuple(softmax(x) for x in new_logits)
        old = agent_probs(mdp, logits, agent)
        logits = replace_agent(mdp, logits, agent, new_logits)
        after = analyse(mdp, logits)
        updates.append(Update(
            agent=agent,
            surrogate_used=surrogate(mdp, agent, new, data),
            surrogate_fresh=surrogate(mdp, agent, new, current),
            surrogate_stale=surrogate(mdp, agent, new, start),
            improvement=after.value - current.value,
            dtok_used=token_kl(mdp, agent, old, new, data),
            dtok_actual=token_kl(mdp, agent, old, new, current),
            eta=eta,
        ))
        current = after
    return Stage(mode, start.value, current.value, tuple(updates))


def team_reward(kind: str, n_agents: int, messages: int, n_prompts: int,
                rng: np.random.Generator) -> np.ndarray:
    """Terminal return of every transcript (prompt-major, then the messages in speaking order).

    "answer": 1 if the last message equals a key drawn at random for each (prompt, earlier messages),
        else 0 (a verifier on the final answer; earlier agents matter only through the context);
    "chain": sum over agents of 1[message_k = key(prompt, message_{k-1})] (every agent must answer the
        previous one: homogeneous agents, coupling between neighbours);
    "vote": 1 if a strict majority of the messages equal a key drawn per prompt (global coupling).
    """
    if kind not in REWARDS:
        raise ValueError(f"unknown reward {kind!r}; choose one of {', '.join(REWARDS)}")
    term = np.arange(n_prompts * messages**n_agents)
    prompt = term // messages**n_agents
    msg = [term // messages ** (n_agents - 1 - k) % messages for k in range(n_agents)]
    if kind == "answer":
        key = rng.integers(messages, size=term.size // messages)
        return (msg[-1] == key[term // messages]).astype(float)
    if kind == "chain":
        keys = rng.integers(messages, size=(n_agents, n_prompts, messages))
        prev = [np.zeros_like(term)] + msg[:-1]
        return sum((msg[k] == keys[k][prompt, prev[k]]).astype(float) for k in range(n_agents))
    key = rng.integers(messages, size=n_prompts)[prompt]
    votes = sum((m == key).astype(int) for m in msg)
    return (2 * votes > n_agents).astype(float)


def random_instance(n_agents: int, seed: int | list[int], *, reward: str = "answer", tokens_per_message: int = 2,
                    vocab: int = 2, n_prompts: int = 4, window: int | None = None,
                    logit_scale: float = 1.0) -> tuple[TeamMDP, Logits]:
    """A random team MDP (reward family `reward`, see `team_reward`) and random initial policies
    (logits ~ N(0, logit_scale^2))."""
    rng = np.random.default_rng(seed)
    r = team_reward(reward, n_agents, vocab**tokens_per_message, n_prompts, rng)
    mdp = TeamMDP(n_agents, tokens_per_message, vocab, n_prompts, window, r)
    logits = tuple(logit_scale * rng.standard_normal((mdp.n_obs(t), vocab)) for t in range(mdp.horizon))
    return mdp, logits
