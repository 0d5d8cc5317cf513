"""shared.configtree: positions in errors, unknown keys, types, duplicate keys."""

from __future__ import annotations

import pytest
import yaml

from shared.configtree import ConfigError, Section, load_located_yaml

TEXT = """admin:
  port: 9990
routers:
- protocol: http
  dstPrefx: /svc
  servers:
  - port: yes
"""


def test_unknown_key_is_named_with_its_position() -> None:
    root = load_located_yaml(TEXT, "linker.yaml", yaml)
    router = Section(root["routers"][0], "routers[0]")
    router.get("protocol", "http", str)
    with pytest.raises(ConfigError) as info:
        router.done(also_allowed=["servers"])
    assert str(info.value).startswith("linker.yaml:5:3: unknown key 'dstPrefx' in routers[0]")


def test_bool_is_not_an_int_and_the_error_points_at_the_key() -> None:
    root = load_located_yaml(TEXT, "linker.yaml", yaml)
    server = Section(root["routers"][0]["servers"][0], "routers[0].servers[0]")
    with pytest.raises(ConfigError) as info:
        server.get("port", 4140, int)
    assert str(info.value) == "linker.yaml:7:5: routers[0].servers[0].port: expected int, got True"


def test_duplicate_keys_and_bad_yaml_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"x.yaml:2:1: duplicate key 'a'"):
        load_located_yaml("a: 1\na: 2\n", "x.yaml", yaml)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_located_yaml("a: [1,\n", "x.yaml", yaml)


def test_empty_text_is_an_empty_mapping_and_json_works() -> None:
    assert load_located_yaml("", "e.yaml", yaml) == {}
    assert load_located_yaml('{"a": [1, 2]}', "j.json", yaml) == {"a": [1, 2]}


def test_a_package_can_use_its_own_error_class() -> None:
    class MyError(Exception):
        pass

    with pytest.raises(MyError):
        Section({"x": 1}, "top", error=MyError).done()


def test_a_control_character_is_a_config_error_with_its_position() -> None:
    # PyYAML rejects it while constructing the loader, before any parsing.
    with pytest.raises(ConfigError, match=r"^x\.yaml:2:5: not valid YAML: unacceptable character"):
        load_located_yaml("a: 1\nb: x\x1fy\n", "x.yaml", yaml)
