"""Where config errors point: characters inside values, keys named by builders, directories.

The corpus (tests/integration/test_config_corpus.py) checks whole messages; these pin the rules
of ``shared.configtree`` the loader relies on for them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from linker.config.load import parse_config, router_interpreter
from linker.naming.namerd import NamerdHttpInterpreter
from shared.configtree import Pos, Section, directory_problem, load_located_yaml, locate

TEXT = """\
a:
  plain: /svc => /b;
  quoted: '/svc => /c;'
  block: |
    /svc => /#/io.l5d.fs;
    /svc/x => /y;
  folded: >
    /svc => /d;
  env: ${VALUE:-/svc => /e;}
  nested: {lb: {kind: p2c}, configs: [{prefix: /a}, {prefix: /b, keep: 1}]}
"""


def section() -> Section:
    root = load_located_yaml(TEXT, "f.yaml", yaml, env={})
    return Section(root["a"], "a")


@pytest.mark.parametrize(
    ("key", "needle", "expected"),
    [
        ("plain", "/b", Pos("f.yaml", 2, 18)),
        ("quoted", "/c", Pos("f.yaml", 3, 20)),
        # Literal blocks map line by line: the second dentry's destination.
        ("block", "/y", Pos("f.yaml", 6, 15)),
        # Folded and ${VAR}-expanded text has no exact mapping: the key's position.
        ("folded", "/d", Pos("f.yaml", 7, 3)),
        ("env", "/e", Pos("f.yaml", 9, 3)),
    ],
)
def test_text_positions(key: str, needle: str, expected: Pos) -> None:
    sec = section()
    value = sec.value[key]
    assert sec.text_pos(key, value.index(needle)) == expected


def test_locate_follows_the_path_a_message_names() -> None:
    nested = section().value["nested"]
    assert locate(nested, "lb.kind: unknown kind 'x'") == Pos("f.yaml", 10, 17)
    assert locate(nested, "r[0].client.configs[1].prefix: bad") == Pos("f.yaml", 10, 54)
    # After the path, a key of what it reached that the message names.
    assert locate(nested, "configs[1]: unknown key 'keep'") == Pos("f.yaml", 10, 66)
    assert locate(nested, "nothing here names a key") is None


def test_directory_problems(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    assert directory_problem(tmp_path) is None
    assert directory_problem(tmp_path / "missing") == "does not exist"
    assert directory_problem(tmp_path / "f") == "is not a directory"


def test_the_loader_builds_what_a_worker_builds() -> None:
    raw = load_located_yaml(
        "routers:\n- protocol: http\n  label: edge\n  bindingTimeoutMs: 2500\n"
        "  interpreter:\n    kind: io.l5d.namerd.http\n    experimental: true\n"
        "    dst: /$/inet/127.0.0.1/4180 | /$/inet/127.0.0.2/4180\n    namespace: prod\n"
        "  streamingEnabled: true\n  servers:\n  - port: 4141\n  - ip: 127.0.0.2\n",
        "linker.yaml",
        yaml,
    )
    config = parse_config(raw, "linker.yaml", workers=1)
    router = config.routers[0]
    interpreter = router_interpreter(router, config.namers)
    assert isinstance(interpreter, NamerdHttpInterpreter)
    assert interpreter.client.dst == [("127.0.0.1", 4180), ("127.0.0.2", 4180)]
    assert interpreter.client.namespace == "prod"
    assert interpreter.bind_timeout_s == 2.5
    assert interpreter.last_known_name == "edge"
    # Where a "cannot listen" error points: the port written, or nothing for a default.
    assert [s.listen_pos for s in router.servers] == ["linker.yaml:12:5", ""]
    assert config.admin.listen_pos == ""
