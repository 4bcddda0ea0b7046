"""`osbox image …`: the local image store under the data dir (what `osbox serve` will run from).

    osbox image pull REF [--platform linux/arm64] [--username U --password-stdin]
    osbox image load FILE [--name NAME]       a `docker save` tarball or an OCI layout tar
    osbox image ls                            name, digest, size
    osbox image rm REF...                     drop names (data stays until prune: layers are shared)
    osbox image prune                         remove blobs and layers no image uses

Pull and load show progress (blobs, bytes) with rich on a terminal and as plain lines into a pipe.
A registry password is read from stdin (`--password-stdin`) or $OSBOX_REGISTRY_PASSWORD, never
from the command line, where other users could read it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ._cli_client import _guarded, _print_table, _size

if TYPE_CHECKING:
    from .server.images.platform import Platform
    from .server.images.skopeo import Credentials
    from .server.images.store import ImageStore, PullProgress

__all__ = ["IMAGE_SUBCOMMANDS"]


def _store(args: argparse.Namespace) -> ImageStore:
    from .server.config import ServerConfig
    from .server.images.store import ImageStore, ImageStoreConfig

    # The server's own store for this data dir (or $OSBOX_IMAGE_STORE), with its registry mirrors.
    return ImageStore(ImageStoreConfig.for_server(ServerConfig(data_dir=Path(args.data_dir).resolve())))


@contextmanager
def _progress(label: str) -> Iterator[Callable[[PullProgress], None]]:
    """Progress on stderr: a rich line (blobs, bytes, rate) on a terminal, else one line per blob."""
    if sys.stderr.isatty():
        try:
            from rich.progress import DownloadColumn, Progress, SpinnerColumn, TextColumn, TransferSpeedColumn
        except ImportError:
            pass
        else:
            columns = (
                SpinnerColumn(),
                TextColumn("{task.description}"),
                DownloadColumn(),
                TransferSpeedColumn(),
            )
            with Progress(*columns, transient=True) as bar:
                task = bar.add_task(label, total=None)

                def draw(event: PullProgress) -> None:
                    bar.update(
                        task, completed=event.bytes_received, description=f"{label}: {event.blobs} blobs"
                    )

                yield draw
            return
    last = [""]

    def lines(event: PullProgress) -> None:
        if event.current and event.current != last[0]:
            last[0] = event.current
            print(f"{label}: {event.current} ({_size(event.bytes_received)} so far)", file=sys.stderr)

    yield lines


def _credentials(args: argparse.Namespace) -> Credentials | None:
    from .server.images.skopeo import Credentials

    if args.username is None:
        return None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif "OSBOX_REGISTRY_PASSWORD" in os.environ:
        password = os.environ["OSBOX_REGISTRY_PASSWORD"]
    else:
        import getpass

        password = getpass.getpass(f"password for {args.username}: ")
    return Credentials(args.username, password)


def _platform(text: str | None) -> Platform | None:
    from .server.images.platform import Platform

    if text is None:
        return None
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise SystemExit(f"osbox: --platform must be OS/ARCH[/VARIANT], e.g. linux/arm64, not {text!r}")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def _pull(args: argparse.Namespace) -> int:
    platform = _platform(args.platform)
    store = _store(args)
    with _progress(f"pulling {args.reference}") as on_progress:
        record = store.pull(
            args.reference, credentials=_credentials(args), platform=platform, on_progress=on_progress
        )
    print(f"{record.name}\t{record.digest}\t{_size(record.size)}")
    return 0


def _load(args: argparse.Namespace) -> int:
    store = _store(args)
    with _progress(f"loading {Path(args.archive).name}") as on_progress:
        records = store.load(Path(args.archive), name=args.name, on_progress=on_progress)
    for record in records:
        print(f"{record.name}\t{record.digest}\t{_size(record.size)}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    rows = [(r.name, r.digest, _size(r.size), r.platform) for r in _store(args).list()]
    _print_table(("name", "digest", "size", "platform"), rows)
    return 0


def _rm(args: argparse.Namespace) -> int:
    store = _store(args)
    for reference in args.references:
        store.remove(reference)
        print(f"removed {reference}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    result = _store(args).prune()
    print(f"removed {result.blobs} blobs and {result.layers} layers, {_size(result.bytes_freed)} freed")
    return 0


def _add_image_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .cli import _DEFAULT_DATA_DIR  # the same default as `osbox serve --data-dir`

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=str(_DEFAULT_DATA_DIR), help="the server's state directory")
    image = commands.add_parser("image", help="manage the local image store (pull, load, ls, rm, prune)")
    actions = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")

    pull = actions.add_parser("pull", parents=[common], help="pull an image from its registry")
    pull.add_argument("reference", help="e.g. python:3.12, ghcr.io/org/app:tag, host:5000/app@sha256:…")
    pull.add_argument("--platform", default=None, help="OS/ARCH[/VARIANT] (default: this machine's)")
    pull.add_argument("--username", default=None, help="registry user (password: stdin or env, see below)")
    pull.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin (else $OSBOX_REGISTRY_PASSWORD, else a prompt)",
    )
    pull.set_defaults(handler=_guarded(_pull))

    load = actions.add_parser("load", parents=[common], help="load a `docker save` or OCI layout tar")
    load.add_argument("archive")
    load.add_argument("--name", default=None, help="name for the image (when the archive names none)")
    load.set_defaults(handler=_guarded(_load))

    ls = actions.add_parser("ls", parents=[common], help="list stored images")
    ls.set_defaults(handler=_guarded(_ls))

    rm = actions.add_parser("rm", parents=[common], help="remove image names (then `prune` frees space)")
    rm.add_argument("references", nargs="+", metavar="reference")
    rm.set_defaults(handler=_guarded(_rm))

    prune = actions.add_parser("prune", parents=[common], help="remove blobs and layers no image uses")
    prune.set_defaults(handler=_guarded(_prune))


#: Registrars `osbox.cli` adds to its parser.
IMAGE_SUBCOMMANDS = [_add_image_commands]
