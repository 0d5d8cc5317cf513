"""The upstream side: a pool of keep-alive HTTP/1.1 client connections, one h11 CLIENT each.

Three layers, as httpcore's: :mod:`.pool` decides which connection serves a request (pure
bookkeeping plus the connect; FIFO waiters when ``max_per_host`` is reached), :mod:`.exchange`
drives one request/response over one connection and hands the connection back through a
release callback, and :mod:`.connection` is one TCP connection with its h11 state machine.
Each layer imports only the ones below it.  Errors are mapped once, where they happen, into
the linker's tree (:mod:`linker.errors`): connect errors → ``ConnectFailed`` (connection),
garbage, an early close or a response head over the size limit → ``UpstreamProtocolError``,
a late response head or a stalled response body → ``UpstreamTimeout`` (exchange), too many
waiters → ``PoolExhausted`` (pool).
"""

from linker.http.upstream.pool import POOL_EVENTS, PoolLimits, UpstreamPool

__all__ = ["POOL_EVENTS", "PoolLimits", "UpstreamPool"]
