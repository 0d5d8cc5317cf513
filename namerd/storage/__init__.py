"""Storage: dtabs, versions and watches in Redis (embedded ``redis-server`` by default).

Modules, bottom-up:

* ``connection``: the "Redis is down" errors, reply decoding, the RESP2 pub/sub connection;
* ``pubsub``: the one pub/sub reader (reconnects, re-subscribes, PING on silence), used by the
  store's watches and by the registry namer and the AddrMirror (``ChannelFeed``);
* ``scripts``: the store's writes as atomic Lua scripts;
* ``watches``: ``Watch`` and the per-store hub that shares topics and one connection;
* ``store``: ``RedisDtabStore``, versioned CRUD with compare-and-set and last-known reads;
* ``embedded_redis``: the private redis-server namerd starts when no Redis is configured.
"""
