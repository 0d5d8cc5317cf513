"""Naming on the linker's side: interpreters turning a logical name into bound endpoints.

The default interpreter binds with the router's own dtab and local namers; the namerd
interpreter watches namerd. The admin server's route explainer (``explain``, run in the master)
lives here too.
"""
