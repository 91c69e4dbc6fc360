"""Play a served team's protocol from plain agent code, through any OpenAI client.

Start the server first (in the vLLM environment):

    teamtr-adapters serve --team math-trio --port 8000

then, from any environment with the `openai` package (an optional dependency: `pip install openai`):

    python examples/openai_team.py --url http://127.0.0.1:8000 --team math-trio "What is 17 + 25?"

Each agent is the model `TEAM/ROLE` (the version the team pins now; `ROLE@vN` pins one version). The
protocol is the team's own (`teamtr_adapters.runtime.protocol`): at each turn the speaking agent reads its
system prompt and one user message holding the problem and every earlier message, and writes one message;
the last message carries the answer. The spec (roles, prompts, budgets, order) is read from the local
registry when teamtr-adapters is installed, else from `--roles` with one shared system prompt.
"""
from __future__ import annotations

import argparse
import json
import sys


def context_text(question: str, turns: list[tuple[str, str]]) -> str:
    """What an agent reads: the problem and the earlier agents' messages (as runtime.protocol.context_text)."""
    text = f"Problem: {question}"
    for role, message in turns:
        text += f"\n\n{role}: {message}"
    return text


def team_roles(team: str, roles: str | None) -> list[dict]:
    """[{name, system_prompt, max_new_tokens}] in speaking order, for every turn of one episode."""
    if roles:
        return [{"name": r, "system_prompt": "", "max_new_tokens": 256} for r in roles.split(",")]
    from teamtr_adapters.registry import Registry

    spec = Registry().team_spec(team)
    order = [spec.roles[t % len(spec.roles)] for t in range(spec.n_turns)]  # round-robin (a random router
    #                                                                         shuffles per episode instead)
    return [{"name": r.name, "system_prompt": r.system_prompt, "max_new_tokens": r.max_new_tokens} for r in order]


def play(client, team: str, question: str, turns_spec: list[dict], *, temperature: float,
         max_tokens: int | None) -> list[tuple[str, str]]:
    turns: list[tuple[str, str]] = []
    for role in turns_spec:
        messages = [{"role": "system", "content": role["system_prompt"]}] if role["system_prompt"] else []
        messages.append({"role": "user", "content": context_text(question, turns)})
        reply = client.chat.completions.create(model=f"{team}/{role['name']}", messages=messages,
                                               temperature=temperature, max_tokens=max_tokens or role["max_new_tokens"])
        turns.append((role["name"], (reply.choices[0].message.content or "").strip()))
    return turns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("question")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="A server started by `teamtr-adapters serve`.")
    p.add_argument("--team", required=True)
    p.add_argument("--roles", help="ROLE,ROLE,... in speaking order (default: the team's spec from the registry).")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, help="Cap every message (default: each role's budget).")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    try:
        from openai import OpenAI
    except ImportError:
        sys.exit("error: this example needs the openai package (pip install openai)")
    client = OpenAI(base_url=a.url.rstrip("/") + "/v1", api_key="unused")
    turns = play(client, a.team, a.question, team_roles(a.team, a.roles), temperature=a.temperature,
                 max_tokens=a.max_tokens)
    if a.json:
        print(json.dumps({"team": a.team, "question": a.question,
                          "turns": [{"role": r, "message": m} for r, m in turns]}))
        return
    for i, (role, message) in enumerate(turns, 1):
        print(f"{i}. {role}: {message}\n")
    print(f"final message: {turns[-1][1] if turns else ''}")


if __name__ == "__main__":
    main()
