"""The error tree's statuses, and error_response's shape (Linkerd's l5d-err contract)."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from linker import errors
from linker.errors import (
    MAX_L5D_ERR_BYTES,
    BadDtabHeader,
    BadRequest,
    BindingFailed,
    ConnectFailed,
    FramingError,
    HeadersTooLarge,
    InternalError,
    LinkerError,
    LoopDetected,
    NoEndpoints,
    NoNameIdentified,
    PoolExhausted,
    RequestLineTooLong,
    RequestTimeout,
    UpstreamProtocolError,
    UpstreamTimeout,
    VersionNotSupported,
    error_response,
)


@pytest.mark.parametrize(
    ("cls", "status", "retryable"),
    [
        (BadRequest, 400, False),
        (NoNameIdentified, 400, False),
        (BadDtabHeader, 400, False),
        (LoopDetected, 400, False),
        (FramingError, 400, False),
        (RequestTimeout, 408, False),
        (RequestLineTooLong, 414, False),
        (HeadersTooLarge, 431, False),
        (VersionNotSupported, 505, False),
        (NoEndpoints, 502, False),
        (ConnectFailed, 502, True),
        (UpstreamProtocolError, 502, False),
        (BindingFailed, 502, False),
        (InternalError, 502, False),
        (PoolExhausted, 503, False),
        (UpstreamTimeout, 503, False),
    ],
)
def test_statuses(cls: type[LinkerError], status: int, retryable: bool) -> None:
    err = cls("what to do")
    assert isinstance(err, LinkerError)
    assert (err.status, err.retryable, err.message, str(err)) == (
        status,
        retryable,
        "what to do",
        "what to do",
    )


def test_all_exports_every_error() -> None:
    classes = {
        n
        for n, v in vars(errors).items()
        if isinstance(v, type) and v.__module__ == errors.__name__
    }
    assert classes <= set(errors.__all__)


def test_the_module_docstring_draws_the_whole_tree() -> None:
    """The tree at the top of linker/errors.py lists every error with its real status."""
    drawn = {}
    for line in (errors.__doc__ or "").splitlines():
        parts = line.replace("├──", " ").replace("└──", " ").replace("│", " ").split()
        if len(parts) >= 2 and parts[0] in errors.__all__ and parts[1].isdigit():
            drawn[parts[0]] = int(parts[1])
    real = {
        name: cls.status
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, LinkerError) and cls is not LinkerError
    }
    assert drawn == real


def test_error_response_shape() -> None:
    message = "No hosts are available for /svc/users: Dtab.local=[/svc=>/#/io.l5d.fs] 100%"
    status, headers, body = error_response(NoEndpoints(message))
    assert status == 502
    assert headers == [
        (
            b"l5d-err",
            b"No%20hosts%20are%20available%20for%20/svc/users%3A%20Dtab.local%3D%5B"
            b"/svc%3D%3E/%23/io.l5d.fs%5D%20100%25",
        ),
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(body)).encode()),
    ]
    assert unquote(headers[0][1].decode()) == message
    assert body == message.encode() + b"\n"


def test_retryable_errors_say_so() -> None:
    _, headers, _ = error_response(ConnectFailed("Connection to 10.0.0.1:80 refused"))
    assert (b"l5d-retryable", b"true") in headers
    _, headers, _ = error_response(UpstreamTimeout("slow"))
    assert all(name != b"l5d-retryable" for name, _ in headers)


def test_instance_status_override() -> None:
    err = BadRequest("Transfer-Encoding gzip is not implemented")
    err.status = 501
    assert error_response(err)[0] == 501
    assert BadRequest("x").status == 400


def test_body_is_cut_to_max_err_bytes_without_splitting_utf8() -> None:
    status, headers, body = error_response(BindingFailed("é" * 100), max_err_bytes=11)
    assert body == "é".encode() * 5  # 10 bytes: the 11th would split a character
    assert dict(headers)[b"content-length"] == b"10"


def test_l5d_err_is_cut_without_splitting_an_escape() -> None:
    for prefix in ("", "a", "ab"):
        _, headers, _ = error_response(InternalError(prefix + "/ " * 5000))
        value = dict(headers)[b"l5d-err"]
        assert len(value) <= MAX_L5D_ERR_BYTES
        assert not value.endswith((b"%", b"%2"))
        assert unquote(value.decode()).startswith(prefix + "/ /")


def test_a_listing_of_endpoints_is_bounded() -> None:
    items = [f"10.0.0.{i}:80" for i in range(errors.MAX_LISTED_ENDPOINTS + 2)]
    assert errors.listing(items[:2]) == "10.0.0.0:80, 10.0.0.1:80"
    assert errors.listing(items).endswith("10.0.0.4:80 and 2 more")
    assert "10.0.0.5:80" not in errors.listing(items)
