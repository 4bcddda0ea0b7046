"""Sockets inside another network namespace, for the resolver's upstream side and the NFLOG listener.

A socket belongs to the namespace it was created in, whatever thread uses it later. So a short-lived thread
enters the namespace (setns changes only the calling thread), creates the socket and ends: the caller's
threads never change namespace.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

__all__ = ["SocketFactory", "call_in_netns", "netns_socket_factory"]

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class SocketFactory(Protocol):
    """Makes a socket of (family, type[, proto]): `socket.socket` itself, or one of `netns_socket_factory`."""

    def __call__(self, family: int, type: int, proto: int = 0, /) -> socket.socket: ...


def netns_socket_factory(path: str) -> SocketFactory:
    """A socket factory whose sockets belong to the network namespace at `path`."""

    def make(family: int, type_: int, proto: int = 0, /) -> socket.socket:
        return call_in_netns(path, lambda: socket.socket(family, type_, proto))

    return make


def call_in_netns(path: str | None, work: Callable[[], T]) -> T:
    """`work()` run in a short-lived thread inside the network namespace at `path` (None: here, directly).

    What it opens there stays there: a socket, or a `/proc/sys/net/...` file (whose namespace is the
    opener's). Blocking: a thread start and two setns calls, well under a millisecond here.
    """
    if path is None:
        return work()
    made: list[T] = []
    failed: list[BaseException] = []

    def enter_and_work() -> None:
        try:
            with open(path, "rb") as target, open("/proc/thread-self/ns/net", "rb") as home:
                _setns(target.fileno())
                try:
                    made.append(work())
                finally:
                    _setns(home.fileno())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=enter_and_work, name="netns-socket")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
