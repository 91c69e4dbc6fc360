"""TeamSpec parsing and validation."""
from __future__ import annotations

import json
import re

import pytest

from teamtr_adapters.errors import NotFoundError, SpecError
from teamtr_adapters.spec import RoleSpec, builtin_templates, load_spec, parse_spec


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


# -- issue 13, failure 8 ---------------------------------------------------------------------------------------
ROLE = "\n[[roles]]\nname = 'a'\n"


@pytest.mark.parametrize("name", ["x\n", "solver\n", "a\nb"])
def test_names_with_a_trailing_newline_are_refused(name):
    from teamtr_adapters.errors import InvalidNameError
    from teamtr_adapters.spec import check_name

    with pytest.raises(InvalidNameError):
        check_name(name, "role name")
    with pytest.raises(InvalidNameError, match="invalid role name"):
        parse_spec(f"name = 'x'\n[[roles]]\nname = {json.dumps(name)}\n")


@pytest.mark.parametrize("value, where", [
    ("1979-05-27T07:32:00Z", "task.params.when"), ("1979-05-27", "task.params.when"), ("07:32:00", "task.params.when"),
    ("[1, 1979-05-27]", "task.params.when[1]"), ("{ inner = 07:32:00 }", "task.params.when.inner"),
    ("nan", "task.params.when"), ("-inf", "task.params.when"),
])
def test_params_that_json_cannot_hold_are_refused_with_the_key(value, where):
    with pytest.raises(SpecError, match=re.escape(where)):
        parse_spec(f"name = 'x'\n[task]\nparams = {{ when = {value} }}" + ROLE)


@pytest.mark.parametrize("text", ["emoji \U0001f600 and \U00010000", "quote \" backslash \\ tab \t", "\x7f\x1f"])
def test_text_beyond_the_bmp_and_control_characters_round_trip(text):
    spec = parse_spec("name = 'x'" + ROLE).replace(roles=(RoleSpec("a", system_prompt=text),))
    assert parse_spec(spec.to_toml()) == spec
    assert "\\ud83d" not in spec.to_toml()


def test_non_finite_numbers_are_refused_everywhere():
    with pytest.raises(SpecError, match="trust_region.delta"):
        parse_spec("name = 'x'\n[trust_region]\ndelta = inf" + ROLE)
