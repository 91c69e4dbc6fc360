"""TeamSpec parsing and validation."""
from __future__ import annotations

import pytest

from teamtr_adapters.errors import NotFoundError, SpecError
from teamtr_adapters.spec import builtin_templates, load_spec, parse_spec


def test_math_trio_template_round_trips_through_toml():
    spec = load_spec("math-trio")
    assert "math-trio" in builtin_templates()
    assert spec.role_names == ["solver", "critic", "refiner"] and spec.n_turns == 3
    assert spec.trust_region.delta == 0.01 and spec.sampling.temperature == 0.8
    again = parse_spec(spec.to_toml())
    assert again == spec and again.spec_hash() == spec.spec_hash()


def test_defaults_fill_missing_tables():
    spec = parse_spec("name = 'duo'\n[[roles]]\nname = 'a'\n[[roles]]\nname = 'b'\n")
    assert spec.protocol.router == "round-robin" and spec.lora.rank == 8 and spec.base == "embedded"


@pytest.mark.parametrize("body, message", [
    ("name = 'x'\n", "'roles' must be a non-empty array"),
    ("name = 'x'\n[[roles]]\nname = 'a'\n[[roles]]\nname = 'a'\n", "duplicate role names"),
    ("name = 'x'\n[protocol]\nrouter = 'chaos'\n[[roles]]\nname = 'a'\n", "protocol.router"),
    ("name = 'x'\n[lora]\ntarget_modules = 'q_proj'\n[[roles]]\nname = 'a'\n", "list of strings"),
    ("name = 'x'\n[trust_region]\nratio = 'magic'\n[[roles]]\nname = 'a'\n", "trust_region.ratio"),
    ("[[roles]]\nname = 'a'\n", "missing key 'name'"),
])
def test_invalid_specs_name_the_problem(body, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(body)


def test_unknown_template():
    with pytest.raises(NotFoundError, match="templates: math-trio"):
        load_spec("nonexistent")
