"""Routing: from an HTTP request to a bound name, an endpoint and a response (the router).

Identifiers name the request, deadlines bound it, and the router drives naming, policy and the
upstream pool for each request.  A router's client and service policy state (balancers,
failure accrual, retry budgets) lives in one ``RouterPolicies`` that all of its servers share.
"""
