"""HTTP/1.1 on both sides of the proxy: messages, the h11 server and the upstream client pool.

Nothing here knows about names, dtabs or policies: the server hands each request to a
``Handler`` and the pool sends a request to an address it is given.
"""
