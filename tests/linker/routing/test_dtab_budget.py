"""Request dtabs (``l5d-dtab``) against the work budget of the default interpreter.

The router and a real default interpreter serve real sockets (``serve_listeners``) in front of
a real upstream. Work is counted, never timed: an over-budget ``l5d-dtab`` is a 400 whose
``l5d-err`` names the limit, and a bind never does more than one slice of work in one trio
task step (a ``trio.abc.Instrument`` reads the interpreter's work counter around every step)
while another client's requests go on completing.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import pytest
import trio

from linker.config.model import RouterConfig, ServerConfig
from linker.http.server import ServerLimits, serve_listeners
from linker.http.upstream import PoolLimits, UpstreamPool
from linker.metrics import Metrics
from linker.naming.contract import InterpreterConfigError
from linker.naming.default import DefaultInterpreter
from linker.naming.interpreter import build_interpreter
from linker.routing.identifiers import build_identifier
from linker.routing.policies import RouterPolicies
from linker.routing.router import Router
from shared import REQUEST_DTAB_BUDGET, Dtab
from shared.binding import tree_size

from .test_router import LABEL, upstream


def exponential(levels: int, target: str) -> str:
    """``/n0=>/n1&/n1;...``: 2**levels leaves, ending at ``target``."""
    text = ";".join(f"/n{i}=>/n{i + 1}&/n{i + 1}" for i in range(levels))
    return f"{text};/n{levels}=>{target}"


@asynccontextmanager
async def linker(
    dtab: str, interpreter_config: dict[str, Any] | None = None
) -> AsyncIterator[tuple[int, DefaultInterpreter]]:
    """A router on a real listening socket; its port and its default interpreter."""
    config = RouterConfig(label=LABEL, servers=(ServerConfig(),), dtab=Dtab.read(dtab))
    interpreter = build_interpreter(interpreter_config, config.dtab, ())
    assert isinstance(interpreter, DefaultInterpreter)
    metrics = Metrics()
    pool = UpstreamPool(PoolLimits(connect_timeout_s=5.0))
    policies = RouterPolicies(config, metrics.router(LABEL), rng=random.Random(1))
    router = Router(
        config,
        config.servers[0],
        build_identifier(None, config.dst_prefix),
        interpreter,
        pool,
        policies,
    )
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(interpreter.run)
        await nursery.start(
            lambda task_status: serve_listeners(
                listeners, router.handle, ServerLimits(), shutdown=shutdown, task_status=task_status
            )
        )
        try:
            yield port, interpreter
        finally:
            shutdown.set()
            nursery.cancel_scope.cancel()
            await pool.aclose()


async def get(port: int, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """One GET over a new connection: the status and the response's headers."""
    fields = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        req = f"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n{fields}\r\n"
        await stream.send_all(req.encode("latin-1"))
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    return status, {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:])}


async def test_an_exponential_l5d_dtab_is_a_400_naming_the_limit() -> None:
    async with upstream() as up, linker(f"/svc/web=>{up.inet}") as (port, _):
        dtab = f"/svc/web=>/n0;{exponential(14, up.inet)}"
        status, headers = await get(port, {"l5d-dtab": dtab})
        assert status == 400
        err = unquote(headers["l5d-err"])
        assert f"(limit {REQUEST_DTAB_BUDGET.name}.maxNodes)" in err
        assert "Dtab.local=" in err
        # The router's own dtab still routes; a small override too.
        assert (await get(port))[0] == 200
        assert (await get(port, {"l5d-dtab": f"/svc/web=>/n0;/n0=>{up.inet}"}))[0] == 200
    assert len(up.seen) == 2


class StepWork(trio.abc.Instrument):
    """The most binding work (``interpreter.bind_units``) done within one task step."""

    def __init__(self, interpreter: DefaultInterpreter) -> None:
        self.interpreter = interpreter
        self.before = 0
        self.max_step = 0
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.before = self.interpreter.bind_units

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        done = self.interpreter.bind_units - self.before
        if done:
            self.steps += 1
            self.max_step = max(self.max_step, done)


async def test_other_clients_are_served_between_slices_of_the_worst_dtab() -> None:
    # A request budget 50 times the default: the worst a client can send is far more work
    # than one slice, and the slicing, not the budget, is what keeps the loop responsive.
    budget = {"maxNodes": 50 * REQUEST_DTAB_BUDGET.max_nodes, "maxResultNodes": 100_000}
    async with upstream() as up:
        async with linker(f"/svc/web=>{up.inet}", {"requestDtabBudget": budget}) as (port, it):
            assert (await get(port))[0] == 200  # the plain name is bound and cached
            worst = [
                Dtab.read(f"/svc/web=>/n0;/salt=>/{i};{exponential(24, up.inet)}")
                for i in range(3)  # different dtabs: a cached failure would be no work
            ]
            instrument = StepWork(it)
            trio.lowlevel.add_instrument(instrument)
            plain_during_heavy: list[int] = []
            heavy_done = trio.Event()

            async def heavy() -> None:
                for dtab in worst:
                    status, headers = await get(port, {"l5d-dtab": dtab.show()})
                    assert status == 400, headers
                    assert "requestDtabBudget.maxNodes" in unquote(headers["l5d-err"])
                heavy_done.set()

            async def plain() -> None:
                while not heavy_done.is_set():
                    started = it.bind_units
                    status, _ = await get(port)
                    assert status == 200
                    if it.bind_units > started and not heavy_done.is_set():
                        # Binding work happened while this request was in flight.
                        plain_during_heavy.append(status)

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(heavy)
                    nursery.start_soon(plain)
            finally:
                trio.lowlevel.remove_instrument(instrument)
    slice_units = it.request_budget.slice_units
    # One slice, plus the one lookup step that may cross its end (charged whole).
    step = max(len(d) + sum(tree_size(e.dst) for e in d) + 5 for d in worst)
    assert instrument.max_step <= slice_units + step
    # The worst dtabs did many slices' worth of work, and the plain client was answered
    # again and again in between.
    assert it.bind_units >= 3 * budget["maxNodes"]
    assert instrument.steps >= 3 * budget["maxNodes"] // (slice_units + step)
    assert len(plain_during_heavy) >= 3


def test_budget_keys_are_checked_when_the_interpreter_is_built() -> None:
    it = build_interpreter(
        {"kind": "default", "storedDtabBudget": {"maxNodes": 7}}, Dtab.empty(), ()
    )
    assert isinstance(it, DefaultInterpreter)
    assert it.stored_budget.max_nodes == 7
    with pytest.raises(InterpreterConfigError, match=r"requestDtabBudget\.maxNodes"):
        build_interpreter({"kind": "default", "requestDtabBudget": {"maxNodes": -1}}, Dtab(), ())
    with pytest.raises(InterpreterConfigError, match="maxBytes"):
        build_interpreter({"kind": "default", "requestDtabBudget": {"maxBytes": 1}}, Dtab(), ())
