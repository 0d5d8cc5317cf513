"""The client and service policy state of one router, shared by every server of that router.

As in Linkerd, client policy belongs to the router, not to the socket a request came in on: all
of a router's servers feed one client per bound name (its load balancer, with failure accrual
per endpoint) and one service per logical name (its retry budget, classifier and total
timeout).  So failures seen through one server mark an endpoint dead for every server, one
retry budget bounds the router's retries wherever they came in, and each gauge has one value.
:class:`RouterPolicies` is that state; each server's :class:`~linker.routing.router.Router`
holds the same instance.

* :meth:`RouterPolicies.service` gives a :class:`ServicePolicy` per logical name (``/svc/users``):
  its text, stat handles, ``totalTimeoutMs`` and, built on the first request that binds, its
  :class:`~linker.policy.retries.RetryPolicy` (with its gauges).
* :meth:`RouterPolicies.client` gives a :class:`ClientPolicy` per bound name: its balancer, fed
  the current endpoint set.  The balancer is kept across requests so load, latency and accrual
  state survive; an endpoint removed from the set drains.

Both are caches of at most :data:`MAX_CACHED_NAMES` entries; past that they start over, so
hostile Host headers can't grow them forever.  Pure bookkeeping: no I/O and no clock of its own
(the caller passes ``now_s``); randomness comes from one injected :class:`random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from linker.config.model import RouterConfig
from linker.metrics import Counter, Histogram, Scope
from linker.policy.accrual import build_accrual_factory
from linker.policy.balancer import Balancer, Endpoint, build_balancer
from linker.policy.retries import RetryPolicy, build_retry_policy
from shared import AddrBound, Path
from shared.addr import endpoint_weight, serving_weights

__all__ = ["MAX_CACHED_NAMES", "ClientPolicy", "RouterPolicies", "ServicePolicy"]

#: At most this many services, and as many bound names, keep cached state (stat handles,
#: parameters, balancers); past it the cache starts over.
MAX_CACHED_NAMES = 10_000


@dataclass(slots=True)
class ServicePolicy:
    """What the hot path needs per logical name, computed once: its text, stats and limits.

    Attributes:
        retry: None until :meth:`RouterPolicies.retry_policy` first builds it.
    """

    path: Path
    service: str
    scope: Scope
    requests: Counter
    latency: Histogram
    status: dict[int, Counter]
    total_ms: int
    retry: RetryPolicy | None = None


@dataclass(slots=True)
class ClientPolicy:
    """Per bound name: its balancer, the address set it was last fed, and stat handles."""

    id_text: str
    addr: AddrBound
    endpoints: tuple[Endpoint, ...]
    balancer: Balancer
    requests: Counter
    retries: Counter


def _balancer_stat(bal: Balancer, name: str) -> Callable[[], float]:
    return lambda: float(bal.stats().get(name, 0))


def _retry_stat(policy: RetryPolicy, name: str) -> Callable[[], float]:
    return lambda: float(policy.stats()[name])


def _endpoint_details(bal: Balancer) -> Callable[[], list[dict[str, Any]]]:
    """Each endpoint's state and last error, for the dashboard (a metrics detail)."""

    def sample() -> list[dict[str, Any]]:
        try:
            now_s = trio.current_time()
        except RuntimeError:  # the last snapshot, written after the trio run ended
            return []
        return [
            {
                "address": ep.address,
                "state": ep.state,
                "last_error": ep.last_error,
                "last_error_age_s": None if ep.age_s is None else round(ep.age_s, 1),
            }
            for ep in bal.endpoints(now_s)
        ]

    return sample


class RouterPolicies:
    """The client and service policy state of one router (see the module docstring).

    Args:
        config: the router's config (``client`` / ``service`` sections, ``totalTimeoutMs``).
        scope: the router's metrics scope, ``rt/<label>``.
        rng: the one source of randomness of the router's policies (balancer choices, accrual
            and retry jitter) and of its union choices; seed it to replay a test.
    """

    def __init__(
        self, config: RouterConfig, scope: Scope, *, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self.scope = scope
        self.rng = rng or random.Random()
        self._services: dict[Path, ServicePolicy] = {}
        self._clients: dict[Path, ClientPolicy] = {}

    def __repr__(self) -> str:
        return (
            f"<RouterPolicies {self.config.label}: {len(self._services)} services, "
            f"{len(self._clients)} clients>"
        )

    def service(self, path: Path) -> ServicePolicy:
        """The state of the logical name ``path`` (created on first use)."""
        state = self._services.get(path)
        if state is None:
            if len(self._services) >= MAX_CACHED_NAMES:
                self._services.clear()
            service = path.show()
            scope = self.scope.service(service)
            total_ms = int(
                self.config.service_params(path).get("totalTimeoutMs", self.config.total_timeout_ms)
            )
            state = self._services[path] = ServicePolicy(
                path,
                service,
                scope,
                scope.counter("requests"),
                scope.histogram("request_latency_ms"),
                {},
                total_ms,
            )
        return state

    def retry_policy(self, svc: ServicePolicy) -> RetryPolicy:
        """``svc``'s retry policy (classifier, budget, backoff), built and gauged on first use."""
        policy = svc.retry
        if policy is None:
            policy = svc.retry = build_retry_policy(self.config.service_params(svc.path), self.rng)
            for name in policy.stats():
                svc.scope.gauge(name, _retry_stat(policy, name))
        return policy

    def client(self, bound_id: Path, addr: AddrBound, now_s: float) -> ClientPolicy:
        """The client of the bound name ``bound_id``, its balancer fed the endpoints of
        ``addr`` (an update only when the set changed)."""
        known = self._clients.get(bound_id)
        if known is not None and known.addr is addr:
            return known  # the hot path: interpreters hand out the same Addr until it changes
        addrs = addr.sorted_addrs()
        # One weight rule (shared.addr): a zero weight means no traffic while others have some.
        weights = serving_weights([endpoint_weight(a.meta) for a in addrs])
        endpoints = tuple(
            Endpoint((a.ip, a.port), w, a.meta)
            for a, w in zip(addrs, weights, strict=True)
            if w > 0
        )
        if known is None:
            if len(self._clients) >= MAX_CACHED_NAMES:
                self._clients.clear()
            params = self.config.client_params(bound_id)
            bal = build_balancer(
                params.get("loadBalancer"),
                rng=self.rng,
                accrual_factory=build_accrual_factory(params.get("failureAccrual"), self.rng),
            )
            bal.update(endpoints, now_s)
            id_text = bound_id.show()
            client = self.scope.client(id_text)
            for stat in ("size", "available", "removals", "revivals"):
                client.gauge(f"loadbalancer/{stat}", _balancer_stat(bal, stat))
            self._endpoint_gauges(client, bal)
            client.metrics.detail(client.name("loadbalancer/endpoints"), _endpoint_details(bal))
            known = self._clients[bound_id] = ClientPolicy(
                id_text,
                addr,
                endpoints,
                bal,
                client.counter("requests"),
                client.counter("retries"),
            )
            return known
        known.addr = addr
        if known.endpoints != endpoints:
            known.balancer.update(endpoints, now_s)
            known.endpoints = endpoints
            self._endpoint_gauges(self.scope.client(known.id_text), known.balancer)
        return known

    @staticmethod
    def _endpoint_gauges(client: Scope, bal: Balancer) -> None:
        """Per-endpoint load (outstanding, load, ewma) as gauges, sampled at each snapshot."""
        for name in bal.stats():
            if name.startswith("endpoint/"):
                client.gauge(f"loadbalancer/{name}", _balancer_stat(bal, name))
