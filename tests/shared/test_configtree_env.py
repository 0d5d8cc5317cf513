"""shared.configtree: ``${VAR}`` / ``${VAR:-default}`` expansion in config values."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.configtree import ConfigError, LocatedDict, LocatedList, expand_env, load_located_yaml

ENV = {"PORT": "4141", "HOST": "namerd-2", "EMPTY": "", "YES": "true", "RATIO": "0.25"}


def load(text: str, env: dict[str, str] | None = ENV) -> Any:
    return load_located_yaml(text, "c.yaml", yaml, env=env)


def test_plain_scalars_get_their_type_after_substitution() -> None:
    root = load(
        "port: ${PORT}\nratio: ${RATIO}\nclear: ${YES}\nhost: ${HOST}\n"
        "dflt: ${UNSET:-4140}\nnothing: ${EMPTY}\n"
    )
    assert root == {
        "port": 4141,
        "ratio": 0.25,
        "clear": True,
        "host": "namerd-2",
        "dflt": 4140,
        "nothing": None,  # an empty plain scalar is YAML's null, as if the line said `nothing:`
    }
    assert type(root["port"]) is int
    assert type(root["clear"]) is bool


def test_quoted_block_and_explicitly_tagged_scalars_stay_what_they_say() -> None:
    root = load(
        "a: '${PORT}'\nb: \"${PORT}\"\nc: |\n  ${PORT}\nd: !!str ${PORT}\ne: !!int '${PORT}'\n"
    )
    assert root == {"a": "4141", "b": "4141", "c": "4141\n", "d": "4141", "e": 4141}


def test_defaults_apply_when_unset_or_empty() -> None:
    root = load(
        "a: ${UNSET:-x}\nb: ${EMPTY:-y}\nc: ${HOST:-z}\nd: ${UNSET:-}\ne: ${UNSET:-a:-b c}\n"
    )
    assert root == {"a": "x", "b": "y", "c": "namerd-2", "d": None, "e": "a:-b c"}


def test_text_around_variables_and_dtab_dollars_are_kept() -> None:
    root = load("dst: /$/inet/${HOST}/${PORT:-4180}\ndtab: /svc => /$/inet/${HOST}/80;\n")
    assert root == {"dst": "/$/inet/namerd-2/4141", "dtab": "/svc => /$/inet/namerd-2/80;"}


def test_double_dollar_escapes_a_dollar() -> None:
    root = load("a: $${PORT}\nb: cost $$5\nc: $$$${PORT}\nd: $$${PORT}\n")
    assert root == {"a": "${PORT}", "b": "cost $5", "c": "$${PORT}", "d": "$4141"}


def test_a_value_cannot_inject_structure_or_expand_again() -> None:
    env = {"V": "[1, 2]", "M": "{a: 1}", "R": "${PORT}", "C": "x # not a comment"}
    root = load("v: ${V}\nm: ${M}\nr: ${R}\nc: ${C}\n", env)
    assert root == {"v": "[1, 2]", "m": "{a: 1}", "r": "${PORT}", "c": "x # not a comment"}


def test_keys_are_not_expanded_but_lists_and_nested_values_are() -> None:
    root = load("${PORT}: 1\nlist:\n- ${PORT}\n- {a: '${HOST}'}\n")
    assert root == {"${PORT}": 1, "list": [4141, {"a": "namerd-2"}]}


def test_positions_are_those_of_the_file() -> None:
    root = load("admin:\n  port: ${PORT}\nroutes:\n- ${HOST}\n")
    assert str(root["admin"].key_pos["port"]) == "c.yaml:2:3"
    assert str(root["routes"].item_pos[0]) == "c.yaml:4:3"


def test_an_unset_variable_is_an_error_naming_it_and_where_it_is() -> None:
    with pytest.raises(ConfigError) as info:
        load("admin:\n  port: ${ADMIN_PORT}\n")
    assert str(info.value).startswith("c.yaml:2:9: environment variable ADMIN_PORT is not set")
    # The column is the `$` of the reference, in plain and quoted scalars alike.
    with pytest.raises(ConfigError, match=r"^c\.yaml:1:22: environment variable NOPE "):
        load("dst: /$/inet/${HOST}/${NOPE}\n")
    with pytest.raises(ConfigError, match=r"^c\.yaml:1:8: environment variable NOPE "):
        load("a: 'xx ${NOPE}'\n")
    # Where escapes or folding hide the offset, the error points at the scalar.
    with pytest.raises(ConfigError, match=r"^c\.yaml:1:4: environment variable NOPE "):
        load('a: "\\t${NOPE}"\n')


def test_malformed_references_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"^c\.yaml:1:4: unterminated \$\{"):
        load("a: ${PORT\n")
    with pytest.raises(ConfigError, match=r"^c\.yaml:1:6: invalid variable reference \$\{1A\}"):
        load("a: x ${1A}\n")
    with pytest.raises(ConfigError, match=r"invalid variable reference \$\{\}"):
        load("a: ${}\n")


def test_errors_use_the_callers_error_class() -> None:
    class MyError(Exception):
        pass

    with pytest.raises(MyError, match="environment variable NOPE is not set"):
        load_located_yaml("a: ${NOPE}\n", "c.yaml", yaml, error=MyError, env={})


def test_without_env_nothing_is_expanded() -> None:
    assert load("a: ${PORT}\nb: $$\n", env=None) == {"a": "${PORT}", "b": "$$"}


def test_expand_env_on_its_own() -> None:
    assert expand_env("${A}-${B:-b}-$$-$x-$", {"A": "a"}) == "a-b-$-$x-$"
    with pytest.raises(ValueError, match="environment variable B is not set"):
        expand_env("${B}", {})


# -- properties ------------------------------------------------------------------------------


def shape(value: Any) -> Any:
    """Value, exact types and every recorded position, for comparing two loads."""
    if isinstance(value, LocatedDict):
        items = [(k, shape(v), value.key_pos[k]) for k, v in value.items()]
        return ("dict", value.pos, items)
    if isinstance(value, LocatedList):
        return ("list", value.pos, [shape(v) for v in value], list(value.item_pos))
    return (type(value).__name__, repr(value))


def outcome(text: str, env: dict[str, str] | None) -> Any:
    try:
        return shape(load(text, env))
    except ConfigError as err:
        return ("error", str(err))


no_dollar = st.text(st.characters(blacklist_characters="$", blacklist_categories=("Cs",)))
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | no_dollar.filter(lambda s: len(s) < 20)
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(no_dollar.filter(lambda s: len(s) < 10), inner, max_size=4)
    ),
    max_leaves=12,
)
envs = st.dictionaries(st.from_regex(r"[A-Z_]{1,4}", fullmatch=True), no_dollar, max_size=3)


@settings(max_examples=300, deadline=None, database=None)
@given(doc=documents, flow=st.sampled_from([None, True, False]), env=envs)
def test_yaml_without_dollar_loads_identically_with_and_without_env(
    doc: Any, flow: bool | None, env: dict[str, str]
) -> None:
    text = yaml.safe_dump({"root": doc}, default_flow_style=flow, allow_unicode=True)
    if "$" in text:
        return  # safe_dump escapes nothing into `$`, but stay honest if it ever does
    assert outcome(text, env) == outcome(text, None)


@settings(max_examples=300, deadline=None, database=None)
@given(text=no_dollar, env=envs)
def test_any_text_without_dollar_has_the_same_outcome_with_and_without_env(
    text: str, env: dict[str, str]
) -> None:
    # Arbitrary text: mostly not YAML or not a mapping; the same value or the same error.
    assert outcome(text, env) == outcome(text, None)


@settings(max_examples=200, deadline=None, database=None)
@given(
    value=st.integers().map(str)
    | st.sampled_from(["true", "false", "null", "1.5", "-0.25", "namerd", "/$/inet/h/1"])
)
def test_a_substituted_plain_scalar_loads_like_the_value_written_in_place(value: str) -> None:
    assert load("a: ${V}\n", {"V": value}) == load(f"a: {value}\n", None)
