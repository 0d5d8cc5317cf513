"""namerd's HTTP surface: the control API (``io.l5d.httpController``), watch streams and admin.

The API is Falcon ASGI resources, one module per resource group; status codes, bodies and
headers follow namerd's:

* ``dtabs``: ``/api/1/dtabs`` (list, get, create, update with If-Match, delete, watch);
* ``lookups``: ``/api/1/bind``, ``addr``, ``resolve``, ``delegate`` and ``bound-names``;
* ``registry``: ``/api/1/registry``, for the ``io.l5d.registry`` namer (not in namerd);
* ``streaming``: ``watch=1`` responses;
* ``resource``: the base class and request parsing the resources share;
* ``problems``: the one place errors become HTTP responses;
* ``routes``: the URL table (``add_api_routes``);
* ``admin``: the admin server (ping, metrics, a page of the dtabs).

Where namerd is weak we do better:

* a missing ``path`` parameter is 400 (namerd: a 500 from a null pointer);
* a malformed ``dtab`` parameter is 400 ``Invalid dtab: ...`` (namerd: an empty 500);
* parse errors come with namerd's message line, then a caret diagram of where the problem is;
* non-watch bind/addr/resolve wait at most ``limits.lookupTimeoutMs`` for a pending value, then
  503 (namerd waits forever, issue #1349);
* watch streams heartbeat, notice disconnects at once, and never send a plain-text error line;
* ``/api/1/resolve`` merges a union's branches instead of picking one at random per evaluation;
* an empty ``bound-names`` is ``[]`` (namerd: ``[""]``);
* writes can require a bearer token; bodies over ``limits.maxBodyBytes`` get 413.
"""
