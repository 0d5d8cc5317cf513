"""``namerctl``: manage namerd's dtabs and explain its routing from the command line.

A re-implementation of Linkerd's ``namerctl`` on httpx, plus ``delegate``, ``bind`` and
``resolve`` commands for namerd's lookup endpoints::

    namerctl [--base-url URL] [--config FILE] [--token T] [--timeout-s S] COMMAND ...

    dtab list|ls [--json]
    dtab get|cat NAME [--json] [--pretty=true|false]
    dtab create|new NAME FILE|- [--allow-empty]
    dtab update|up NAME FILE|- [--version ETAG] [--create] [--allow-empty]
    dtab delete|del|rm NAME
    dtab history|log NAME [--limit N] [--diff] [--json]
    dtab rollback NAME VERSION [--version ETAG] [--create] [--allow-empty]
    dtab diff|dry-run NAME FILE|- [--path PATH ...] [--json]
    delegate NS PATH [--dtab DTAB] [--json]
    bind NS PATH [--dtab DTAB] [--json]
    resolve NS PATH [--dtab DTAB] [--json]

Settings, first found wins: the flag, the environment (``NAMERCTL_BASE_URL``,
``NAMERCTL_TOKEN``), the config file (``--config FILE``, else the first ``.namerctl.yaml``,
``.namerctl.yml`` or ``.namerctl.json`` in the working directory or a parent; keys
``base-url``, ``token``, ``timeout-s``), the default (``http://127.0.0.1:4180``, no token, 10 s).

Where we differ from namerctl, on purpose:

* ``dtab update --version`` wins over a ``version`` field in a JSON file (namerctl#21: a file
  saved by ``dtab get --json`` carries its old version, so the second update failed with 412
  and the flag could not rescue it). Without the flag, the file's version is used, as before.
* A JSON file may also be a bare ``[{"prefix":..,"dst":..}]`` list (namerd's own JSON).
* A dtab file is checked locally (same parser as namerd) before anything is sent, so a typo
  is reported with its file, line and column.
* Writes succeed only on namerd's 204 (or 201); a 200, or a 404 to a create, cannot come from
  namerd's API (e.g. the admin port answered) and is an error, not a false "Created"
  (namerctl#28).
* Global options are accepted before or after the command, as namerctl's persistent flags.
* Changing a dtab is guarded (``commands.dtab``): no empty dtab without ``--allow-empty``, no
  implicit create by ``update`` without ``--create``; ``update`` and ``rollback`` print the
  dentries they removed and added, and write with If-Match on the version they read.
* ``delegate``, ``bind`` and ``resolve`` on a namespace that does not exist fail (exit 1) and
  name the namespaces that do, where namerd answers with an empty dtab (a ``neg``).
* Every failure is one line on stderr (``namerctl: ...``) and a non-zero exit: 1 for a failed
  request or bad input, 2 for bad arguments or settings. Never a traceback.

Modules: ``cli`` (arguments, ``main``), ``settings``, ``client`` (namerd's HTTP API), ``errors``,
``inputs`` (dtab files), ``render`` (tree and diff drawings), ``commands.dtab`` and
``commands.lookup``.
namerctl is a client: it imports only ``shared`` and itself, never namerd's server side.
"""

from __future__ import annotations

from namerd.ctl.cli import main

__all__ = ["main"]
