"""namerd's exception tree.

    NamerdError                  root; anything namerd raises on purpose
    └── StorageError             the dtab store failed (500 unless a subclass says otherwise)
        ├── StorageUnavailable   Redis cannot be reached; try again later (503)
        ├── EmbeddedRedisError   the embedded redis-server could not be started (503)
        ├── NamespaceExists      create() on an existing namespace (409)
        ├── NamespaceNotFound    update()/delete() on a missing namespace (404)
        ├── VersionMismatch      update() with a stale version, i.e. a failed If-Match (412)
        └── InvalidNamespace     the namespace name is not allowed (400)

Each class has an ``http_status`` hint, as h11 gives its errors an ``error_status_hint``. The
storage layer knows nothing about HTTP. The hint only records the status that namerd's HTTP API
answers with (docs/namerd-api.md, Dtabs), so the API layer can map every storage error in one place.
HTTP-level errors are added to this tree by the API layer.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "EmbeddedRedisError",
    "InvalidNamespace",
    "NamerdError",
    "NamespaceExists",
    "NamespaceNotFound",
    "StorageError",
    "StorageUnavailable",
    "VersionMismatch",
]


class NamerdError(Exception):
    """Base class of every error namerd raises on purpose.

    Attributes:
        http_status: the HTTP status the API should answer with. It defaults to the class's
            ``default_http_status``, and a single instance may override it.
        details: extra facts for a JSON error body, e.g. ``{"configKey": "allowNetworks"}``
            (the registry's bodies are JSON; namerd's own are plain text and leave them out).
    """

    default_http_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        details: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status: int = http_status if http_status is not None else self.default_http_status
        self.details: dict[str, str] = details or {}


class StorageError(NamerdError):
    """The dtab store failed in a way that no subclass describes (an unexpected Redis reply)."""


class StorageUnavailable(StorageError):
    """Redis cannot be reached, so the request cannot be served right now.

    Reads that have a last-known value never raise this. A write that raised it may or may
    not have been applied (the connection can break after Redis ran the command), so the
    client should read the namespace again before it retries.
    """

    default_http_status = 503


class EmbeddedRedisError(StorageError):
    """The embedded redis-server binary is missing, or it failed to start or to answer PING."""

    default_http_status = 503


class NamespaceExists(StorageError):
    """``create`` was called for an existing namespace (namerd: DtabNamespaceAlreadyExists)."""

    default_http_status = 409

    def __init__(self, namespace: str) -> None:
        super().__init__(f"namespace {namespace!r} already exists")
        self.namespace = namespace


class NamespaceNotFound(StorageError):
    """``update`` or ``delete`` was called for a missing namespace (DtabNamespaceDoesNotExist)."""

    default_http_status = 404

    def __init__(self, namespace: str) -> None:
        super().__init__(f"namespace {namespace!r} does not exist")
        self.namespace = namespace


class VersionMismatch(StorageError):
    """The compare-and-set version does not match the stored one (DtabVersionMismatch).

    Attributes:
        namespace: the namespace that was being updated.
        expected: the version the caller sent (e.g. decoded from If-Match).
        actual: the version currently stored.
    """

    default_http_status = 412

    def __init__(self, namespace: str, expected: int, actual: int) -> None:
        super().__init__(
            f"namespace {namespace!r} is at version {actual}, not {expected}; "
            "read it again and retry with the current version"
        )
        self.namespace = namespace
        self.expected = expected
        self.actual = actual


class InvalidNamespace(StorageError):
    """The namespace name breaks the rule of ``namerd.storage.store.NAMESPACE_PATTERN``."""

    default_http_status = 400

    def __init__(self, namespace: str, reason: str) -> None:
        super().__init__(f"invalid namespace {namespace!r}: {reason}")
        self.namespace = namespace
        self.reason = reason
