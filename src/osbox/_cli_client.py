"""The `osbox` subcommands that talk to an OpenSandbox server (osbox serve or a deployment):

    osbox ls [--state S] [--metadata K=V]            sandboxes, as a table
    osbox create [IMAGE] [--lifetime S|none] ...     create one, wait until it runs commands, print its id
    osbox exec ID [--cwd DIR] COMMAND...              run a command, its output live, its exit code ours
    osbox upload ID LOCAL REMOTE                      a file in, with a progress bar and a summary line
    osbox download ID REMOTE LOCAL                    a file out, with a progress bar and a summary line
    osbox rm ID...                                    delete sandboxes
    osbox shell ID [--cwd DIR] [-- COMMAND...]        an interactive terminal (`_cli_shell.py`)
    osbox shell ID --readonly [--session S]           watch a terminal another client drives
    osbox create --allow pypi.org ...                 its outbound traffic denied but to these targets
    osbox egress get|allow|deny|rm ID ...             its egress policy (`_cli_egress.py`)
    osbox egress vault|credential-set|binding-set ID  its credential vault, values never in argv

`--url` and `--api-key` default to `OPEN_SANDBOX_DOMAIN` and `OPEN_SANDBOX_API_KEY`, as for the SDK.
Errors print one line and exit 1. On a terminal, tables and progress bars use rich when it is installed
(the `server` extra brings it); into a pipe, tables are tab-separated lines for `cut` and friends.

`osbox exec` takes its options before or after the id; the command starts at the first word that is not
an option (or after `--`) and runs to the end. One word is a shell command line (`'ls | wc -l'`); several
words are an argv, quoted into a command line word for word (`-- touch "my file"` makes one file).
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import ExecdClient, LifecycleClient, Progress

__all__ = ["CLIENT_SUBCOMMANDS"]


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, str] | None:
    """`K=V` arguments as a dict (None when there are none)."""
    if not items:
        return None
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"osbox: {what} must be KEY=VALUE, not {item!r}")
        pairs[key] = value
    return pairs


def _lifetime(text: str) -> float | None:
    if text.lower() in ("none", "never", "0"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seconds or 'none', not {text!r}") from None


def _lifecycle(args: argparse.Namespace) -> LifecycleClient:
    from . import LifecycleClient

    return LifecycleClient(args.url, args.api_key)


def _execd(args: argparse.Namespace) -> ExecdClient:
    """An execd client for the sandbox `args.sandbox_id`, through its endpoint."""
    from . import ExecdClient
    from ._sandbox import EXECD_PORT

    with _lifecycle(args) as lifecycle:
        endpoint = lifecycle.get_endpoint(args.sandbox_id, EXECD_PORT)
    return ExecdClient.from_endpoint(endpoint)


def _print_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], keep_order: Sequence[int] | None = None
) -> None:
    """A rich table on a terminal; tab-separated lines (header first) into a pipe or without rich.

    On a terminal no cell is cut: columns that do not fit whole are left out, least wanted first
    (`keep_order` lists the column indexes, most wanted first; by default the table's order), and a
    caption says which. When not even the first column fits, the lines are printed as into a pipe and
    the terminal wraps them.
    """
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            console = Console()
            order = range(len(columns)) if keep_order is None else keep_order
            shown = _fitting_columns(columns, rows, order, console.width)
            if shown:
                hidden = [name for index, name in enumerate(columns) if index not in shown]
                caption = f"not shown: {', '.join(hidden)} (widen the terminal, or pipe)" if hidden else None
                table = Table(*(columns[i] for i in shown), caption=caption)
                for row in rows:
                    table.add_row(*(row[i] for i in shown))
                console.print(table, crop=False, overflow="ignore")
                return
    print("\t".join(columns))
    for row in rows:
        print("\t".join(row))


def _fitting_columns(
    columns: Sequence[str], rows: Sequence[Sequence[str]], keep_order: Sequence[int], width: int
) -> list[int]:
    """The indexes (in table order) of the columns whose cells fit whole in `width`, most wanted first."""
    used = 1  # the table's left border
    kept: list[int] = []
    for index in keep_order:
        cells = [columns[index], *(row[index] for row in rows)]
        needed = max(map(len, cells)) + 3  # padding on both sides and the border after
        if used + needed > width:
            continue
        used += needed
        kept.append(index)
    return sorted(kept) if keep_order and keep_order[0] in kept else []


@contextmanager
def _progress_bar(label: str) -> Iterator[Progress]:
    """A `Progress` callback drawing a bar on stderr (rich), or nothing without rich or a terminal."""
    if not sys.stderr.isatty():  # off a terminal rich would still leave a blank line
        yield lambda done, total: None
        return
    try:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, TransferSpeedColumn
        from rich.progress import Progress as Bar
    except ImportError:
        yield lambda done, total: None
        return
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    # On stderr: stdout stays clean (rich's default console is stdout).
    with Bar(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# --- handlers ------------------------------------------------------------------------------------------


def _ls(args: argparse.Namespace) -> int:
    with _lifecycle(args) as lifecycle:
        sandboxes = list(
            lifecycle.iter_sandboxes(state=args.state, metadata=_pairs(args.metadata, "--metadata"))
        )
    rows = [
        (
            sandbox.id,
            str(sandbox.status.state),
            sandbox.image.uri if sandbox.image else "-",
            ",".join(f"{k}={v}" for k, v in (sandbox.metadata or {}).items()) or "-",
            sandbox.expires_at.isoformat(timespec="seconds") if sandbox.expires_at else "never",
        )
        for sandbox in sandboxes
    ]
    # Ids are never cut (they are what the other commands take); then state, expiry, image, metadata.
    _print_table(("id", "state", "image", "metadata", "expires"), rows, keep_order=(0, 1, 4, 2, 3))
    return 0


def _create(args: argparse.Namespace) -> int:
    from . import Sandbox
    from ._operation import given

    with Sandbox.create(
        args.image,
        entrypoint=args.entrypoint,
        lifetime=args.lifetime,
        ready_timeout=args.ready_timeout,
        env=_pairs(args.env, "--env"),
        metadata=_pairs(args.metadata, "--metadata"),
        resource_limits=given(cpu=args.cpu, memory=args.memory),  # the SDK's defaults for the rest
        network_policy=_allow_only(args.allow),
        keep=True,
        base_url=args.url,
        api_key=args.api_key,
    ) as sandbox:
        print(sandbox.id)
    return 0


def _split_exec_words(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *, command_required: bool = True
) -> None:
    """Set `args.sandbox_id` and `args.command` from the words after `osbox exec` (or `shell`, whose
    command is optional), parsing the options among them (`osbox exec ID --cwd /tmp pwd`): everything
    from the command's first word on is the command's, options included; `--` ends the options."""
    words = list(args.words)
    options: list[str] = []
    sandbox_id: str | None = None
    while words:
        word = words.pop(0)
        if word == "--":
            break
        if word.startswith("-") and word != "-":
            options.append(word)
            # argparse's own table of option strings: whether this option takes a value.
            action = parser._option_string_actions.get(word.partition("=")[0])
            if action is not None and action.nargs != 0 and "=" not in word and words:
                options.append(words.pop(0))  # the option's value
        elif sandbox_id is None:
            sandbox_id = word
        else:
            words.insert(0, word)
            break
    if sandbox_id is None and words:
        sandbox_id = words.pop(0)  # `osbox exec -- ID COMMAND...`
    parser.parse_args(options, namespace=args)  # unknown options and missing values fail as usual
    if sandbox_id is None or (command_required and not words):
        parser.error(
            "give a sandbox id, then the command to run" if command_required else "give a sandbox id"
        )
    args.sandbox_id, args.command = sandbox_id, words


def _command_line(words: Sequence[str]) -> str:
    """The shell command execd runs: one word is a command line as it is, several an argv quoted
    word for word (execd takes a string and runs it with a shell)."""
    return words[0] if len(words) == 1 else shlex.join(words)


def _exec(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from ._cli_exec import INTERRUPTED_STATUS, run_exec

    _split_exec_words(parser, args)
    try:
        with _execd(args) as execd:
            command = _command_line(args.command)
            stdin, kill = not args.no_stdin, args.kill_on_disconnect
            return run_exec(execd, command, cwd=args.cwd, stdin=stdin, kill_on_disconnect=kill)
    except KeyboardInterrupt:  # before the command started (run_exec handles Ctrl-C from then on)
        print("osbox: interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS


def _transfer(args: argparse.Namespace, move: Callable[[Any, Progress], int], label: str, what: str) -> int:
    """Run `move` (which returns the bytes moved) under a progress bar, then leave one summary line."""
    with _execd(args) as execd, _progress_bar(label) as progress:
        started = time.monotonic()
        size = move(execd, progress)
        seconds = time.monotonic() - started
    if not args.quiet:
        rate = f"{_size(size / seconds)}/s" if seconds > 0 else "-"
        print(f"{what}: {_size(size)} in {seconds:.2f} s ({rate})", file=sys.stderr)
    return 0


def _size(count: float) -> str:
    """A byte count for people, in decimal units as rich's progress bars show: `512 B`, `3.1 MB`."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _upload(args: argparse.Namespace) -> int:
    local = Path(args.local)
    if not local.is_file():
        print(f"osbox: {local} is not a file", file=sys.stderr)
        return 1

    def move(execd: ExecdClient, progress: Progress) -> int:
        execd.upload_file(args.remote, local, progress=progress)
        return local.stat().st_size

    return _transfer(args, move, local.name, f"uploaded {local} to {args.sandbox_id}:{args.remote}")


def _download(args: argparse.Namespace) -> int:
    def move(execd: ExecdClient, progress: Progress) -> int:
        return execd.download_file(args.remote, args.local, progress=progress).bytes_written

    what = f"downloaded {args.sandbox_id}:{args.remote} to {args.local}"
    return _transfer(args, move, Path(args.remote).name, what)


def _allow_only(targets: Sequence[str] | None) -> dict[str, Any] | None:
    """`--allow` given: a policy denying everything but these targets; else None (no policy)."""
    if not targets:
        return None
    return {"defaultAction": "deny", "egress": [{"action": "allow", "target": t} for t in targets]}


def _rm(args: argparse.Namespace) -> int:
    with _lifecycle(args) as lifecycle:
        for sandbox_id in args.sandbox_ids:
            lifecycle.delete_sandbox(sandbox_id)
            print(f"deleted {sandbox_id}")
    return 0


# --- parsers -------------------------------------------------------------------------------------------


def _connection() -> argparse.ArgumentParser:
    """The options every client subcommand shares."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--url", default=None, help="lifecycle API base URL (default: $OPEN_SANDBOX_DOMAIN)")
    parent.add_argument("--api-key", default=None, help="API key (default: $OPEN_SANDBOX_API_KEY)")
    return parent


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """An osbox error becomes one line on stderr and exit status 1, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        from . import OsboxError

        try:
            return handler(args)
        except OsboxError as exc:
            print(f"osbox: {exc}", file=sys.stderr)
            return 1

    return run


def _add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = [_connection()]

    ls = commands.add_parser("ls", parents=common, help="list sandboxes")
    ls.add_argument("--state", action="append", help="only sandboxes in this state (repeatable)")
    ls.add_argument("--metadata", action="append", metavar="K=V", help="only sandboxes with this metadata")
    ls.set_defaults(handler=_guarded(_ls))

    create = commands.add_parser(
        "create", parents=common, help="create a sandbox, wait until it runs commands, print its id"
    )
    create.add_argument("image", nargs="?", default="python:3.11", help="image (default python:3.11)")
    create.add_argument("--lifetime", type=_lifetime, default=600.0, help="seconds it lives, or 'none'")
    create.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait until it is ready")
    create.add_argument("--entrypoint", nargs="+", default=None, help="its PID 1 (default: idles)")
    create.add_argument("--env", action="append", metavar="K=V", help="environment variable (repeatable)")
    create.add_argument("--metadata", action="append", metavar="K=V", help="metadata label (repeatable)")
    create.add_argument("--cpu", help="CPU limit, e.g. 500m or 2 (default 1)")
    create.add_argument("--memory", help="memory limit, e.g. 512Mi (default 2Gi)")
    create.add_argument(
        "--allow",
        action="append",
        metavar="TARGET",
        help="deny all outbound traffic but to this domain, *.domain, IP or CIDR (repeatable)",
    )
    create.set_defaults(handler=_guarded(_create))

    exec_ = commands.add_parser(
        "exec",
        parents=common,
        help="run a command in a sandbox, output live",
        usage="osbox exec [options] ID [options] [--] COMMAND...",
        description="Run COMMAND in sandbox ID, its output live; osbox exits with its exit code. One word "
        "is a shell command line ('ls | wc -l'); several words are an argv, passed word for word "
        "(-- touch 'my file' makes one file). Options go before the command. Our stdin, when it is a "
        "pipe or a file, is the command's; Ctrl-C interrupts it (twice: kills it) and exits 130.",
    )
    exec_.add_argument("--cwd", default=None, help="working directory in the sandbox")
    exec_.add_argument(
        "--no-stdin", action="store_true", help="don't forward our stdin (a pipe or file) to the command"
    )
    dropped = exec_.add_mutually_exclusive_group()
    dropped.add_argument(
        "--keep-on-disconnect",
        dest="kill_on_disconnect",
        action="store_false",
        default=None,
        help="if we lose the connection (or are killed), leave the command running (osbox serve's "
        "default kills it)",
    )
    dropped.add_argument(
        "--kill-on-disconnect", dest="kill_on_disconnect", action="store_true", help=argparse.SUPPRESS
    )
    # The id and the command are split from the options by `_split_exec_words`: options may follow the id.
    exec_.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    exec_.set_defaults(handler=_guarded(functools.partial(_exec, exec_)))

    transfer = argparse.ArgumentParser(add_help=False)
    transfer.add_argument("-q", "--quiet", action="store_true", help="no summary line when done")
    common_transfer = [*common, transfer]

    upload = commands.add_parser("upload", parents=common_transfer, help="copy a local file into a sandbox")
    upload.add_argument("sandbox_id")
    upload.add_argument("local")
    upload.add_argument("remote")
    upload.set_defaults(handler=_guarded(_upload))

    download = commands.add_parser("download", parents=common_transfer, help="copy a file out of a sandbox")
    download.add_argument("sandbox_id")
    download.add_argument("remote")
    download.add_argument("local")
    download.set_defaults(handler=_guarded(_download))

    rm = commands.add_parser("rm", parents=common, help="delete sandboxes")
    rm.add_argument("sandbox_ids", nargs="+", metavar="sandbox_id")
    rm.set_defaults(handler=_guarded(_rm))


#: Registrars `osbox.cli` adds to its parser.
CLIENT_SUBCOMMANDS = [_add_client_commands]
