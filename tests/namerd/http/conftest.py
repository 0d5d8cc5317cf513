"""namerd's API in-process: the real ASGI app and Runtime against a real redis-server.

``serve(config_yaml)`` builds the app exactly as a gunicorn worker does (``create_app``), runs
its startup (Redis connections, namers) and yields an httpx client that talks to it through
ASGI, with no sockets and no subprocess. Each test gets its own redis-server, so tests cannot
see each other's dtabs. The subprocess tests in tests/integration cover gunicorn, signals and
the wire; these cover the resources.

pytest runs in trio mode and the app is asyncio, so each test is a plain function that calls
``asyncio.run()`` on its scenario.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest

from namerd.app import NamerdASGI, create_app
from namerd.config import NamerdConfig, load_config

#: Upper bound for one request; it only limits how long a broken test hangs.
REQUEST_TIMEOUT_S = 10.0

Serve = Callable[[str], AbstractAsyncContextManager[httpx.AsyncClient]]


@contextlib.asynccontextmanager
async def started(
    config: NamerdConfig, redis_url: str
) -> AsyncIterator[tuple[NamerdASGI, httpx.AsyncClient]]:
    """A started namerd app of ``config`` and an API client of it; shut down on exit."""
    app = create_app(config, redis_url)
    await app.startup()
    try:
        # Port 80 is not the admin port, so NamerdASGI routes requests to the API.
        # NamerdASGI types its scope as Falcon does (dict, what servers pass); httpx's
        # protocol says MutableMapping.
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", timeout=REQUEST_TIMEOUT_S
        ) as client:
            yield app, client
    finally:
        await app.shutdown()


@pytest.fixture
def serve(redis_url: str, tmp_path: Path) -> Serve:
    """``async with serve(config_yaml) as api:`` -> a client of a started namerd API."""

    @contextlib.asynccontextmanager
    async def running(config_yaml: str = "") -> AsyncIterator[httpx.AsyncClient]:
        path = tmp_path / "namerd.yaml"
        path.write_text(config_yaml, encoding="utf-8")
        config = load_config(str(path) if config_yaml else None)
        async with started(config, redis_url) as (_, client):
            yield client

    return running
