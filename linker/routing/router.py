"""One router's request path: identify, bind (with per-request dtabs), pick an endpoint, proxy.

:meth:`Router.handle` serves one request that came in on one server of the router:

1.  clearContext and maxCallDepth (the server's own settings), then the request's dtab
    overrides (``l5d-ctx-dtab``, ``l5d-dtab``) and its name (the router's identifier);
2.  bind the name with the interpreter, and choose a bound name from the tree
    (:func:`pick_bound`: union weights, the first live branch of an alt);
3.  rebuild the head for the next hop (hop-by-hop fields out, ``Via``, ``l5d-dst-*``, one
    ``l5d-ctx-dtab``, ``l5d-reqid``, ``l5d-ctx-deadline``);
4.  send it to an endpoint the bound name's balancer picks, retrying what the service's
    classifier and retry budget allow within the total timeout.  Balancers, failure accrual and
    budgets are the router's (:class:`~linker.routing.policies.RouterPolicies`), shared by all
    of its servers.

Everything a user sees when routing fails is decided here, once: the status (400/502/503, as
Linkerd), an ``l5d-err`` header and a body that say which name was tried, with which dtab, and
why it failed, plus where to look next (``/delegator.json``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from http import HTTPStatus
from urllib.parse import quote

import trio

from linker.config.model import RouterConfig, ServerConfig
from linker.errors import (
    BadDtabHeader,
    BindingFailed,
    ConnectFailed,
    DtabOverBudget,
    LinkerError,
    LoopDetected,
    NoEndpoints,
    NoNameIdentified,
    UpstreamProtocolError,
    UpstreamTimeout,
    error_response,
    listing,
)
from linker.http import hop
from linker.http.messages import Request, Response, bytes_body
from linker.http.upstream import UpstreamPool
from linker.metrics import Counter, Scope
from linker.naming.contract import (
    BindBudgetExceeded,
    Destination,
    Interpreter,
    InterpreterError,
)
from linker.policy.balancer import Balancer
from linker.policy.classify import ResponseClass
from linker.routing.deadline import (
    DEADLINE_HEADER,
    effective_timeout_s,
    format_deadline,
    parse_deadline_headers,
)
from linker.routing.identifiers import Identifier
from linker.routing.policies import RouterPolicies, ServicePolicy
from shared import (
    AddrBound,
    AddrFailed,
    AddrPending,
    Alt,
    Bound,
    Dtab,
    DtabParseError,
    Empty,
    Fail,
    Leaf,
    NameTree,
    Neg,
    Path,
    Union,
)

__all__ = ["Router", "pick_bound"]

#: Extra time the router allows past bindingTimeoutMs before giving up on the interpreter.
BACKSTOP_S = 1.0

_CTX_DTAB = b"l5d-ctx-dtab"
_USER_DTAB = b"l5d-dtab"
_DTAB_HEADERS = frozenset({_CTX_DTAB, _USER_DTAB})  # replaced by one l5d-ctx-dtab upstream


def _live(tree: NameTree[Bound], dest: Destination) -> bool:
    """True if some leaf under ``tree`` has at least one address."""
    if isinstance(tree, Leaf):
        addr = dest.addrs.get(tree.value.id)
        return isinstance(addr, AddrBound) and bool(addr.addrs)
    if isinstance(tree, Alt):
        return any(_live(t, dest) for t in tree.trees)
    if isinstance(tree, Union):
        return any(_live(w.tree, dest) for w in tree.weighted)
    return False


def pick_bound(dest: Destination, rng: random.Random) -> Bound | None:
    """Choose a bound name by union weights, skipping branches with no live endpoints."""
    tree = dest.tree
    while True:
        if isinstance(tree, Leaf):
            break
        if isinstance(tree, Alt):
            live = [t for t in tree.trees if _live(t, dest)]
            if not live:
                return None
            tree = live[0]
        elif isinstance(tree, Union):
            live_w = [w for w in tree.weighted if _live(w.tree, dest)]
            if not live_w:
                return None
            total = sum(max(w.weight, 0.0) for w in live_w)
            if total <= 0:
                tree = rng.choice(live_w).tree
            else:
                x = rng.uniform(0, total)
                for w in live_w:
                    x -= max(w.weight, 0.0)
                    if x <= 0:
                        tree = w.tree
                        break
                else:
                    tree = live_w[-1].tree
        else:
            return None
    bound: Bound = tree.value
    addr = dest.addrs.get(bound.id)
    if not isinstance(addr, AddrBound) or not addr.addrs:
        return None
    return bound


def _status_counter(cache: dict[int, Counter], scope: Scope, status: int) -> Counter:
    """The ``status/<N>XX`` counter of ``scope`` for ``status``, kept in ``cache``."""
    klass = status // 100
    counter = cache.get(klass)
    if counter is None:
        counter = cache[klass] = scope.counter(f"status/{klass}XX")
    return counter


async def _discard(resp: Response) -> None:
    """Drop a response we will not forward (its connection goes back to the pool only if the
    response had already arrived whole, else it is closed)."""
    aclose = getattr(resp.body, "aclose", None)
    if aclose is not None:
        await aclose()


def _status_line(resp: Response) -> str:
    """``500 Internal Server Error``: the status and its reason (the standard one if none)."""
    reason = resp.reason.decode("latin-1").strip() if resp.reason else ""
    if not reason:
        try:
            reason = HTTPStatus(resp.status).phrase
        except ValueError:
            reason = ""
    return f"{resp.status} {reason}".rstrip()


def _no_live_endpoint(
    bal: Balancer,
    now_s: float,
    client: str,
    service: str,
    tried: dict[str, str],
    last: LinkerError | None,
) -> LinkerError:
    """The error for a request that has no endpoint left to try, naming each with its cause.

    If this request failed on some endpoints, the answer is about those: the last one's cause
    first (``connection refused by 127.0.0.1:9``), with that error's status; otherwise every
    endpoint was already marked dead, and each is listed with its last error and its age.
    """
    states = bal.endpoints(now_s)
    if tried:
        addr, cause = list(tried.items())[-1]
        others = [f"{a} ({c})" for a, c in list(tried.items())[:-1]]
        also = f": also {listing(others)}" if others else ""
        message = (
            f"{cause} by {addr} (tried {len(tried)} of {len(states)} endpoints of {client} "
            f"for {service}{also})"
        )
        if last is None:
            return NoEndpoints(message + "; failure accrual has no live endpoint left to try.")
        return type(last)(message + ".", cause=last.cause)
    dead = [s.describe() for s in states]
    return NoEndpoints(
        f"all {len(states)} endpoints of {client} (for {service}) are marked dead by failure "
        f"accrual: {listing(dead)}; they are probed again after a backoff."
    )


def _why_no_endpoints(path: Path, dest: Destination) -> str:
    tree = dest.tree
    if isinstance(tree, Leaf):
        addr = dest.addrs.get(tree.value.id)
        if isinstance(addr, AddrFailed):
            return f"resolving {tree.value.id.show()} failed: {addr.cause}"
        if isinstance(addr, AddrPending):
            return f"the addresses of {tree.value.id.show()} are still being resolved"
        return f"{tree.value.id.show()} has no endpoints"
    if isinstance(tree, Neg):
        return "no dtab entry (and no namer) matched it (~)"
    if isinstance(tree, Fail):
        return "the dtab says it must fail (!)"
    if isinstance(tree, Empty):
        return "it exists but has no endpoints ($)"
    return "none of its branches has endpoints"


class Router:
    """The request handler of one server of one router.

    Only what is per server lives here: its ``clearContext`` and ``maxCallDepth`` settings and
    its stats (``rt/<label>/server/<ip>/<port>/...``).  Everything else belongs to the router
    and is shared by all of its servers: the identifier, the interpreter, the upstream pool,
    and the client and service policy state (:class:`~linker.routing.policies.RouterPolicies`,
    which also holds the router's metrics scope and random source).

    Args:
        now: the clock for latencies, deadlines and policy state (seconds; trio's by default).

    Raises:
        ValueError: ``policies`` belongs to another router (another config).
    """

    def __init__(
        self,
        config: RouterConfig,
        server: ServerConfig,
        identifier: Identifier,
        interpreter: Interpreter,
        pool: UpstreamPool,
        policies: RouterPolicies,
        *,
        now: Callable[[], float] = trio.current_time,
    ) -> None:
        if policies.config is not config:
            raise ValueError(f"router {config.label!r} was given the policies of another router")
        self.config = config
        self.server = server
        self.identifier = identifier
        self.interpreter = interpreter
        self.pool = pool
        self.policies = policies
        self.now = now
        self.server_scope = policies.scope.server(server.ip, server.port)
        self.max_err_bytes = config.max_err_response_kb * 1024
        # Stat handles kept for the hot path (a lookup by name costs string work per request).
        self._srv_requests = self.server_scope.counter("requests")
        self._srv_latency = self.server_scope.histogram("request_latency_ms")
        self._srv_status: dict[int, Counter] = {}
        # A per-process PRNG for l5d-reqid: a trace id needs uniqueness, not secrecy, and
        # the secrets module costs a getrandom() system call per request.
        self._reqid_rng = random.Random()

    async def handle(self, req: Request) -> Response:
        """Route one request; every failure becomes a Linkerd-style error response."""
        started = self.now()
        srv = self.server_scope
        self._srv_requests.incr()
        try:
            response, svc = await self._route(req)
        except LinkerError as err:
            status, headers, body = error_response(err, max_err_bytes=self.max_err_bytes)
            srv.counter(f"failures/{type(err).__name__}").incr()
            _status_counter(self._srv_status, srv, status).incr()
            self._srv_latency.add((self.now() - started) * 1000)
            return Response(status, headers, bytes_body(body))
        latency = (self.now() - started) * 1000
        _status_counter(self._srv_status, srv, response.status).incr()
        self._srv_latency.add(latency)
        svc.requests.incr()  # Linkerd: rt/<router>/service/svc/users/...
        _status_counter(svc.status, svc.scope, response.status).incr()
        svc.latency.add(latency)
        return response

    # -- client policy: balancer + failure accrual + classification + retries ---------------------
    async def _attempts(
        self, svc: ServicePolicy, dest: Destination, bound: Bound, req: Request, deadline: float
    ) -> Response:
        """Send ``req``, retrying what the classifier and the budget allow, until ``deadline``."""
        service = svc.service
        policy = self.policies.retry_policy(svc)
        now = self.now()
        policy.record_request(now)
        addr = dest.addrs.get(bound.id)
        assert isinstance(addr, AddrBound)
        client = self.policies.client(bound.id, addr, now)
        bal = client.balancer
        replayable = req.body.length == 0  # a streamed body is gone once sent: never retried
        attempt = 0
        prev_delay: float | None = None
        # Endpoints this request failed on, with why, and the last error raised: when the
        # balancer then has no endpoint left, the answer names these rather than accrual.
        tried: dict[str, str] = {}
        last: LinkerError | None = None
        while True:
            attempt += 1
            ep = bal.pick(self.now())
            if ep is None:
                raise _no_live_endpoint(bal, self.now(), bound.id.show(), service, tried, last)
            client.requests.incr()
            started = self.now()
            try:
                resp = await self.pool.request(ep.address, req)
            except (ConnectFailed, UpstreamProtocolError, UpstreamTimeout) as err:
                bal.release(ep, self.now(), self.now() - started, False, err.cause)
                tried.pop(ep.show(), None)  # re-insert: the last failure stays last
                tried[ep.show()] = err.cause
                last = err
                written = not err.retryable  # retryable: it never reached the endpoint
                cls = policy.classifier.classify_error(req.method, written)
                retry, delay = policy.should_retry(
                    cls,
                    attempt,
                    replayable or not written,
                    self.now(),
                    prev_delay_s=prev_delay,
                    remaining_s=deadline - self.now(),
                )
                if not retry:
                    if len(tried) > 1:  # the error names one endpoint: name the others too
                        raise _no_live_endpoint(
                            bal, self.now(), bound.id.show(), service, tried, err
                        ) from None
                    raise
                client.retries.incr()
                await trio.sleep(delay)
                prev_delay = delay
                continue
            cls = policy.classifier(req.method, resp.status, resp.headers)
            if cls is ResponseClass.SUCCESS:
                bal.release(ep, self.now(), self.now() - started, True)
            else:
                cause = f"{_status_line(resp)} from a classifier"
                bal.release(ep, self.now(), self.now() - started, False, cause)
                tried.pop(ep.show(), None)
                tried[ep.show()] = cause
                last = None
            if cls is ResponseClass.FAILURE_RETRYABLE:
                retry, delay = policy.should_retry(
                    cls,
                    attempt,
                    replayable,
                    self.now(),
                    prev_delay_s=prev_delay,
                    remaining_s=deadline - self.now(),
                )
                if retry:
                    await _discard(resp)
                    client.retries.incr()
                    await trio.sleep(delay)
                    prev_delay = delay
                    continue
            return resp

    # -- the steps ------------------------------------------------------------------------------
    def _local_dtab(self, headers: hop.Headers) -> tuple[Dtab, Dtab]:
        """(ctx + user overrides, the same plus the router's dtab) from l5d-ctx-dtab / l5d-dtab."""
        overrides = Dtab.empty()
        for name in (_CTX_DTAB, _USER_DTAB):
            for value in hop.get_all(headers, name):
                text = value.decode("latin-1")
                try:
                    overrides = overrides + Dtab.read(text)
                except DtabParseError as err:
                    raise BadDtabHeader(f"Invalid {name.decode()} header: {err}") from None
        return overrides, self.config.dtab + overrides

    async def _route(self, req: Request) -> tuple[Response, ServicePolicy]:
        headers = req.headers
        if self.server.clear_context:
            # An untrusted edge must not steer routing or forge context.
            headers = [(k, v) for k, v in headers if not k.startswith(b"l5d-")]
        depth = hop.via_depth(headers)
        if depth >= self.server.max_call_depth:
            raise LoopDetected(
                f"Maximum call depth {self.server.max_call_depth} exceeded ({depth} Via entries): "
                "a routing loop? Check the dtab for a rule that sends this name back here."
            )
        overrides, local = self._local_dtab(headers)
        identified = self.identifier.identify(
            req.method, req.target, req.authority, headers, req.http_version
        )
        if identified is None:
            raise NoNameIdentified(
                f"Unable to identify a name for {req.method} {req.target}: the router's identifier "
                "found nothing to route by (e.g. no Host header)."
            )
        path = identified.path
        svc = self.policies.service(path)
        service = svc.service
        # The interpreter enforces bindingTimeoutMs itself with a precise message (which
        # namerd, what state); this is only a backstop in case it does not.  (A bare
        # CancelScope, not trio.fail_after: the context-manager generator costs more than the
        # scope itself on this path.)
        backstop_s = self.config.binding_timeout_ms / 1000 + BACKSTOP_S
        resolve_now = getattr(self.interpreter, "resolve_now", None)
        dest = resolve_now(path, local) if resolve_now is not None else None
        try:
            if dest is None:
                with trio.CancelScope(deadline=trio.current_time() + backstop_s):
                    dest = await self.interpreter.resolve(path, local)
        except BindBudgetExceeded as err:
            raise DtabOverBudget(f"{err} (Dtab.local=[{overrides.show()}])") from None
        except InterpreterError as err:
            raise BindingFailed(f"{err} (Dtab.local=[{overrides.show()}])") from None
        if dest is None:
            raise BindingFailed(
                f"Binding {service} timed out after {self.config.binding_timeout_ms} ms "
                f"(Dtab.local=[{overrides.show()}]); is namerd reachable?"
            )
        bound = pick_bound(dest, self.policies.rng)
        if bound is None:
            why = _why_no_endpoints(path, dest)
            why_neg = getattr(self.interpreter, "why_neg", None)
            if why_neg is not None and isinstance(dest.tree, Neg):
                with trio.CancelScope(deadline=trio.current_time() + backstop_s):
                    why = await why_neg(path, local) or why
            raise NoEndpoints(
                f"No hosts are available for {service}: {why}. "
                f"Dtab.local=[{overrides.show()}]. "
                f"Explain the route: GET /delegator.json?path={quote(service)} on the admin port."
            )
        total_ms = svc.total_ms
        # An upstream linker's l5d-ctx-deadline bounds us too: the stricter limit wins, and
        # what is left of it travels on to the next hop.
        wall = time.time()
        incoming_s = parse_deadline_headers(headers, wall)
        limit_s = effective_timeout_s(total_ms / 1000 if total_ms else None, incoming_s)
        if limit_s is not None and limit_s <= 0:
            raise UpstreamTimeout(
                f"The request's l5d-ctx-deadline had already passed when it reached {service}."
            )
        deadline = self.now() + (limit_s if limit_s is not None else float("inf"))
        # The upstream head in one pass over the fields (this runs for every request).
        upstream_headers = hop.strip_hop_by_hop(headers, _DTAB_HEADERS)
        fields: dict[bytes, bytes] = {}
        if overrides:
            fields[_CTX_DTAB] = overrides.show().encode("latin-1")
        fields[b"l5d-dst-service"] = service.encode("latin-1")
        fields[b"l5d-dst-client"] = bound.id.show().encode("latin-1")
        if not bound.residual.is_empty:
            fields[b"l5d-dst-residual"] = bound.residual.show().encode("latin-1")
        if hop.get(upstream_headers, b"l5d-reqid") is None:
            fields[b"l5d-reqid"] = b"%016x" % self._reqid_rng.getrandbits(64)
        fields[b"via"] = hop.via_value(upstream_headers, req.http_version)
        if req.authority and hop.get(upstream_headers, b"host") is None:
            fields[b"host"] = req.authority.encode("latin-1")
        if limit_s is not None:
            fields[DEADLINE_HEADER] = format_deadline(wall, limit_s)
        upstream_req = Request(
            method=req.method,
            target=identified.target or req.target,
            authority=req.authority,
            http_version="1.1",
            headers=hop.set_many(upstream_headers, fields),
            body=req.body,
            client=req.client,
            received_at=req.received_at,
        )
        resp = None
        with trio.CancelScope(deadline=deadline):
            resp = await self._attempts(svc, dest, bound, upstream_req, deadline)
        if resp is None:
            why = (
                f"totalTimeoutMs={total_ms} (retries included)"
                if incoming_s is None or (total_ms and total_ms / 1000 <= incoming_s)
                else f"the request's l5d-ctx-deadline ({incoming_s:.3f} s)"
            )
            raise UpstreamTimeout(
                f"{service} ({bound.id.show()}) did not answer within {why}"
            ) from None
        out_headers = hop.add_via(hop.strip_hop_by_hop(resp.headers), "1.1")
        return Response(resp.status, out_headers, resp.body, resp.reason), svc
