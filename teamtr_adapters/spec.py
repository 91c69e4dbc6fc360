"""TeamSpec: a team's roles, protocol, task, sampling, LoRA config and trust region, parsed from TOML
and validated. Pure Python: no torch, no I/O beyond reading the TOML text."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from .errors import SpecError, InvalidNameError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # always with fullmatch: `$` would accept "x\n"
EMBEDDED_BASE = "embedded"


def check_name(name: str, what: str = "name") -> str:
    """Return `name` if it is a safe registry name (letters, digits, `_`, `-`); raise otherwise."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid {what} {name!r}: use letters, digits, '_' and '-' (no '/', '..', spaces or paths)"
        )
    return name


@dataclass(frozen=True)
class RoleSpec:
    """One agent: its name, system prompt and message budget."""

    name: str
    system_prompt: str = ""
    max_new_tokens: int = 96


@dataclass(frozen=True)
class ProtocolSpec:
    """Who speaks when: `round-robin` (speaking order) or `random` (a seeded order per episode)."""

    router: str = "round-robin"
    turns: int = 0  # 0 means one turn per role


@dataclass(frozen=True)
class TaskSpec:
    """The task generator or dataset and its parameters (see `teamtr_adapters.tasks`)."""

    name: str = "arithmetic"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SamplingSpec:
    temperature: float = 0.8
    top_p: float = 1.0


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrustRegionSpec:
    """TeamTR defaults (TEAMTR.md): delta 0.01, PPO eps 0.2, A_clip 5, G in 4..8."""

    delta: float = 0.01
    beta0: float = 0.1
    clip_eps: float = 0.2
    adv_clip: float = 5.0
    group_size: int = 4
    prompts_per_update: int = 8
    ratio: str = "token"  # token | seq-product | seq-geomean
    lr: float = 1e-4
    max_backtracks: int = 4


@dataclass(frozen=True)
class TeamSpec:
    name: str
    roles: tuple[RoleSpec, ...]
    base: str = EMBEDDED_BASE
    protocol: ProtocolSpec = field(default_factory=ProtocolSpec)
    task: TaskSpec = field(default_factory=TaskSpec)
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)
    trust_region: TrustRegionSpec = field(default_factory=TrustRegionSpec)

    @property
    def role_names(self) -> list[str]:
        return [r.name for r in self.roles]

    @property
    def n_turns(self) -> int:
        return self.protocol.turns or len(self.roles)

    def role(self, name: str) -> RoleSpec:
        for r in self.roles:
            if r.name == name:
                return r
        from .errors import NotFoundError

        raise NotFoundError(f"team {self.name!r} has no role {name!r} (roles: {', '.join(self.role_names)})")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lora"]["target_modules"] = list(self.lora.target_modules)
        d["roles"] = [dataclasses.asdict(r) for r in self.roles]
        return d

    def to_toml(self) -> str:
        """The spec as TOML (tomli-w); `parse_spec(spec.to_toml()) == spec`."""
        return tomli_w.dumps(self.to_dict())

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON form: equal specs hash equal whatever their TOML layout."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def replace(self, **changes: Any) -> "TeamSpec":
        return dataclasses.replace(self, **changes)


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a TOML table, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise SpecError(f"[{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(f"unknown key {unknown[0]!r} in [{where}] (allowed: {', '.join(fields)})")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(value, _default(fields[key]), f"{where}.{key}")
    return cls(**kwargs)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "" if f.type in (str, "str") else None


def _coerce(value: Any, default: Any, where: str) -> Any:
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
        if ok:
            _check_plain(value, where)
    else:
        ok = True
    if not ok:
        raise SpecError(f"{where} must be {type(default).__name__.replace('tuple', 'list of strings')}, got {value!r}")
    return value


def _check_plain(value: Any, where: str) -> None:
    """Refuse what JSON cannot hold (a TOML date or time, nan, inf), naming the key: specs are hashed and
    stored as JSON too, so a value that only TOML can hold would be accepted and then fail to be written."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{where} must be a finite number, got {value!r}")
    elif not isinstance(value, (str, int, float, bool)):
        raise SpecError(f"{where} must be a string, number, boolean, array or table, got a TOML "
                        f"{type(value).__name__} ({value})")


def _role(data: Any, i: int) -> RoleSpec:
    if not isinstance(data, dict) or "name" not in data:
        raise SpecError(f"roles[{i}] must be a table with a 'name'")
    role = _build(RoleSpec, data, f"roles[{i}]")
    check_name(role.name, "role name")
    if not isinstance(role.system_prompt, str):
        raise SpecError(f"roles[{i}].system_prompt must be a string")
    if not isinstance(role.max_new_tokens, int) or not 1 <= role.max_new_tokens <= 4096:
        raise SpecError(f"roles[{i}].max_new_tokens must be an integer in 1..4096")
    return role


def spec_from_dict(data: dict[str, Any]) -> TeamSpec:
    """Validate a parsed TOML document into a TeamSpec (raises `SpecError`)."""
    allowed = {f.name for f in dataclasses.fields(TeamSpec)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"unknown key {unknown[0]!r} at top level (allowed: {', '.join(sorted(allowed))})")
    if "name" not in data:
        raise SpecError("missing key 'name'")
    name = check_name(data["name"], "team name") if isinstance(data["name"], str) else check_name(str(data["name"]))
    roles_data = data.get("roles")
    if not isinstance(roles_data, list) or not roles_data:
        raise SpecError("'roles' must be a non-empty array of tables ([[roles]])")
    roles = tuple(_role(r, i) for i, r in enumerate(roles_data))
    names = [r.name for r in roles]
    if len(set(names)) != len(names):
        raise SpecError(f"duplicate role names: {names}")
    base = data.get("base", EMBEDDED_BASE)
    if not isinstance(base, str) or not base:
        raise SpecError("'base' must be a non-empty string")
    spec = TeamSpec(
        name=name,
        roles=roles,
        base=base,
        protocol=_build(ProtocolSpec, data.get("protocol", {}), "protocol"),
        task=_build(TaskSpec, data.get("task", {}), "task"),
        sampling=_build(SamplingSpec, data.get("sampling", {}), "sampling"),
        lora=_build(LoraSpec, data.get("lora", {}), "lora"),
        trust_region=_build(TrustRegionSpec, data.get("trust_region", {}), "trust_region"),
    )
    _validate(spec)
    return spec


def _validate(s: TeamSpec) -> None:
    checks = [
        (s.protocol.router in ("round-robin", "random"), "protocol.router must be 'round-robin' or 'random'"),
        (0 <= s.protocol.turns <= 64, "protocol.turns must be in 0..64 (0 = one turn per role)"),
        (0.0 <= s.sampling.temperature <= 5.0, "sampling.temperature must be in [0, 5]"),
        (0.0 < s.sampling.top_p <= 1.0, "sampling.top_p must be in (0, 1]"),
        (1 <= s.lora.rank <= 1024, "lora.rank must be in 1..1024"),
        (s.lora.alpha > 0, "lora.alpha must be positive"),
        (0.0 <= s.lora.dropout < 1.0, "lora.dropout must be in [0, 1)"),
        (len(s.lora.target_modules) > 0, "lora.target_modules must not be empty"),
        (0.0 < s.trust_region.delta, "trust_region.delta must be positive"),
        (0.0 <= s.trust_region.beta0, "trust_region.beta0 must be >= 0"),
        (0.0 < s.trust_region.clip_eps < 1.0, "trust_region.clip_eps must be in (0, 1)"),
        (0.0 < s.trust_region.adv_clip, "trust_region.adv_clip must be positive"),
        (2 <= s.trust_region.group_size <= 256, "trust_region.group_size must be in 2..256"),
        (1 <= s.trust_region.prompts_per_update <= 4096, "trust_region.prompts_per_update must be >= 1"),
        (s.trust_region.ratio in ("token", "seq-product", "seq-geomean"),
         "trust_region.ratio must be 'token', 'seq-product' or 'seq-geomean'"),
        (0.0 < s.trust_region.lr < 1.0, "trust_region.lr must be in (0, 1)"),
        (0 <= s.trust_region.max_backtracks <= 32, "trust_region.max_backtracks must be in 0..32"),
    ]
    for ok, msg in checks:
        if not ok:
            raise SpecError(msg)


def parse_spec(text: str, source: str = "<spec>") -> TeamSpec:
    """Parse TOML text into a validated TeamSpec."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{source}: malformed TOML: {e}") from None
    except RecursionError:
        raise SpecError(f"{source}: arrays or tables nested too deep") from None
    try:
        return spec_from_dict(data)
    except SpecError as e:
        raise SpecError(f"{source}: {e}") from None
    except RecursionError:
        raise SpecError(f"{source}: task.params nested too deep") from None


def builtin_templates() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("teamtr_adapters.teams").iterdir() if p.name.endswith(".toml"))


def load_spec(ref: str | Path) -> TeamSpec:
    """Load a spec from a TOML file path or a built-in template name (e.g. `math-trio`)."""
    path = Path(ref)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SpecError(f"no spec file at {path}")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise SpecError(f"{path}: not a UTF-8 text file (byte {e.start} is {e.object[e.start]:#04x})") from None
        except OSError as e:
            raise SpecError(f"{path}: cannot be read ({e.strerror or e})") from None
        return parse_spec(text, str(path))
    if str(ref) in builtin_templates():
        text = resources.files("teamtr_adapters.teams").joinpath(f"{ref}.toml").read_text()
        return parse_spec(text, f"template {ref}")
    from .errors import NotFoundError

    raise NotFoundError(f"no template or spec file {str(ref)!r} (templates: {', '.join(builtin_templates())})")

