"""The `osbox` command line. Each subcommand is one `_add_<name>` function plus one handler.

osbox serve [--host 127.0.0.1] [--port 8080] [--api-key-file PATH] [--data-dir DIR] [--log-level info]
osbox ls | create | exec | upload | download | rm ...    (a server's sandboxes: see `_cli_client.py`)
osbox image pull | load | ls | rm | prune ...          (the local image store: see `_cli_images.py`)
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._cli_client import CLIENT_SUBCOMMANDS
from ._cli_egress import EGRESS_SUBCOMMANDS

if TYPE_CHECKING:
    from .server.egress.hostnet import HostNetworkConfig
from ._cli_images import IMAGE_SUBCOMMANDS
from ._cli_shell import SHELL_SUBCOMMANDS

__all__ = ["main"]

_log = logging.getLogger("osbox.cli")
_DEFAULT_DATA_DIR = Path("/var/lib/osbox") if os.geteuid() == 0 else Path.home() / ".local/share/osbox"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_key(args: argparse.Namespace) -> str | None:
    """The server's API key: from `--api-key-file` or `--api-key` (warned about: every local user can
    read a command line), else env OSBOX_API_KEY; None for none. Raises ValueError for a bad file."""
    if args.api_key is not None:
        _log.warning(
            "--api-key is visible to every user of this machine (ps, /proc/<pid>/cmdline); "
            "use --api-key-file or OSBOX_API_KEY instead"
        )
        return args.api_key or None
    if args.api_key_file is not None:
        try:
            with open(args.api_key_file, encoding="utf-8") as file:
                key = file.read().strip()
                readable_by_others = os.fstat(file.fileno()).st_mode & 0o077
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read --api-key-file {args.api_key_file}: {exc}") from None
        if not key:
            raise ValueError(f"--api-key-file {args.api_key_file} is empty")
        if readable_by_others:
            _log.warning("the API key file %s is readable by other users: chmod 600 it", args.api_key_file)
        return key
    return os.environ.get("OSBOX_API_KEY") or None


def _serve(args: argparse.Namespace) -> int:
    """Run the local runtime in the foreground until SIGINT/SIGTERM.

    On shutdown the sandboxes are left running; the next `osbox serve` on the same data dir
    re-adopts them (or marks them Failed if their processes are gone).
    """
    if not sys.platform.startswith("linux"):
        print(f"osbox serve needs Linux (namespaces, cgroups); this is {sys.platform}.", file=sys.stderr)
        return 2
    from .server.config import ServerConfig
    from .server.datadir import UnsafeDataDirError, check_data_dir
    from .server.serving import run_foreground

    try:
        api_key = _api_key(args)
        check_data_dir(Path(args.data_dir))
    except (ValueError, UnsafeDataDirError) as exc:
        print(f"osbox serve: {exc}", file=sys.stderr)
        return 2
    if api_key is None and not _is_loopback(args.host):
        _log.warning(
            "!!! osbox serve is listening on %s WITHOUT an API key: anyone who can reach this address "
            "can run code on this machine. Set --api-key-file or OSBOX_API_KEY. !!!",
            args.host,
        )
    pool_text = str(args.warm_pool) if args.warm_pool is not None else os.environ.get("OSBOX_WARM_POOL", "2")
    if not pool_text.strip().isdigit():
        print(
            f"--warm-pool / OSBOX_WARM_POOL must be a whole number >= 0, not {pool_text!r}", file=sys.stderr
        )
        return 2
    pool = int(pool_text)
    config = ServerConfig(
        data_dir=Path(args.data_dir).resolve(),
        api_key=api_key,
        host=args.host,
        warm_pool_size=pool,
        network_host=_network_host(args),
        kill_on_disconnect=args.kill_on_disconnect,
        **({"network": args.network} if args.network else {}),
        **_limit_settings(args),
    )
    _log.info("osbox serve on %s:%d, data in %s", args.host, args.port, config.data_dir)
    run_foreground(config, port=args.port, log_level=args.log_level)
    return 0


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the local OpenSandbox-compatible runtime",
        description="Serve the OpenSandbox lifecycle API (at / and /v1) and every sandbox's execd API. "
        "On SIGINT/SIGTERM the server stops but its sandboxes keep running: the next start on the same "
        "--data-dir re-adopts them (or marks them Failed if their processes are gone). Delete sandboxes "
        "through the API to stop them.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    key = serve.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key-file",
        default=None,
        metavar="PATH",
        help="file holding the OPEN-SANDBOX-API-KEY clients must send (or env OSBOX_API_KEY)",
    )
    key.add_argument(
        "--api-key", default=None, help="the API key itself (visible in ps: prefer --api-key-file)"
    )
    serve.add_argument("--data-dir", default=str(_DEFAULT_DATA_DIR), help="state directory")
    serve.add_argument(
        "--warm-pool",
        type=int,
        default=None,
        help="sandboxes kept pre-started for fast creates (default 2, or env OSBOX_WARM_POOL; 0 disables)",
    )
    images = serve.add_argument_group("images")
    images.add_argument(
        "--image-store",
        metavar="DIR",
        default=None,
        help="where pulled images live (default DATA_DIR/images, or env OSBOX_IMAGE_STORE)",
    )
    images.add_argument(
        "--registry-mirror",
        metavar="REGISTRY=MIRROR",
        action="append",
        default=None,
        help="pull REGISTRY's images from MIRROR, e.g. docker.io=127.0.0.1:5000 (repeatable; "
        "default env OSBOX_REGISTRY_MIRRORS)",
    )
    limits = serve.add_argument_group("sandbox limits (the defaults apply where a request gives none)")
    limits.add_argument("--default-cpu", type=_cores, metavar="CORES", help="e.g. 500m or 2 (default 1)")
    limits.add_argument("--default-memory", type=_bytes, metavar="BYTES", help="e.g. 512Mi (default 2Gi)")
    limits.add_argument(
        "--default-disk",
        type=_bytes,
        metavar="BYTES",
        help="what a sandbox may write outside its volumes (default 10Gi)",
    )
    limits.add_argument("--max-disk", type=_bytes, metavar="BYTES", help="the most a request may ask (100Gi)")
    network = serve.add_argument_group("sandbox networks (see the README's 'Networking and egress')")
    network.add_argument(
        "--network",
        choices=["none", "open", "filtered"],
        default=None,
        help="what a sandbox created without a networkPolicy gets: outbound access (the default, or env "
        "OSBOX_NETWORK; as root through NAT, otherwise through pasta; where the server cannot, none, "
        "and the sandbox's status says why), that under an egress policy, or no network; 'none' leaves "
        "the host's network untouched",
    )
    network.add_argument(
        "--network-pool",
        type=ipaddress.IPv4Network,
        metavar="CIDR",
        help="IPv4 network the sandboxes' /30 links come from, root only (default: a free one of "
        "100.96.0.0/16, 100.97.0.0/16, ... claimed for this server, so several servers never collide)",
    )
    network.add_argument(
        "--dns-upstream",
        type=ipaddress.ip_address,
        metavar="ADDRESS",
        help="DNS server the sandboxes' resolvers ask (default: resolv.conf's)",
    )
    dropped = serve.add_mutually_exclusive_group()
    dropped.add_argument(
        "--kill-on-disconnect",
        dest="kill_on_disconnect",
        action="store_true",
        default=True,
        help="kill a foreground command, session run or bash cell whose client drops its stream "
        "(the default: nothing is left running unseen; a request may say otherwise)",
    )
    dropped.add_argument(
        "--keep-on-disconnect",
        dest="kill_on_disconnect",
        action="store_false",
        help="keep it running, as OpenSandbox's execd does",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(handler=_serve)


def _network_host(args: argparse.Namespace) -> HostNetworkConfig | None:
    """The host side's layout from `--network-pool` and `--dns-upstream` (None: the defaults)."""
    if args.network_pool is None and args.dns_upstream is None:
        return None
    from .server.egress.hostnet import HostNetworkConfig

    upstream = (str(args.dns_upstream), 53) if args.dns_upstream else None
    return HostNetworkConfig(pool=args.network_pool, upstream_dns=upstream)


def _cores(text: str) -> float:
    from .server.lifecycle.errors import ApiError
    from .server.lifecycle.validation import parse_cpu

    try:
        return parse_cpu(text)
    except ApiError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _bytes(text: str) -> int:
    from .server.lifecycle.errors import ApiError
    from .server.lifecycle.validation import parse_memory

    try:
        return parse_memory(text)
    except ApiError as exc:
        raise argparse.ArgumentTypeError(exc.message.replace("resourceLimits.memory ", "")) from None


def _mirrors(items: list[str]) -> dict[str, str]:
    from .server.config import parse_mirrors

    try:
        return parse_mirrors(",".join(items))
    except ValueError as exc:
        raise SystemExit(f"osbox serve: {exc}") from None


def _limit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `ServerConfig` fields the limit and image flags that were given set."""
    fields = {
        "default_cpu_cores": args.default_cpu,
        "default_memory_bytes": args.default_memory,
        "default_disk_bytes": args.default_disk,
        "max_disk_bytes": args.max_disk,
        "image_store_dir": None if args.image_store is None else Path(args.image_store).resolve(),
        "registry_mirrors": None if args.registry_mirror is None else _mirrors(args.registry_mirror),
    }
    return {name: value for name, value in fields.items() if value is not None}


#: Subcommand registrars; add one function per new subcommand.
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_serve,
    *CLIENT_SUBCOMMANDS,
    *SHELL_SUBCOMMANDS,
    *EGRESS_SUBCOMMANDS,
    *IMAGE_SUBCOMMANDS,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="osbox", description="OpenSandbox SDK tools and local runtime")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _SUBCOMMANDS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `osbox` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", "warning").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
