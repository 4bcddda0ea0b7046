"""The `osbox` subcommands that talk to an OpenSandbox server (osbox serve or a deployment):

    osbox ls [--state S] [--metadata K=V]            sandboxes, as a table
    osbox create [IMAGE] [--lifetime S|none] ...     create one, wait until it runs commands, print its id
    osbox exec [--cwd DIR] ID COMMAND...              run a command, its output live, its exit code ours
    osbox upload ID LOCAL REMOTE                      a file in, with a progress bar
    osbox download ID REMOTE LOCAL                    a file out, with a progress bar
    osbox rm ID...                                    delete sandboxes

`--url` and `--api-key` default to `OPEN_SANDBOX_DOMAIN` and `OPEN_SANDBOX_API_KEY`, as for the SDK.
Errors print one line and exit 1. On a terminal, tables and progress bars use rich when it is installed
(the `server` extra brings it); into a pipe, tables are tab-separated lines for `cut` and friends.
"""

from __future__ import annotations

import argparse
import sys
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


def _print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on a terminal; tab-separated lines (header first) into a pipe or without rich."""
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(*columns)
            for row in rows:
                table.add_row(*row)
            Console().print(table)
            return
    print("\t".join(columns))
    for row in rows:
        print("\t".join(row))


@contextmanager
def _progress_bar(label: str) -> Iterator[Progress]:
    """A `Progress` callback drawing a bar on stderr (rich), or nothing without rich or a terminal."""
    try:
        from rich.progress import BarColumn, DownloadColumn, TransferSpeedColumn
        from rich.progress import Progress as Bar
    except ImportError:
        yield lambda done, total: None
        return
    with Bar(
        "{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True
    ) as bar:
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
    _print_table(("id", "state", "image", "metadata", "expires"), rows)
    return 0


def _create(args: argparse.Namespace) -> int:
    from . import Sandbox

    with Sandbox.create(
        args.image,
        entrypoint=args.entrypoint,
        lifetime=args.lifetime,
        ready_timeout=args.ready_timeout,
        env=_pairs(args.env, "--env"),
        metadata=_pairs(args.metadata, "--metadata"),
        keep=True,
        base_url=args.url,
        api_key=args.api_key,
    ) as sandbox:
        print(sandbox.id)
    return 0


def _exec(args: argparse.Namespace) -> int:
    from .models.events import StreamEvent, output_piece

    def show(event: StreamEvent) -> None:
        if event.type in ("stdout", "stderr") and event.text is not None:
            out = sys.stdout if event.type == "stdout" else sys.stderr
            out.write(output_piece(event.text))
            out.flush()

    with _execd(args) as execd:
        result = execd.run_command(" ".join(args.command), cwd=args.cwd).run(on_event=show)
    if result.exit_code is None:
        print("osbox: the command did not complete", file=sys.stderr)
        return 1
    return result.exit_code


def _transfer(args: argparse.Namespace, move: Callable[[Any, Progress], object], label: str) -> int:
    with _execd(args) as execd, _progress_bar(label) as progress:
        move(execd, progress)
    return 0


def _upload(args: argparse.Namespace) -> int:
    local = Path(args.local)
    if not local.is_file():
        print(f"osbox: {local} is not a file", file=sys.stderr)
        return 1
    return _transfer(
        args, lambda execd, progress: execd.upload_file(args.remote, local, progress=progress), local.name
    )


def _download(args: argparse.Namespace) -> int:
    return _transfer(
        args,
        lambda execd, progress: execd.download_file(args.remote, args.local, progress=progress),
        Path(args.remote).name,
    )


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
    create.set_defaults(handler=_guarded(_create))

    exec_ = commands.add_parser("exec", parents=common, help="run a command in a sandbox, output live")
    exec_.add_argument("sandbox_id")
    exec_.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="the shell command: everything after the id (options go before it)",
    )
    exec_.add_argument("--cwd", default=None, help="working directory in the sandbox")
    exec_.set_defaults(handler=_guarded(_exec))

    upload = commands.add_parser("upload", parents=common, help="copy a local file into a sandbox")
    upload.add_argument("sandbox_id")
    upload.add_argument("local")
    upload.add_argument("remote")
    upload.set_defaults(handler=_guarded(_upload))

    download = commands.add_parser("download", parents=common, help="copy a file out of a sandbox")
    download.add_argument("sandbox_id")
    download.add_argument("remote")
    download.add_argument("local")
    download.set_defaults(handler=_guarded(_download))

    rm = commands.add_parser("rm", parents=common, help="delete sandboxes")
    rm.add_argument("sandbox_ids", nargs="+", metavar="sandbox_id")
    rm.set_defaults(handler=_guarded(_rm))


#: Registrars `osbox.cli` adds to its parser.
CLIENT_SUBCOMMANDS = [_add_client_commands]
