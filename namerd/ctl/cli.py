"""namerctl's command line: arguments, settings, and the exit status.

``main`` never raises: every failure is one line on stderr (``namerctl: ...``) and a non-zero
exit, 1 for a failed request or bad input, 2 for bad arguments or settings. Bare ``namerctl``
is a usage error (usage on stderr, exit 2: a script that lost its arguments must not pass);
``namerctl dtab`` alone prints that group's help, as cobra does. Global options are accepted
before or after the command, as namerctl's persistent flags; ``--version`` only before it
(``dtab update --version`` is an ETag).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path as FsPath
from typing import Any, NoReturn

from namerd.ctl.client import Client
from namerd.ctl.commands.dtab import (
    cmd_dtab_create,
    cmd_dtab_delete,
    cmd_dtab_diff,
    cmd_dtab_get,
    cmd_dtab_history,
    cmd_dtab_list,
    cmd_dtab_rollback,
    cmd_dtab_update,
)
from namerd.ctl.commands.lookup import cmd_bind, cmd_delegate, cmd_resolve
from namerd.ctl.errors import CtlError, UsageError
from namerd.ctl.settings import (
    CONFIG_NAMES,
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT_S,
    ENV_BASE_URL,
    ENV_TOKEN,
    resolve_settings,
)
from shared.cli import add_cli_habits

__all__ = ["build_parser", "main", "run"]


class _HelpExit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and never calls sys.exit itself."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("namerctl").strip()
        where = f"{command}: " if command else ""
        raise UsageError(f"{where}{message} (see '{self.prog} --help')")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message.rstrip("\n"), file=sys.stderr)
        raise _HelpExit(status)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "t", "true", "yes", "on"):
        return True
    if lowered in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


TOP_HELP = f"""\
namerctl manages namerd's delegation tables (dtabs) and explains how names route.

Settings (first found wins: flag, environment, config file, default):
  base URL   --base-url, ${ENV_BASE_URL}, config key base-url ({DEFAULT_BASE_URL})
  token      --token, ${ENV_TOKEN}, config key token (sent as Authorization: Bearer)
  timeout    --timeout-s, config key timeout-s ({DEFAULT_TIMEOUT_S:g} s)
The config file is --config FILE, else the first of {", ".join(CONFIG_NAMES)}
found in the working directory or one of its parents.

Exit status: 0 ok, 1 request failed or bad input, 2 bad arguments or settings."""

UPDATE_HELP = """\
Replace a dtab, and print what changed: '- ' for each dentry removed, '+ ' for each added.
FILE (or - for stdin) is a text dtab, or JSON if it starts with { or [:
{"version": "<etag>", "dtab": [...]} as `dtab get --json` prints, or a list of dentries.

Refused (exit 1, nothing sent): a namespace that does not exist, unless --create (then it is
created); a dtab with no dentries (every name would stop routing), unless --allow-empty.

Which version is sent as If-Match (the update then fails with 412 if the dtab changed):
  1. --version ETAG, if given. It wins over a version in the JSON file (namerctl#21 fix:
     re-applying a saved file no longer fails forever; pass the current version instead).
  2. else the JSON file's "version" field, if any;
  3. else the version namerctl reads just before writing, so what it prints is exactly what
     it changed, and a concurrent write makes it fail instead of being lost."""

HISTORY_HELP = """\
Show the writes namerd kept for a dtab (storage.historySize, default 50), newest first:
version, time (UTC), operation (create, update = with If-Match, put = without, delete), who
('token' when namerd checks a token, else -), the client's address, and the dentry count.
--diff adds what each write changed."""

ROLLBACK_HELP = """\
Write the dtab of an older VERSION (a number, or an ETag) from the history back, and print what
changed. It is sent with If-Match: the version read just before (or --version ETAG), so if
someone changes the dtab meanwhile, nothing is written and namerctl exits 1 with a conflict.
A deleted namespace is re-created only with --create; an empty dtab needs --allow-empty."""

DIFF_HELP = """\
Dry run: what FILE would change, without writing it. Prints the dentries removed ('- ') and
added ('+ '), then, for every name in use (the names the answering namerd worker's watch
streams, i.e. linkers, bind in this namespace) and every --path, its bound tree before and
after. A dtab that does not parse is reported with its line and column."""

GET_EPILOG = """\
--pretty (the default) prints '# version <etag>', then one 'prefix  => dst ;' line per
dentry, prefixes padded to one width; --pretty=false prints 'p=>d;p=>d;'; --json prints
{"version":"<etag>","dtab":[...]}, which `dtab update` accepts back."""

CREATE_EPILOG = """\
FILE (or - for stdin) is a text dtab, or JSON if it starts with { or [:
{"version": .., "dtab": [...]} (the version is ignored) or a list of dentries.
A dtab with no dentries routes nothing; it is refused unless --allow-empty."""

ALLOW_EMPTY_HELP = "accept a dtab with no dentries (it routes nothing)"

LOOKUP_EPILOG = """\
PATH is a name such as /svc/users; --dtab adds rules for this lookup only (like the l5d-dtab
header), with priority over the stored dtab."""


def build_parser() -> _Parser:
    common = _Parser(add_help=False)
    g = common.add_argument_group("global options")
    g.add_argument(
        "--base-url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help=f"namerd's HTTP API, e.g. http://namerd:4180 (env {ENV_BASE_URL}; "
        f"default {DEFAULT_BASE_URL})",
    )
    g.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="config file with a base-url key (default: .namerctl.yaml/.yml/.json searched in "
        "the working directory and its parents)",
    )
    g.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help=f"bearer token for namerd's writes (env {ENV_TOKEN})",
    )
    g.add_argument(
        "--timeout-s",
        default=argparse.SUPPRESS,
        type=_positive_float,
        metavar="SECONDS",
        help=f"request timeout (default {DEFAULT_TIMEOUT_S:g})",
    )

    def sub(group: Any, name: str, aliases: Sequence[str], help_: str, **kw: Any) -> _Parser:
        p: _Parser = group.add_parser(
            name,
            aliases=list(aliases),
            help=help_,
            description=kw.pop("description", help_),
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kw,
        )
        return p

    parser = _Parser(
        prog="namerctl",
        description=TOP_HELP,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Top level only: on the commands, --version is an ETag (dtab update, rollback).
    add_cli_habits(parser, log_levels=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    dtab = sub(commands, "dtab", [], "control namerd's delegation tables")
    dtab_cmds = dtab.add_subparsers(dest="dtab_command", metavar="COMMAND")

    p = sub(dtab_cmds, "list", ["ls"], "list dtab names")
    p.add_argument("--json", action="store_true", help="print the JSON array")
    p.set_defaults(func=cmd_dtab_list)

    p = sub(
        dtab_cmds,
        "get",
        ["cat"],
        "print a dtab and its version",
        epilog=GET_EPILOG,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print version and dtab as JSON")
    p.add_argument(
        "--pretty",
        type=_bool,
        default=True,
        metavar="true|false",
        help="aligned, one dentry per line (default true)",
    )
    p.set_defaults(func=cmd_dtab_get)

    p = sub(
        dtab_cmds,
        "create",
        ["new"],
        "create a dtab (fails if it exists)",
        epilog=CREATE_EPILOG,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("--allow-empty", action="store_true", help=ALLOW_EMPTY_HELP)
    p.set_defaults(func=cmd_dtab_create)

    p = sub(dtab_cmds, "update", ["up"], "replace a dtab", description=UPDATE_HELP)
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument(
        "--version",
        metavar="ETAG",
        help="only update if the dtab is still at this version; wins over a version in the "
        "JSON file (namerctl#21)",
    )
    p.add_argument(
        "--create", action="store_true", help="create the namespace if it does not exist"
    )
    p.add_argument("--allow-empty", action="store_true", help=ALLOW_EMPTY_HELP)
    p.set_defaults(func=cmd_dtab_update)

    p = sub(dtab_cmds, "delete", ["del", "rm"], "delete a dtab")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_dtab_delete)

    p = sub(dtab_cmds, "history", ["log"], "show a dtab's recorded writes",
            description=HISTORY_HELP)  # fmt: skip
    p.add_argument("name", metavar="NAME")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="only the N newest")
    p.add_argument("--diff", action="store_true", help="show what each write changed")
    p.add_argument("--json", action="store_true", help="print namerd's JSON")
    p.set_defaults(func=cmd_dtab_history)

    p = sub(dtab_cmds, "rollback", [], "write an older version of a dtab back",
            description=ROLLBACK_HELP)  # fmt: skip
    p.add_argument("name", metavar="NAME")
    p.add_argument("target", metavar="VERSION")
    p.add_argument("--version", metavar="ETAG", help="only if the dtab is still at this version")
    p.add_argument("--create", action="store_true", help="re-create a deleted namespace")
    p.add_argument("--allow-empty", action="store_true", help=ALLOW_EMPTY_HELP)
    p.set_defaults(func=cmd_dtab_rollback)

    p = sub(dtab_cmds, "diff", ["dry-run"], "show what a new dtab would change, writing nothing",
            description=DIFF_HELP)  # fmt: skip
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument(
        "--path",
        dest="paths",
        action="append",
        default=[],
        metavar="PATH",
        help="also compare this name (repeatable), e.g. --path /svc/users",
    )
    p.add_argument("--json", action="store_true", help="print namerd's dry-run JSON")
    p.set_defaults(func=cmd_dtab_diff)

    for name, func, help_, json_help in (
        (
            "delegate",
            cmd_delegate,
            "explain, step by step, how the dtab routes a path",
            "print namerd's delegate tree JSON",
        ),
        (
            "bind",
            cmd_bind,
            "bind a path: the bound tree with ids, residuals and addresses",
            "print namerd's bound tree JSON",
        ),
        (
            "resolve",
            cmd_resolve,
            "resolve a path to its addresses (one per line; exit 1 if it does not resolve)",
            "print namerd's addr JSON",
        ),
    ):
        p = sub(commands, name, [], help_, epilog=LOOKUP_EPILOG)
        p.add_argument("namespace", metavar="NS")
        p.add_argument("path", metavar="PATH")
        p.add_argument("--dtab", metavar="DTAB", help="extra dtab rules for this lookup")
        p.add_argument("--json", action="store_true", help=json_help)
        p.set_defaults(func=func)

    parser.set_defaults(help_parser=parser)
    dtab.set_defaults(help_parser=dtab)
    return parser


def _preprocess(argv: Sequence[str]) -> list[str]:
    """A bare ``--pretty`` means ``--pretty=true`` and never eats the next argument (Go's
    bool flags: ``dtab get --pretty NAME``)."""
    result: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            result.extend(argv[i:])
            break
        result.append("--pretty=true" if arg == "--pretty" else arg)
    return result


def run(argv: Sequence[str], env: Mapping[str, str], cwd: FsPath) -> int:
    parser = build_parser()
    args = parser.parse_args(_preprocess(argv))
    func = getattr(args, "func", None)
    if args.command is None:  # bare `namerctl`: nothing to do is a usage error
        parser.print_usage(sys.stderr)
        print("namerctl: a command is required (see 'namerctl --help')", file=sys.stderr)
        return 2
    if func is None:  # a command group alone (`namerctl dtab`): its help, as cobra
        args.help_parser.print_help(sys.stdout)
        return 0
    settings = resolve_settings(args, env, cwd)
    client = Client(settings)
    try:
        return int(func(client, args))
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The ``namerctl`` command. Returns the exit status; never raises."""
    if argv is None:
        argv = sys.argv[1:]
    try:
        return run(list(argv), os.environ, FsPath.cwd())
    except _HelpExit as done:
        return done.code
    except CtlError as err:
        _report(str(err))
        return err.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout went away (e.g. `| head`): stop quietly, without Python's exit-time complaint.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as err:  # a bug here must still be one line, not a traceback
        _report(f"internal error: {type(err).__name__}: {err}")
        return 1


def _report(message: str) -> None:
    text = "namerctl: " + " ".join(message.split())
    try:
        print(text, file=sys.stderr)
    except UnicodeEncodeError:
        print(text.encode("ascii", "replace").decode("ascii"), file=sys.stderr)
