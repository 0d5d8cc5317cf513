"""Load tests: locust scenarios (``python -m loadtests.run``) and benchmarks.

Black-box on purpose: nothing here imports ``shared``, ``namerd`` or ``linker``; they are started
as subprocesses and driven over HTTP only, so the same code runs against any deployment.
"""
