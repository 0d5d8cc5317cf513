"""Building a router's interpreter from its ``interpreter`` config (Linkerd's shape).

:func:`build_interpreter` checks the config and builds one of the two interpreters
(docs/linkerd-compat.md, Interpreters):

``io.l5d.namerd.http`` (``namerd.NamerdHttpInterpreter``)
    namerd binds; the worker keeps watch streams to it (``watches.py``, ``transport.py``).

``default`` (``default.DefaultInterpreter``)
    The linker binds itself with its own ``io.l5d.fs`` namers and ``/$/inet``.

Both keep the contract in ``contract.py`` (``Destination``, ``Interpreter``, the errors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from linker.naming.contract import DEFAULT_BIND_TIMEOUT_S, Interpreter, InterpreterConfigError
from linker.naming.default import DefaultInterpreter
from linker.naming.local_namers import DEFAULT_IDLE_TTL_S
from linker.naming.namerd import NamerdHttpInterpreter
from linker.naming.transport import DEFAULT_NAMESPACE, parse_dst
from linker.naming.watches import DEFAULT_RETRY_BASE_S, DEFAULT_RETRY_MAX_S
from shared import REQUEST_DTAB_BUDGET, STORED_DTAB_BUDGET, Dtab, WorkBudget
from shared.budget import budget_from_config

__all__ = ["build_interpreter"]

_NAMERD_KEYS: Final = frozenset({"kind", "dst", "namespace", "experimental", "retry"})
_DEFAULT_KEYS: Final = frozenset({"kind", "storedDtabBudget", "requestDtabBudget"})


def _retry(value: Any) -> tuple[float, float]:
    if value is None:
        return DEFAULT_RETRY_BASE_S, DEFAULT_RETRY_MAX_S
    if not isinstance(value, Mapping):
        raise InterpreterConfigError(
            f"interpreter io.l5d.namerd.http: retry must be {{baseSeconds, maxSeconds}}, "
            f"got {value!r}"
        )
    unknown = sorted(set(value) - {"baseSeconds", "maxSeconds"})
    if unknown:
        raise InterpreterConfigError(
            f"interpreter io.l5d.namerd.http: unknown key retry.{unknown[0]} "
            "(allowed: baseSeconds, maxSeconds)"
        )
    out = []
    for key, default in (
        ("baseSeconds", DEFAULT_RETRY_BASE_S),
        ("maxSeconds", DEFAULT_RETRY_MAX_S),
    ):
        v = value.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InterpreterConfigError(
                f"interpreter io.l5d.namerd.http: retry.{key} must be a number, got {v!r}"
            )
        out.append(float(v))
    base, top = out
    if not 0 < base <= top:
        raise InterpreterConfigError(
            "interpreter io.l5d.namerd.http: retry needs 0 < baseSeconds <= maxSeconds, "
            f"got baseSeconds={base:g}, maxSeconds={top:g}"
        )
    return base, top


def _budget(cfg: Mapping[str, Any], key: str, default: WorkBudget) -> WorkBudget:
    return budget_from_config(cfg.get(key), key, default, error=InterpreterConfigError)


def build_interpreter(
    config: Mapping[str, Any] | None,
    base_dtab: Dtab,
    namers: Sequence[Mapping[str, Any]],
    *,
    bind_timeout_s: float = DEFAULT_BIND_TIMEOUT_S,
    idle_ttl_s: float = DEFAULT_IDLE_TTL_S,
    last_known_dir: str | None = None,
    last_known_name: str = "router",
) -> Interpreter:
    """Build a router's interpreter from its ``interpreter`` config (Linkerd's shape).

    Args:
        config: None or ``{kind: default, storedDtabBudget: {..}, requestDtabBudget: {..}}``
            (the budgets: ``linker.naming.default``); or ``{kind: io.l5d.namerd.http, dst:
            /$/inet/127.0.0.1/4180, namespace: default, experimental: true, retry:
            {baseSeconds: 5, maxSeconds: 600}}``. ``experimental`` is accepted, not required.
        base_dtab: the router's ``dtab``.
        namers: the top-level ``namers`` (used by the default interpreter only, as in Linkerd).
        bind_timeout_s: the router's ``bindingTimeoutMs`` / 1000. Default 10 s.
        idle_ttl_s: forget names (watches, cached results) unused this long. Not configurable:
            Linkerd's ``bindingCache`` is refused (``linker.config.load``), so it is always
            ``DEFAULT_IDLE_TTL_S`` (600 s, ``linker.naming.local_namers``).
        last_known_dir / last_known_name: see ``namerd.NamerdHttpInterpreter`` (namerd only).

    Raises:
        InterpreterConfigError: an unknown kind or key, a bad ``dst`` or ``retry``.
    """
    cfg: Mapping[str, Any] = config or {}
    if not isinstance(cfg, Mapping):
        raise InterpreterConfigError(f"interpreter must be an object with a kind, got {cfg!r}")
    kind = cfg.get("kind", "default")
    if kind == "default":
        unknown = sorted(set(cfg) - _DEFAULT_KEYS)
        if unknown:
            raise InterpreterConfigError(
                f"interpreter default: unknown key {unknown[0]!r} (transformers are not supported)"
            )
        return DefaultInterpreter(
            base_dtab,
            namers,
            bind_timeout_s=bind_timeout_s,
            idle_ttl_s=idle_ttl_s,
            stored_budget=_budget(cfg, "storedDtabBudget", STORED_DTAB_BUDGET),
            request_budget=_budget(cfg, "requestDtabBudget", REQUEST_DTAB_BUDGET),
        )
    if kind != "io.l5d.namerd.http":
        raise InterpreterConfigError(
            f"unknown interpreter kind {kind!r} (supported: default, io.l5d.namerd.http)"
        )
    unknown = sorted(set(cfg) - _NAMERD_KEYS)
    if unknown:
        hint = " (TLS to namerd is not supported)" if "tls" in unknown else ""
        raise InterpreterConfigError(
            f"interpreter io.l5d.namerd.http: unknown key {unknown[0]!r}{hint} "
            f"(allowed: {', '.join(sorted(_NAMERD_KEYS))})"
        )
    if "dst" not in cfg:
        raise InterpreterConfigError(
            "interpreter io.l5d.namerd.http: dst is required, e.g. /$/inet/127.0.0.1/4180"
        )
    try:
        dst = parse_dst(cfg["dst"])
    except ValueError as err:
        raise InterpreterConfigError(f"interpreter io.l5d.namerd.http: {err}") from None
    namespace = cfg.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not namespace:
        raise InterpreterConfigError(
            f"interpreter io.l5d.namerd.http: namespace must be a non-empty string, "
            f"got {namespace!r}"
        )
    if not isinstance(cfg.get("experimental", True), bool):
        raise InterpreterConfigError("interpreter io.l5d.namerd.http: experimental must be a bool")
    base_s, max_s = _retry(cfg.get("retry"))
    return NamerdHttpInterpreter(
        dst,
        namespace,
        base_dtab=base_dtab,
        retry_base_s=base_s,
        retry_max_s=max_s,
        idle_ttl_s=idle_ttl_s,
        bind_timeout_s=bind_timeout_s,
        last_known_dir=last_known_dir,
        last_known_name=last_known_name,
    )
