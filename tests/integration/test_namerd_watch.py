"""watch=1 streams against a real namerd: first value, changes, silence, heartbeats, cleanup."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from namerd.storage.embedded_redis import find_redis_server

from .namerd_proc import Namerd

pytestmark = pytest.mark.redis

TEXT = {"Content-Type": "application/dtab"}
WAIT_S = 10.0


def ns() -> str:
    return "w" + uuid.uuid4().hex[:10]


class Lines:
    """Reads a watch stream line by line (heartbeat blank lines are counted, not returned)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._it = response.iter_lines()
        self.heartbeats = 0

    def next(self) -> str:
        for line in self._it:
            if line == "":
                self.heartbeats += 1
                continue
            return line
        raise EOFError("stream ended")

    def next_heartbeat(self) -> None:
        for line in self._it:
            if line == "":
                return
            raise AssertionError(f"expected a heartbeat, got {line!r}")
        raise EOFError("stream ended")


@contextlib.contextmanager
def watch(url: str, **params: str) -> Iterator[Lines]:
    with httpx.Client(timeout=httpx.Timeout(WAIT_S)) as client:
        with client.stream("GET", url, params={**params, "watch": "1"}) as r:
            assert r.status_code == 200
            assert r.headers.get("transfer-encoding") == "chunked"
            assert "etag" not in r.headers
            yield Lines(r)


def numsub(nd: Namerd, channel: str) -> int:
    cli = find_redis_server().with_name("redis-cli")
    out = subprocess.run(
        [str(cli), "-s", str(nd.data_dir / "redis.sock"), "pubsub", "numsub", channel],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[1])


def wait_until(cond, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_dtab_watch_first_value_changes_repeats_and_deletion(namerd: Namerd) -> None:
    name = ns()
    url = f"{namerd.api}/api/1/dtabs/{name}"
    httpx.post(url, content="/a=>/b", headers=TEXT)
    with watch(url) as lines:
        assert json.loads(lines.next()) == [{"prefix": "/a", "dst": "/b"}]
        httpx.put(url, content="/a=>/b", headers=TEXT)  # same dtab, new version
        httpx.put(url, content="/a=>/c", headers=TEXT)
        # The same dtab text is a repeat and is dropped; the next line is the real change.
        assert json.loads(lines.next()) == [{"prefix": "/a", "dst": "/c"}]
        httpx.delete(url)
        httpx.post(url, content="/a=>/d", headers=TEXT)
        # Deleted: silent (no line), then the recreated value.
        assert json.loads(lines.next()) == [{"prefix": "/a", "dst": "/d"}]


def test_watch_on_a_missing_namespace_is_200_and_silent_until_created(namerd: Namerd) -> None:
    name = ns()
    url = f"{namerd.api}/api/1/dtabs/{name}"
    with watch(url) as lines:
        lines.next_heartbeat()  # 200, open, nothing but heartbeats
        httpx.post(url, content="/x=>/y", headers=TEXT)
        assert json.loads(lines.next()) == [{"prefix": "/x", "dst": "/y"}]


def test_dtab_watch_text_form(namerd: Namerd) -> None:
    name = ns()
    url = f"{namerd.api}/api/1/dtabs/{name}"
    httpx.post(url, content="/a=>/b;/c=>/d", headers=TEXT)
    with (
        httpx.Client(timeout=WAIT_S) as client,
        client.stream(
            "GET", url, params={"watch": "true"}, headers={"Accept": "application/dtab"}
        ) as r,
    ):
        assert r.headers["content-type"].startswith("application/dtab")
        assert Lines(r).next() == "/a=>/b;/c=>/d"


def test_list_watch(namerd: Namerd) -> None:
    name = ns()
    with watch(f"{namerd.api}/api/1/dtabs") as lines:
        first = json.loads(lines.next())
        assert name not in first
        httpx.post(f"{namerd.api}/api/1/dtabs/{name}", content="/a=>/b", headers=TEXT)
        while name not in json.loads(lines.next()):
            pass


def test_bind_watch_moves_with_the_dtab(namerd: Namerd) -> None:
    name = ns()
    url = f"{namerd.api}/api/1/dtabs/{name}"
    httpx.post(url, content="/svc=>/#/io.l5d.fs", headers=TEXT)
    with watch(f"{namerd.api}/api/1/bind/{name}", path="/svc/users") as lines:
        assert json.loads(lines.next())["bound"]["id"] == "/#/io.l5d.fs/users"
        httpx.put(url, content="/svc/users=>/$/inet/127.0.0.1/7003", headers=TEXT)
        assert json.loads(lines.next())["bound"]["id"] == "/$/inet/127.0.0.1/7003"
        httpx.put(url, content="/svc=>~", headers=TEXT)
        assert json.loads(lines.next()) == {"type": "neg"}


def test_resolve_and_addr_watches(namerd: Namerd) -> None:
    name = ns()
    url = f"{namerd.api}/api/1/dtabs/{name}"
    httpx.post(url, content="/svc=>/$/inet/127.0.0.1/7001", headers=TEXT)
    with watch(f"{namerd.api}/api/1/resolve/{name}", path="/svc") as lines:
        assert json.loads(lines.next())["addrs"][0]["port"] == 7001
        httpx.put(url, content="/svc=>/$/inet/127.0.0.1/7002", headers=TEXT)
        assert json.loads(lines.next())["addrs"][0]["port"] == 7002
    with watch(f"{namerd.api}/api/1/addr/{name}", path="/#/io.l5d.fs/users") as lines:
        assert json.loads(lines.next())["type"] == "bound"


def test_a_bind_error_is_a_json_value_and_the_stream_recovers(namerd: Namerd) -> None:
    name = ns()
    url = f"{namerd.api}/api/1/dtabs/{name}"
    httpx.post(url, content="/s=>/s/x", headers=TEXT)
    with watch(f"{namerd.api}/api/1/bind/{name}", path="/s") as lines:
        err = json.loads(lines.next())
        assert err["type"] == "exception"
        assert "Max recursion level" in err["message"]
        httpx.put(url, content="/s=>/$/inet/127.0.0.1/1", headers=TEXT)
        assert json.loads(lines.next())["bound"]["id"] == "/$/inet/127.0.0.1/1"


def test_idle_streams_get_newline_heartbeats(namerd: Namerd) -> None:
    name = ns()
    url = f"{namerd.api}/api/1/dtabs/{name}"
    httpx.post(url, content="/a=>/b", headers=TEXT)
    with watch(url) as lines:
        lines.next()
        lines.next_heartbeat()
        lines.next_heartbeat()


def test_disconnected_watchers_release_their_subscription(namerd: Namerd) -> None:
    name = ns()
    url = f"{namerd.api}/api/1/dtabs/{name}"
    channel = f"namerd:chan:dtab:{name}"
    httpx.post(url, content="/a=>/b", headers=TEXT)
    streams = []
    for _ in range(4):
        client = httpx.Client(timeout=WAIT_S)
        cm = client.stream("GET", url, params={"watch": "1"})
        r = cm.__enter__()
        reader = Lines(r)  # keep a reference: dropping the iterator closes httpx's stream
        reader.next()
        streams.append((client, cm, reader))
    assert numsub(namerd, channel) >= 1
    for client, cm, _ in streams:
        cm.__exit__(None, None, None)
        client.close()
    # No write happens: the server must notice the disconnects by itself.
    wait_until(lambda: numsub(namerd, channel) == 0, "the subscription to be released")
    wait_until(
        lambda: (
            httpx.get(f"{namerd.admin}/admin/metrics.json").json()["gauges"].get("watches/open", 0)
            == 0
        ),
        "the open-watch gauge to drop to 0",
    )
