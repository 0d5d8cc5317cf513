"""Routing: from an HTTP request to a bound name, an endpoint and a response (the router).

Identifiers name the request, deadlines bound it, and the router drives naming, policy and the
upstream pool for each request.
"""
