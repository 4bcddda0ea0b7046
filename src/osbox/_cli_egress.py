"""`osbox egress`: a sandbox's outbound network policy from the command line.

    osbox egress get ID                  the policy, its mode and how it is enforced
    osbox egress allow ID TARGET...      put allow rules first (domains, *.domains, IPs, CIDRs)
    osbox egress deny ID TARGET...       put deny rules first
    osbox egress rm ID TARGET...         remove the rules for these targets

Each prints the policy as it is afterwards: `mode`, `enforcement` (and why not more), `default`, then
one `ACTION TARGET` line per rule, first match first.

The Credential Vault (`/credential-vault` of the egress API; injection needs a sandbox created with
`credentialProxy`), one command per route:

    osbox egress vault ID                          GET    the revision, credentials and bindings
    osbox egress vault-rm ID                       DELETE the vault
    osbox egress credentials ID [NAME]             GET    /credentials[/NAME]: values shown as ********
    osbox egress credential-set ID NAME [--from-env VAR | --from-file F]   POST (no vault yet) or PATCH
    osbox egress credential-rm ID NAME...          PATCH  credentials.delete
    osbox egress bindings ID [NAME]                GET    /bindings[/NAME]
    osbox egress binding-set ID NAME --host H... (--bearer C | --basic C | --key-header HEADER=C |
                                                  --header HEADER=C...) [--path P] [--method M] [--port N]
    osbox egress binding-rm ID NAME...             PATCH  bindings.delete

A credential's value is never an argument (it would be in the shell's history and in `ps`): it comes
from `--from-env`, `--from-file` (`-`: stdin), or else stdin (asked for without echo on a terminal),
one trailing newline dropped. The changes take `--expected-revision N` (else the revision just read
guards them).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._cli_client import _connection, _guarded, _lifecycle, _pairs

if TYPE_CHECKING:
    from . import EgressClient
    from .models.egress import (
        CredentialBindingMetadata,
        CredentialMetadata,
        CredentialVaultState,
        PolicyStatusResponse,
    )

__all__ = ["EGRESS_SUBCOMMANDS"]


@contextmanager
def _egress_client(args: argparse.Namespace) -> Iterator[EgressClient]:
    from . import EgressClient
    from ._wire import EGRESS_PORT

    with _lifecycle(args) as lifecycle:
        endpoint = lifecycle.get_endpoint(args.sandbox_id, EGRESS_PORT)
    with EgressClient.from_endpoint(endpoint) as egress:
        yield egress


def _egress(args: argparse.Namespace) -> int:
    with _egress_client(args) as egress:
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


# -- the credential vault ---------------------------------------------------------------------------

_HIDDEN = "********"


def _vault(args: argparse.Namespace) -> int:
    with _egress_client(args) as egress:
        revision = args.expected_revision
        if args.action == "vault":
            _print_state(egress.get_credential_vault())
        elif args.action == "vault-rm":
            egress.delete_credential_vault()
            print("vault deleted")
        elif args.action == "credentials" and args.name is not None:
            _print_credentials([egress.get_credential(args.name)])
        elif args.action == "credentials":
            listed = egress.list_credentials()
            _print_vault(listed.revision, credentials=listed.credentials)
        elif args.action == "bindings" and args.name is not None:
            _print_bindings([egress.get_binding(args.name)])
        elif args.action == "bindings":
            bindings = egress.list_bindings()
            _print_vault(bindings.revision, bindings=bindings.bindings)
        elif args.action == "credential-set":
            value = _secret(args)
            _print_state(egress.set_credential(args.name, value, expected_revision=revision))
        elif args.action == "binding-set":
            _print_state(egress.set_binding(_binding(args), expected_revision=revision))
        elif args.action == "credential-rm":
            _print_state(egress.remove_credentials(args.names, expected_revision=revision))
        else:
            _print_state(egress.remove_bindings(args.names, expected_revision=revision))
    return 0


def _secret(args: argparse.Namespace) -> str:
    """The credential's value: from the variable, the file, or stdin; one trailing newline dropped."""
    from . import OsboxError

    if args.from_env is not None:
        value = os.environ.get(args.from_env)
        if value is None:
            raise OsboxError(f"the environment has no variable {args.from_env} (--from-env)")
    elif args.from_file not in (None, "-"):
        try:
            value = Path(args.from_file).read_text()
        except OSError as exc:
            raise OsboxError(f"cannot read {args.from_file} (--from-file): {exc.strerror}") from None
    elif args.from_file is None and sys.stdin.isatty():
        value = getpass.getpass(f"value of credential {args.name}: ")
    else:
        value = sys.stdin.read()
    value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        raise OsboxError(
            f"credential {args.name}: the value is empty (give --from-env, --from-file or stdin)"
        )
    return value


def _binding(args: argparse.Namespace) -> dict[str, Any]:
    """The binding `binding-set` describes; usage errors exit 2 through the parser."""
    headers = _pairs(args.header, "--header") or {}
    api_key = _pairs([args.key_header] if args.key_header else None, "--key-header") or {}
    given = [kind for kind, value in (("bearer", args.bearer), ("basic", args.basic)) if value]
    given += ["apiKey"] * bool(api_key) + ["customHeaders"] * bool(headers)
    if len(given) != 1:
        args.parser.error("give exactly one of --bearer, --basic, --key-header or --header (repeatable)")
    auth: dict[str, Any]
    if headers:
        auth = {
            "type": "customHeaders",
            "headers": [{"name": k, "credential": v} for k, v in headers.items()],
        }
    elif api_key:
        [(header, credential)] = api_key.items()
        auth = {"type": "apiKey", "name": header, "credential": credential}
    else:
        auth = {"type": given[0], "credential": args.bearer or args.basic}
    match: dict[str, Any] = {"hosts": args.host}
    for field, value in (("paths", args.path), ("methods", args.method), ("ports", args.port)):
        if value:
            match[field] = value
    if args.scheme:
        match["schemes"] = args.scheme
    return {"name": args.name, "match": match, "auth": auth}


def _print_state(state: CredentialVaultState) -> None:
    _print_vault(state.revision, credentials=state.credentials, bindings=state.bindings)


def _print_vault(
    revision: int,
    *,
    credentials: Sequence[CredentialMetadata] = (),
    bindings: Sequence[CredentialBindingMetadata] = (),
) -> None:
    print(f"revision: {revision}")
    _print_credentials(credentials)
    _print_bindings(bindings)


def _print_credentials(credentials: Sequence[CredentialMetadata]) -> None:
    for credential in credentials:
        source, revision = credential.source_type, credential.revision
        print(f"credential {credential.name} {source} {_HIDDEN} (revision {revision})")


def _print_bindings(bindings: Sequence[CredentialBindingMetadata]) -> None:
    for binding in bindings:
        match, auth = binding.match, binding.auth
        where = ""
        if match is not None:
            where = ",".join(match.hosts)
            if match.paths and match.paths != ["/*"]:
                where += " " + ",".join(match.paths)
        how = (auth.type + (f" {auth.name}" if auth.name else "")) if auth is not None else "-"
        print(f"binding {binding.name} {where} {how} (revision {binding.revision})")


def _add_egress(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    egress = commands.add_parser("egress", help="a sandbox's outbound network policy and credential vault")
    actions = egress.add_subparsers(dest="action", required=True, metavar="{get,allow,deny,rm,vault,...}")
    get = actions.add_parser("get", parents=[_connection()], help="show the policy")
    get.add_argument("sandbox_id")
    get.set_defaults(handler=_guarded(_egress))
    edits = (("allow", "allow these targets"), ("deny", "deny these targets"), ("rm", "remove their rules"))
    for name, text in edits:
        edit = actions.add_parser(name, parents=[_connection()], help=text)
        edit.add_argument("sandbox_id")
        edit.add_argument("targets", nargs="+", metavar="target", help="domain, *.domain, IP or CIDR")
        edit.set_defaults(handler=_guarded(_egress))
    _add_vault(actions)


def _add_vault(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(name: str, text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, parents=[_connection()], help=text)
        parser.add_argument("sandbox_id")
        parser.set_defaults(handler=_guarded(_vault), parser=parser, expected_revision=None)
        return parser

    def guarded(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--expected-revision", type=int, metavar="N", help="fail if the vault is not at N"
        )
        return parser

    command("vault", "show the credential vault (never a value)")
    command("vault-rm", "delete the credential vault")
    for kind in ("credentials", "bindings"):
        command(kind, f"list the {kind} (or show one)").add_argument("name", nargs="?")
    credential = guarded(command("credential-set", "store a credential: its value from env, file or stdin"))
    credential.add_argument("name")
    source = credential.add_mutually_exclusive_group()
    source.add_argument("--from-env", metavar="VAR", help="the value is this environment variable's")
    source.add_argument("--from-file", metavar="FILE", help="the value is this file's content (-: stdin)")
    binding = guarded(command("binding-set", "add or replace a binding: where a credential goes, and how"))
    binding.add_argument("name")
    binding.add_argument("--host", action="append", required=True, help="host or *.domain (repeatable)")
    binding.add_argument("--path", action="append", help="path pattern, e.g. /v1/* (default /*)")
    binding.add_argument("--method", action="append", help="HTTP method (default: GET POST PUT PATCH DELETE)")
    binding.add_argument("--port", action="append", type=int, help="port (default 443)")
    binding.add_argument("--scheme", action="append", choices=["https", "http"], help="(default https)")
    binding.add_argument("--bearer", metavar="CREDENTIAL", help="Authorization: Bearer <credential>")
    binding.add_argument("--basic", metavar="CREDENTIAL", help="Authorization: Basic <credential>")
    binding.add_argument("--key-header", metavar="HEADER=CREDENTIAL", help="apiKey: <header>: <credential>")
    binding.add_argument(
        "--header", action="append", metavar="HEADER=CREDENTIAL", help="customHeaders, repeatable"
    )
    for kind in ("credential", "binding"):
        remove = guarded(command(f"{kind}-rm", f"delete {kind}s"))
        remove.add_argument("names", nargs="+", metavar="name")


#: Registrars `osbox.cli` adds to its parser.
EGRESS_SUBCOMMANDS = [_add_egress]
