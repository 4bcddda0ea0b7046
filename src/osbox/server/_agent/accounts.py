"""Users and groups as the sandbox's own /etc/passwd and /etc/group name them, read as plain files.

Stdlib only (the agent runs it). Not `pwd`/`grp`: those go through glibc's NSS, which reads the
sandbox's /etc/nsswitch.conf and may load a `libnss_*.so` named there: in an image sandbox, that
would be a library of the image loaded into the agent. Parsing the two files needs no library.

    user = lookup_user("app")       # Account(name="app", uid=1000, gid=1000, home="/home/app")
    user_name(0)                    # "root"
"""

from __future__ import annotations

import os

__all__ = ["Account", "group_id", "group_name", "lookup_user", "user_id", "user_name"]


class Account:
    """One /etc/passwd record: who a process runs as and where its home is."""

    __slots__ = ("gid", "home", "name", "uid")

    def __init__(self, name: str, uid: int, gid: int, home: str) -> None:
        self.name, self.uid, self.gid, self.home = name, uid, gid, home

    def __repr__(self) -> str:
        return f"Account(name={self.name!r}, uid={self.uid}, gid={self.gid}, home={self.home!r})"


_parsed: dict[str, tuple[tuple[int, int, int], list[list[str]]]] = {}


def _entries(path: str) -> list[list[str]]:
    """The colon-separated records of `path` (none when it is missing or unreadable); parsed again
    only when the file changed (a listing names an owner per file)."""
    try:
        st = os.stat(path)
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = _parsed.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        with open(path, encoding="utf-8", errors="replace") as lines:
            records = [line.rstrip("\n").split(":") for line in lines if line.strip() and line[0] != "#"]
    except OSError:
        return []
    _parsed[path] = (key, records)
    return records


def _users() -> list[Account]:
    accounts = []
    for fields in _entries("/etc/passwd"):
        if len(fields) >= 6 and fields[2].isdigit() and fields[3].isdigit():
            accounts.append(Account(fields[0], int(fields[2]), int(fields[3]), fields[5] or "/"))
    return accounts


def _groups() -> list[tuple[str, int]]:
    return [(f[0], int(f[2])) for f in _entries("/etc/group") if len(f) >= 3 and f[2].isdigit()]


def user_name(uid: int) -> str:
    """The name of `uid`, or the number as a string when /etc/passwd has none."""
    return next((account.name for account in _users() if account.uid == uid), str(uid))


def group_name(gid: int) -> str:
    """The name of `gid`, or the number as a string when /etc/group has none."""
    return next((name for name, number in _groups() if number == gid), str(gid))


def user_id(name: str) -> int | None:
    """The uid named `name` (None: no such user)."""
    return next((account.uid for account in _users() if account.name == name), None)


def group_id(name: str) -> int | None:
    """The gid named `name` (None: no such group)."""
    return next((number for group, number in _groups() if group == name), None)


def lookup_user(spec: str) -> Account:
    """The account an image's `User` names: "name", "uid", "name:group", "uid:gid" ("" is root).

    A uid that /etc/passwd does not list is still valid (its home is `/`, its gid the one given
    or 0), as in Docker; a name it does not list is a ValueError.
    """
    user, _, group = (spec or "0").partition(":")
    known = _users()
    if user.isdigit():
        found = next((a for a in known if a.uid == int(user)), None)
        account = found or Account(user, int(user), 0, "/")
    else:
        named = next((a for a in known if a.name == user), None)
        if named is None:
            raise ValueError(f"the image's user {user!r} is not in its /etc/passwd")
        account = named
    if group:
        gid = int(group) if group.isdigit() else group_id(group)
        if gid is None:
            raise ValueError(f"the image's group {group!r} is not in its /etc/group")
        account = Account(account.name, account.uid, gid, account.home)
    return account
