"""`osbox egress`: a sandbox's outbound network policy from the command line.

    osbox egress get ID                  the policy, its mode and how it is enforced
    osbox egress allow ID TARGET...      put allow rules first (domains, *.domains, IPs, CIDRs)
    osbox egress deny ID TARGET...       put deny rules first
    osbox egress rm ID TARGET...         remove the rules for these targets

Each prints the policy as it is afterwards: `mode`, `enforcement` (and why not more), `default`, then
one `ACTION TARGET` line per rule, first match first.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ._cli_client import _connection, _guarded, _lifecycle

if TYPE_CHECKING:
    from .models.egress import PolicyStatusResponse

__all__ = ["EGRESS_SUBCOMMANDS"]


def _egress(args: argparse.Namespace) -> int:
    from . import EgressClient
    from ._wire import EGRESS_PORT

    with _lifecycle(args) as lifecycle:
        endpoint = lifecycle.get_endpoint(args.sandbox_id, EGRESS_PORT)
    with EgressClient.from_endpoint(endpoint) as egress:
        if args.action == "get":
            status = egress.get_policy()
        elif args.action == "rm":
            egress.delete_policy_rules(args.targets)
            status = egress.get_policy()
        else:
            egress.patch_policy([{"action": args.action, "target": target} for target in args.targets])
            status = egress.get_policy()
    _print_status(status)
    return 0


def _print_status(status: PolicyStatusResponse) -> None:
    print(f"mode: {status.mode.value if status.mode else '-'}")
    enforcement = status.enforcement_mode.value if status.enforcement_mode else "-"
    print(f"enforcement: {enforcement}" + (f" ({status.reason})" if status.reason else ""))
    if status.policy is not None:
        print(f"default: {status.policy.default_action or 'deny'}")
        for rule in status.policy.egress or []:
            print(f"{rule.action} {rule.target}")


def _add_egress(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    egress = commands.add_parser("egress", help="a sandbox's outbound network policy")
    actions = egress.add_subparsers(dest="action", required=True, metavar="{get,allow,deny,rm}")
    get = actions.add_parser("get", parents=[_connection()], help="show the policy")
    get.add_argument("sandbox_id")
    edits = (("allow", "allow these targets"), ("deny", "deny these targets"), ("rm", "remove their rules"))
    for name, text in edits:
        edit = actions.add_parser(name, parents=[_connection()], help=text)
        edit.add_argument("sandbox_id")
        edit.add_argument("targets", nargs="+", metavar="target", help="domain, *.domain, IP or CIDR")
    egress.set_defaults(handler=_guarded(_egress))


#: Registrars `osbox.cli` adds to its parser.
EGRESS_SUBCOMMANDS = [_add_egress]
