"""``io.l5d.registry``: a service registry in Redis, with TTL'd endpoints and live mirrors.

Services register their endpoints with a TTL and keep them alive with heartbeats; an endpoint
whose TTL runs out is removed. Every namerd replica serves the same registry, because the
registry *is* Redis; each namer instance answers lookups from an in-memory mirror of it.

Redis layout (``P`` is the key prefix, ``namerd:`` by default)
--------------------------------------------------------------
=================================  ======  ===================================================
``P registry:services``            set     every *known* service: registered at least once
                                           and not ``forget()``-ed
``P registry:endpoints:<svc>``     zset    member ``<ip>:<port>`` (``[<ipv6>]:<port>``);
                                           score = expiry, in ms of the Redis server's clock
``P registry:meta:<svc>``          hash    member -> endpoint meta as a JSON object (only
                                           for endpoints registered with non-empty meta)
``P registry:changes``             chan    payload ``<svc>``, published whenever the endpoint
                                           set or meta of ``<svc>`` changed
=================================  ======  ===================================================

Each write is one Lua script, so a change and its notification are atomic. Expiry times are
computed in the scripts from Redis ``TIME``, never from a replica's clock, so replicas with
skewed clocks agree on when an endpoint expires. A heartbeat only moves a score, so it publishes
nothing: the address set did not change. The sweep script scans the services set, so its cost
grows with the number of services (fine for hundreds; a global expiry index would be the next
step). Scripts compute key names from the prefix, so Redis Cluster is not supported (the dtab
store has the same limit).

Mirror
------
Each namer instance holds ONE subscription to ``P registry:changes`` (``ChannelFeed``). A
message is only a hint: the named service is marked dirty, and one sync task re-reads dirty
services (in one MULTI) and applies them, in order. After every (re)subscription the sync task
re-reads *everything*, because messages sent while we were disconnected are lost; so the
mirror also recovers from a Redis that came back with different data. Our own writes wait until
the sync task has re-read the service, so ``register()`` followed by ``lookup()`` sees the new
endpoint (read-your-writes).

Every instance also runs the sweeper (every ``sweep_interval_s``): an atomic script removes
expired endpoints and publishes. Replicas sweep redundantly, which is harmless, because the
script is atomic and only publishes what it removed; it means no replica is special.

While Redis is unreachable the mirror is left alone: lookups serve the last-known registry,
including endpoints that may since have expired (nobody can sweep them, and dropping them all
would be worse). Writes raise :class:`NamerUnavailable`.

Address policy
--------------
A registration may point the mesh at any address, so ``register()`` refuses the addresses
that reach the host itself or its cloud's internals unless the config says otherwise
(:class:`AddressPolicy`): loopback (Redis next door), link-local (169.254.169.254, the cloud
metadata service), unspecified (``0.0.0.0``, ``::``; ``0.0.0.0/8`` means "this host" too) and
multicast; an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is judged as its IPv4 address.
Config keys of the namer: ``denyNetworks`` (CIDRs always refused) and ``allowNetworks``
(CIDRs; when given, only these are accepted, and an address inside one of them is accepted
even if it is of a refused kind: ``allowNetworks: [127.0.0.0/8, ::1/128]`` is how a local
development setup registers loopback endpoints). A refusal is :class:`RefusedAddress`, 403 with
the reason and the key to change. The policy is the namer's, so it covers every namespace that
binds through it (namers are shared by all namespaces). Heartbeats and deregistrations only
touch endpoints that were registered, so they are not re-checked.

Known versus live (a choice)
----------------------------
``lookup(/<svc>/rest)`` binds every *known* service, even with no live endpoint left; its addr
is then ``bound`` with no addresses (Linkerd answers "no hosts available", a 502). The binding of
a service must not flap between ``bound`` and ``neg`` as its last instance restarts: a ``neg``
would make a dtab alternative (``/#/io.l5d.registry | /#/io.l5d.fs``) switch branches, and
linkers drop and rebuild clients each time. Consul's namer behaves the same way for a catalog
service with no healthy instances. ``forget()`` removes a service for good (``neg`` again).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final, NoReturn

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from namerd.aio import reconnect_delay_s
from namerd.naming.namers.base import (
    Namer,
    NamerConfigError,
    NamerError,
    NamerUnavailable,
    Notifier,
    NotRegistered,
    config_interval_s,
)
from namerd.storage.connection import UNAVAILABLE_ERRORS, text
from namerd.storage.pubsub import ChannelFeed
from shared import ADDR_NEG, NEG, Addr, AddrBound, Address, Bound, Leaf, NameTree, Path
from shared.addr import WEIGHT_META_KEY, parse_weight
from shared.fsformat import parse_ip
from shared.path import show_label

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_START_TIMEOUT_S",
    "DEFAULT_SWEEP_INTERVAL_S",
    "AddressPolicy",
    "BadRegistration",
    "BadWeight",
    "RefusedAddress",
    "RegistryNamer",
    "check_service",
]

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX: Final = "namerd:"
DEFAULT_SWEEP_INTERVAL_S: Final = 1.0
DEFAULT_START_TIMEOUT_S: Final = 10.0

# Milliseconds of the Redis server clock, from TIME (seconds, microseconds). Redis >= 5
# replicates script *effects*, so a script may call TIME and then write.
_NOW_MS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: services set, endpoints zset, meta hash. ARGV: service, member, ttl ms, meta JSON
# ('' for none), channel. Returns 1 if something changed (and was published), else 0.
_REGISTER_LUA = (
    _NOW_MS_LUA
    + """
local changed = redis.call('SADD', KEYS[1], ARGV[1]) == 1
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then changed = true end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
local old_meta = redis.call('HGET', KEYS[3], ARGV[2])
if ARGV[4] == '' then
  if old_meta then
    redis.call('HDEL', KEYS[3], ARGV[2])
    changed = true
  end
elseif old_meta ~= ARGV[4] then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
  changed = true
end
if changed then redis.call('PUBLISH', ARGV[5], ARGV[1]) end
return changed and 1 or 0
"""
)

# KEYS: endpoints zset. ARGV: member, ttl ms. Returns 0 if the endpoint is missing or expired
# (expired but not swept yet counts as gone: the caller must register again).
_HEARTBEAT_LUA = (
    _NOW_MS_LUA
    + """
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)

# KEYS: endpoints zset, meta hash. ARGV: member, channel, service. Returns 1 if removed.
_DEREGISTER_LUA = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if removed == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return removed
"""

# KEYS: services set, endpoints zset, meta hash. ARGV: service, channel. Returns 1 if known.
_FORGET_LUA = """
local known = redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
if known == 1 then redis.call('PUBLISH', ARGV[2], ARGV[1]) end
return known
"""

# KEYS: services set. ARGV: endpoints key prefix, meta key prefix, channel.
# Removes every endpoint whose expiry <= now; returns the services that lost endpoints.
_SWEEP_LUA = (
    _NOW_MS_LUA
    + """
local swept = {}
for _, service in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local endpoints = ARGV[1] .. service
  local expired = redis.call('ZRANGEBYSCORE', endpoints, '-inf', now)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', endpoints, '-inf', now)
    for _, member in ipairs(expired) do
      redis.call('HDEL', ARGV[2] .. service, member)
    end
    redis.call('PUBLISH', ARGV[3], service)
    table.insert(swept, service)
  end
end
return swept
"""
)


class BadRegistration(NamerError, ValueError):
    """A registry call with a bad argument: service name, host, port, TTL or meta (400).

    A ValueError, as bad arguments are, and a NamerdError so the API answers 400 with the
    message instead of an internal error.
    """

    default_http_status = 400


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RefusedAddress(BadRegistration):
    """``register()`` of an address the namer's :class:`AddressPolicy` refuses (403).

    ``details`` has ``reason`` (``loopback``, ``link-local``, ``unspecified``, ``multicast``,
    ``denied``, ``not-allowed``) and ``configKey``, the key that would change the answer.
    """

    default_http_status = 403


# The kinds of address refused unless an allowNetworks entry covers them, with their tests.
_REFUSED_KINDS: Final[tuple[tuple[str, Callable[[IPAddress], bool]], ...]] = (
    ("loopback", lambda ip: ip.is_loopback),
    ("link-local", lambda ip: ip.is_link_local),
    (
        "unspecified",
        lambda ip: ip.is_unspecified or ip in ipaddress.IPv4Network("0.0.0.0/8"),
    ),
    ("multicast", lambda ip: ip.is_multicast),
)


class AddressPolicy:
    """Which addresses ``register()`` accepts; see "Address policy" in the module docstring.

    Args:
        allow: when non-empty, the only networks accepted (and they lift the kind refusals).
        deny: networks always refused.
        where: how to name the config keys in refusals, e.g. ``namers[1] (io.l5d.registry)``.
    """

    def __init__(
        self, allow: Iterable[IPNetwork] = (), deny: Iterable[IPNetwork] = (), where: str = ""
    ) -> None:
        self.allow = tuple(allow)
        self.deny = tuple(deny)
        self.where = where

    @classmethod
    def from_config(cls, kind: str, config: Mapping[str, Any], where: str) -> AddressPolicy:
        """``allowNetworks`` / ``denyNetworks``: lists of CIDRs such as ``10.0.0.0/8``."""
        nets: dict[str, list[IPNetwork]] = {}
        for key in ("allowNetworks", "denyNetworks"):
            raw = config.get(key, [])
            if not isinstance(raw, list):
                raise NamerConfigError(f"namer {kind}: {key} must be a list of CIDRs")
            nets[key] = []
            for item in raw:
                try:
                    nets[key].append(ipaddress.ip_network(str(item), strict=True))
                except ValueError as err:
                    raise NamerConfigError(
                        f"namer {kind}: {key}: {item!r} is not a network such as 10.0.0.0/8 ({err})"
                    ) from None
        return cls(nets["allowNetworks"], nets["denyNetworks"], where)

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def check(self, ip: IPAddress) -> None:
        """Return if ``ip`` may be registered.

        Raises:
            RefusedAddress: it may not; the message says why and which key to change.
        """
        judged: IPAddress = ip
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            judged = ip.ipv4_mapped
        for net in self.deny:
            if judged in net or ip in net:
                self._refuse(ip, "denied", f"it is in denyNetworks entry {net}", "denyNetworks")
        if self.allow:
            if any(judged in net or ip in net for net in self.allow):
                return
            listed = ", ".join(str(n) for n in self.allow)
            why = f"it is in none of allowNetworks ({listed})"
            self._refuse(ip, "not-allowed", why, "allowNetworks")
        for kind, test in _REFUSED_KINDS:
            if test(judged):
                self._refuse(
                    ip,
                    kind,
                    f"it is a {kind} address, refused unless allowNetworks lists a network "
                    "that contains it",
                    "allowNetworks",
                )

    def _refuse(self, ip: IPAddress, reason: str, why: str, key: str) -> NoReturn:
        raise RefusedAddress(
            f"registry: refused to register {ip}: {why} (config key {self._key(key)})",
            details={"reason": reason, "configKey": self._key(key)},
        )


_SERVICE_CHARS = "0-9 A-Z a-z _ : . # $ % -"


def check_service(service: str) -> str:
    """``service`` if it is a valid service name (one path label), else BadRegistration."""
    if (
        not isinstance(service, str)
        or not service
        or not service.isascii()
        or show_label(service.encode("ascii")) != service
    ):
        raise BadRegistration(
            f"service name must be one path label of the characters {_SERVICE_CHARS}, "
            f"got {service!r}"
        )
    return service


def _parse_host(host: str) -> IPAddress:
    """``host`` as an IP address; BadRegistration with the reason if it is not one."""
    if not isinstance(host, str):
        raise BadRegistration(f"host must be an IP address string, got {host!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host.replace(".", "").isdigit() and any(
            len(p) > 1 and p.startswith("0") for p in host.split(".")
        ):
            raise BadRegistration(
                f"host {host!r} has a leading zero, which some parsers read as octal; "
                "write the address without leading zeros"
            ) from None
        raise BadRegistration(
            f"host must be an IPv4 or IPv6 address literal, got {host!r}: the registry does "
            "not resolve names; register the address the service listens on"
        ) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise BadRegistration(f"host {host!r} has a zone id (%...), which linkers cannot use")
    return ip


def _member(host: str, port: int) -> str:
    ip = str(_parse_host(host))
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        raise BadRegistration(f"port must be an int 1-65535, got {port!r}")
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _parse_member(member: str) -> tuple[str, int] | None:
    host, sep, port = member.rpartition(":")
    if not sep or not port.isdigit():
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ip = parse_ip(host)
    return None if ip is None else (ip, int(port))


def _ttl_ms(ttl_s: float) -> int:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not ttl_s > 0:
        raise BadRegistration(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
    if not math.isfinite(ttl_s):
        raise BadRegistration("ttl_s must be finite")
    return max(1, round(ttl_s * 1000))


class RegistryNamer(Namer):
    """``io.l5d.registry``: TTL'd service endpoints in Redis; see the module docstring.

    Args:
        prefix: mount point, default ``/#/io.l5d.registry``.
        notifier: fired when the mirror changes.
        redis: the client (shared with the rest of namerd is fine).
        key_prefix: prefix of every key and channel (config ``keyPrefix``). Default
            ``namerd:``.
        sweep_interval_s: how often expired endpoints are removed (config
            ``sweepIntervalSecs``). Default 1 s; an endpoint outlives its TTL by at most this.
        start_timeout_s: how long ``start()`` waits for the first full read. Default 10 s.
        reconnect_min_s / reconnect_max_s: backoff bounds for reconnecting and re-reading
            after a Redis failure. Defaults 0.05 s and 2 s.
        pubsub_ping_interval_s: silence on the subscription after which it is PINGed.
            Default 15 s.
        address_policy: which addresses ``register()`` accepts (config ``allowNetworks``,
            ``denyNetworks``). Default: refuse loopback, link-local, unspecified, multicast.
    """

    kind: ClassVar[str] = "io.l5d.registry"
    config_keys: ClassVar[frozenset[str]] = frozenset(
        {"keyPrefix", "sweepIntervalSecs", "allowNetworks", "denyNetworks"}
    )

    def __init__(
        self,
        prefix: Path,
        notifier: Notifier,
        redis: aioredis.Redis,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 2.0,
        pubsub_ping_interval_s: float = 15.0,
        address_policy: AddressPolicy | None = None,
    ) -> None:
        super().__init__(prefix, notifier)
        self.address_policy = address_policy or AddressPolicy()
        if sweep_interval_s <= 0 or start_timeout_s <= 0:
            raise ValueError("sweep_interval_s and start_timeout_s must be > 0")
        self._redis = redis
        self.key_prefix = key_prefix
        self.sweep_interval_s = sweep_interval_s
        self.start_timeout_s = start_timeout_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._services_key = f"{key_prefix}registry:services"
        self._endpoints_prefix = f"{key_prefix}registry:endpoints:"
        self._meta_prefix = f"{key_prefix}registry:meta:"
        self._channel = f"{key_prefix}registry:changes"
        self._register = redis.register_script(_REGISTER_LUA)
        self._heartbeat = redis.register_script(_HEARTBEAT_LUA)
        self._deregister = redis.register_script(_DEREGISTER_LUA)
        self._forget = redis.register_script(_FORGET_LUA)
        self._sweep = redis.register_script(_SWEEP_LUA)
        self._feed = ChannelFeed(
            redis,
            self._channel,
            on_message=self._on_message,
            on_subscribed=self._want_full_resync,
            name=f"registry-pubsub {prefix.show()}",
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            ping_interval_s=pubsub_ping_interval_s,
        )
        self._mirror: dict[str, AddrBound] = {}
        # Work for the sync task: services to re-read, or everything.
        self._dirty: set[str] = set()
        self._full_resync = False
        self._wake = asyncio.Event()
        # Read-your-writes: a write takes ticket N; the sync task sets _applied to the last
        # ticket its finished batch covered, and fires _progress.
        self._requested = 0
        self._applied = 0
        self._progress = Notifier()
        self._synced_once = asyncio.Event()
        self._started = False
        self._last_error: str | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else repr(self._feed)
        return f"<RegistryNamer {self.prefix.show()} [{len(self._mirror)} services, {state}]>"

    @classmethod
    def from_config(
        cls,
        prefix: Path,
        config: Mapping[str, Any],
        notifier: Notifier,
        redis_client: Any,
    ) -> RegistryNamer:
        """``keyPrefix`` (default ``namerd:``), ``sweepIntervalSecs`` (default 1),
        ``allowNetworks`` and ``denyNetworks`` (default none; see "Address policy")."""
        if redis_client is None:
            raise NamerConfigError(f"namer {cls.kind} needs Redis, but no client was given")
        key_prefix = config.get("keyPrefix", DEFAULT_KEY_PREFIX)
        if not isinstance(key_prefix, str):
            raise NamerConfigError(
                f"namer {cls.kind}: keyPrefix must be a string, got {key_prefix!r}"
            )
        return cls(
            prefix,
            notifier,
            redis_client,
            key_prefix=key_prefix,
            sweep_interval_s=config_interval_s(
                cls.kind, config, "sweepIntervalSecs", DEFAULT_SWEEP_INTERVAL_S
            ),
            address_policy=AddressPolicy.from_config(
                cls.kind, config, f"namers[{cls.kind} at {prefix.show()}]"
            ),
        )

    @property
    def redis_connected(self) -> bool:
        """True while the change subscription is confirmed by Redis."""
        return self._feed.connected

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe, read the whole registry, then start the sweeper.

        Raises:
            NamerUnavailable: the first full read did not succeed within ``start_timeout_s``.
        """
        self._started = True
        self._feed.start()
        self._spawn(self._sync_loop(), name=f"registry-sync {self.prefix.show()}")
        try:
            await asyncio.wait_for(self._synced_once.wait(), timeout=self.start_timeout_s)
        except TimeoutError:
            cause = self._feed.last_error or self._last_error or "no reply"
            await self.close()
            raise NamerUnavailable(
                f"namer {self.kind}: could not load the registry from Redis within "
                f"{self.start_timeout_s} s: {cause}"
            ) from None
        self._spawn(self._sweep_loop(), name=f"registry-sweep {self.prefix.show()}")

    async def close(self) -> None:
        """Stop the subscription, sync and sweep tasks. Calling it again does nothing.

        The Redis client is the caller's; it is not closed.
        """
        await super().close()
        await self._feed.close()
        # Release writers waiting for a sync that will never run.
        self._applied = self._requested
        self._progress.notify()

    # -- the Namer interface --------------------------------------------------------------------

    def lookup(self, path: Path) -> NameTree[Path | Bound]:
        """``/<svc>/rest`` -> ``Leaf(Bound(prefix/<svc>, /rest))`` if ``<svc>`` is known."""
        if path.is_empty or _decode(path[0]) not in self._mirror:
            return NEG
        return Leaf(Bound(self.prefix + path.take(1), path.drop(1)))

    def addr(self, id: Path) -> Addr:
        """The live endpoints of ``prefix/<svc>`` (``bound``, maybe empty), or ``ADDR_NEG``."""
        label = self._label_under_prefix(id)
        found = None if label is None else self._mirror.get(_decode(label))
        return ADDR_NEG if found is None else found

    def enumerate(self) -> list[Path]:
        """Every known service, as bound ids, sorted."""
        return [self.prefix + Path(name) for name in self.services()]

    def services(self) -> list[str]:
        """The known services in this instance's mirror, sorted."""
        return sorted(self._mirror)

    # -- registration ---------------------------------------------------------------------------

    async def register(
        self,
        service: str,
        host: str,
        port: int,
        ttl_s: float,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Register (or re-register) ``host:port`` for ``service``, alive for ``ttl_s``.

        Re-registering replaces the meta and restarts the TTL. ``meta`` becomes the Address
        meta (a flat JSON object of strings, finite numbers, booleans and nulls); an
        ``endpoint_addr_weight`` in it must follow ``shared.addr``'s weight rule (a finite
        number >= 0).

        Raises:
            BadRegistration (a ValueError): bad service name (not a path label), host (not an
                IP literal), port, TTL, or meta; :class:`BadWeight` for a bad weight;
                :class:`RefusedAddress` for an address the address policy refuses.
            NamerUnavailable: Redis is down; the registration may not have happened.
        """
        self.address_policy.check(_parse_host(host))
        member = _member(host, port)
        args = [check_service(service), member, _ttl_ms(ttl_s), _meta_json(meta), self._channel]
        await self._call(self._register, self._keys(service, with_services=True), args)
        await self._await_sync(self._mark_dirty(service))

    async def heartbeat(self, service: str, host: str, port: int, ttl_s: float) -> None:
        """Extend the TTL of a registered endpoint to ``ttl_s`` from now (Redis time).

        Raises:
            NotRegistered: the endpoint is not registered, or its TTL already ran out.
            ValueError: bad arguments, as for ``register``.
            NamerUnavailable: Redis is down.
        """
        member = _member(host, port)
        keys = [self._endpoints_prefix + check_service(service)]
        if not int(await self._call(self._heartbeat, keys, [member, _ttl_ms(ttl_s)])):
            raise NotRegistered(
                f"{service} {member} is not registered (or its TTL ran out); register it again"
            )

    async def deregister(self, service: str, host: str, port: int) -> bool:
        """Remove ``host:port`` from ``service`` now. The service stays known.

        Returns:
            True if it was registered.

        Raises:
            ValueError: bad arguments. NamerUnavailable: Redis is down.
        """
        args = [_member(host, port), self._channel, check_service(service)]
        removed = int(await self._call(self._deregister, self._keys(service), args))
        await self._await_sync(self._mark_dirty(service))
        return removed == 1

    async def forget(self, service: str) -> bool:
        """Remove ``service`` and all its endpoints, so it is unknown (``neg``) again.

        Returns:
            True if it was known.

        Raises:
            ValueError: bad service name. NamerUnavailable: Redis is down.
        """
        args = [check_service(service), self._channel]
        known = int(await self._call(self._forget, self._keys(service, with_services=True), args))
        await self._await_sync(self._mark_dirty(service))
        return known == 1

    def _keys(self, service: str, *, with_services: bool = False) -> list[str]:
        keys = [self._endpoints_prefix + service, self._meta_prefix + service]
        return [self._services_key, *keys] if with_services else keys

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if not self._started or self._closed:
            raise RuntimeError(f"{self!r} is not running; call start() first")
        try:
            return await script(keys=keys, args=args)
        except UNAVAILABLE_ERRORS as exc:
            raise NamerUnavailable(
                f"namer {self.kind}: Redis is unavailable ({exc}); the change may or may not "
                "have been applied"
            ) from exc
        except redis_errors.RedisError as exc:
            raise NamerError(f"namer {self.kind}: Redis refused the change: {exc}") from exc

    # -- the mirror -----------------------------------------------------------------------------

    def _mark_dirty(self, service: str) -> int:
        """Ask the sync task to re-read ``service``; returns the ticket to wait for."""
        self._dirty.add(service)
        self._requested += 1
        self._wake.set()
        return self._requested

    def _on_message(self, service: str) -> None:
        self._mark_dirty(service)

    def _want_full_resync(self) -> None:
        self._full_resync = True
        self._requested += 1
        self._wake.set()

    async def _await_sync(self, ticket: int) -> None:
        """Wait until a sync batch that started after ``ticket`` was taken has finished."""
        generation = self._progress.generation
        while self._applied < ticket:
            generation = await self._progress.wait_changed(generation)

    async def _sync_loop(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            ticket = self._requested
            full, dirty = self._full_resync, self._dirty
            self._full_resync, self._dirty = False, set()
            try:
                if full:
                    names = {text(m) for m in await self._redis.smembers(self._services_key)}
                    states = await self._read(names | set(self._mirror))
                else:
                    states = await self._read(dirty)
            except (redis_errors.RedisError, OSError) as exc:
                failures += 1
                self._last_error = str(exc) or type(exc).__name__
                self._full_resync = self._full_resync or full
                self._dirty |= dirty
                # A write that is waiting for this batch must not wait for Redis to return:
                # its change is in Redis, and the mirror catches up after the outage.
                self._applied = ticket
                self._progress.notify()
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "%r: cannot read the registry (%s); keeping the mirror", self, exc)
                await asyncio.sleep(
                    reconnect_delay_s(failures, self.reconnect_min_s, self.reconnect_max_s)
                )
                self._wake.set()
                continue
            failures = 0
            self._apply(states)
            if full:
                self._synced_once.set()
            self._applied = ticket
            self._progress.notify()

    async def _read(self, names: Iterable[str]) -> dict[str, AddrBound | None]:
        """Read services atomically (one MULTI); None for a service that is not known."""
        ordered = sorted(names)
        if not ordered:
            return {}
        async with self._redis.pipeline(transaction=True) as pipe:
            for name in ordered:
                pipe.sismember(self._services_key, name)
                pipe.zrange(self._endpoints_prefix + name, 0, -1)
                pipe.hgetall(self._meta_prefix + name)
            replies = await pipe.execute()
        states: dict[str, AddrBound | None] = {}
        for i, name in enumerate(ordered):
            known, members, metas = replies[3 * i : 3 * i + 3]
            states[name] = _addr_bound(name, members, metas) if int(known) else None
        return states

    def _apply(self, states: Mapping[str, AddrBound | None]) -> None:
        changed = False
        for name, state in states.items():
            if state is None:
                changed |= self._mirror.pop(name, None) is not None
            elif self._mirror.get(name) != state:
                self._mirror[name] = state
                changed = True
        if changed:
            self.notifier.notify()

    async def _sweep_loop(self) -> None:
        failures = 0
        keys = [self._services_key]
        args = [self._endpoints_prefix, self._meta_prefix, self._channel]
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                swept = await self._sweep(keys=keys, args=args)
            except (redis_errors.RedisError, OSError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("%r: cannot sweep expired endpoints (%s)", self, exc)
                continue
            failures = 0
            for service in swept:
                # The publish reaches us too; marking now saves a round trip.
                self._mark_dirty(text(service))


def _decode(label: bytes) -> str:
    # Service names are path labels, hence ASCII; anything else cannot be registered.
    return label.decode("ascii", errors="replace")


class BadWeight(BadRegistration):
    """A registration's ``endpoint_addr_weight`` breaks the weight rule (400)."""


def _scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def _meta_json(meta: Mapping[str, Any] | None) -> str:
    if not meta:
        return ""
    if not isinstance(meta, Mapping) or not all(isinstance(k, str) for k in meta):
        raise BadRegistration(f"meta must be a JSON object, got {type(meta).__name__}")
    if WEIGHT_META_KEY in meta:
        try:
            parse_weight(meta[WEIGHT_META_KEY])
        except ValueError as err:
            raise BadWeight(f"meta {WEIGHT_META_KEY} {meta[WEIGHT_META_KEY]!r} {err}") from None
    for key, value in meta.items():
        if not _scalar(value):
            raise BadRegistration(
                f"meta {key!r}: values must be strings, finite numbers, booleans or null "
                f"(meta is a flat map), got {type(value).__name__}"
            )
    try:
        # Sorted keys: the same meta always gives the same text, so re-registering with the
        # same meta is not a change (no publish, no notify).
        return json.dumps(dict(meta), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadRegistration(f"meta must be a JSON object: {exc}") from exc


def _valid_weight(value: object) -> bool:
    try:
        parse_weight(value)
    except ValueError:
        return False
    return True


def _addr_bound(service: str, members: Iterable[object], metas: Mapping[Any, Any]) -> AddrBound:
    meta_by_member = {text(k): text(v) for k, v in metas.items()}
    addrs: set[Address] = set()
    for raw in members:
        member = text(raw)
        parsed = _parse_member(member)
        if parsed is None:
            log.warning("registry: ignoring malformed endpoint %r of %s", member, service)
            continue
        meta: dict[str, Any] = {}
        if (meta_text := meta_by_member.get(member)) is not None:
            try:
                loaded = json.loads(meta_text)
            except ValueError:
                loaded = None
            if isinstance(loaded, dict):
                meta = loaded
            else:
                log.warning("registry: ignoring bad meta of %s %s", service, member)
            if WEIGHT_META_KEY in meta and not _valid_weight(meta[WEIGHT_META_KEY]):
                # Written before the weight rule (or by hand): serve the default instead.
                log.warning(
                    "registry: ignoring bad %s %r of %s %s",
                    WEIGHT_META_KEY,
                    meta.pop(WEIGHT_META_KEY),
                    service,
                    member,
                )
        addrs.add(Address(parsed[0], parsed[1], meta))
    return AddrBound(frozenset(addrs))
