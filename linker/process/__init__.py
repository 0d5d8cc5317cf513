"""Processes: the synchronous pre-fork master, its trio workers, heartbeats and the admin server.

This layer knows nothing about routing: a worker runs whatever ``WorkerMain`` it is handed.
"""
