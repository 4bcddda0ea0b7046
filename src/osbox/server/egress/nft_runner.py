"""Running `nft` scripts inside one network namespace: in-process through libnftables, or `nft -f -`.

Entering a network namespace is the expensive part (setns costs ~15 ms here, most of an `nsenter nft`
call), so `NftSession` keeps one thread inside the namespace for the session's life, with one libnftables
context: an admission then costs ~0.2 ms instead of ~20 ms. The thread holds the namespace alive, so a
session must be closed. Where libnftables can't be loaded the session runs `nsenter --net=… nft -f -`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import ctypes.util
import os
import queue
import threading
from dataclasses import dataclass

__all__ = ["NftError", "NftSession", "run_nft"]

_CLONE_NEWNET = 0x40000000
# nft answers in milliseconds; a hung one must not hold a policy change (or a DNS answer) forever.
_NFT_TIMEOUT = 10.0


class NftError(RuntimeError):
    """nft refused a script or could not run; the message carries nft's own words."""


async def run_nft(netns: str | None, script: str, *, check_only: bool = False) -> None:
    """Run an `nft -f -` script in a subprocess inside the namespace at path `netns` (None: this one)."""
    argv = ["nft", "-c", "-f", "-"] if check_only else ["nft", "-f", "-"]
    if netns is not None:
        argv = ["nsenter", f"--net={netns}", "--", *argv]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise NftError(f"cannot run {argv[0]}: {exc.strerror}") from None
    try:
        async with asyncio.timeout(_NFT_TIMEOUT):
            _, stderr = await proc.communicate(script.encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise NftError(f"nft did not finish within {_NFT_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        raise NftError(stderr.decode(errors="replace").strip() or f"nft exited with {proc.returncode}")


@dataclass
class _Job:
    script: str
    done: concurrent.futures.Future[None]


class NftSession:
    """nft scripts run inside one namespace (`netns` path; None: the caller's), one at a time.

    Usage::

        session = NftSession("/run/netns/sbx-1")
        await session.run("add element inet osbox allow_v4 { 198.18.0.10 timeout 60s }\\n")
        await session.close()
    """

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        """Whether the session's thread is running (inside the namespace)."""
        return self._thread is not None

    async def run(self, script: str) -> None:
        """Run `script` as one nft transaction; `NftError` with nft's message when it is refused."""
        lib = _libnftables()
        if lib is None:
            await run_nft(self.netns, script)
            return
        if self._jobs is None:
            self._start(lib)
        assert self._jobs is not None
        job = _Job(script, concurrent.futures.Future())
        self._jobs.put(job)
        async with asyncio.timeout(_NFT_TIMEOUT):
            await asyncio.wrap_future(job.done)

    async def close(self) -> None:
        """End the session's thread (and so its hold on the namespace); `run` starts a new one."""
        if self._jobs is None or self._thread is None:
            return
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        self._jobs = self._thread = None

    def _start(self, lib: ctypes.CDLL) -> None:
        jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._jobs = jobs
        self._thread = threading.Thread(target=_serve, args=(lib, self.netns, jobs), daemon=True, name="nft")
        self._thread.start()


def _serve(lib: ctypes.CDLL, netns: str | None, jobs: queue.SimpleQueue[_Job | None]) -> None:
    """The session thread: enter the namespace (for good: the thread ends with the session), then run
    jobs on one libnftables context until the `None` that closes the session."""
    failure: str | None = None
    ctx = None
    try:
        if netns is not None:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    failure = f"cannot enter the network namespace {netns}: {os.strerror(err)}"
            finally:
                os.close(fd)
    except OSError as exc:
        failure = f"cannot open the network namespace {netns}: {exc.strerror}"
    if failure is None:
        ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
    try:
        while (job := jobs.get()) is not None:
            # A job whose caller gave up (cancelled) before it ran is skipped; once running, it cannot be
            # cancelled any more, so setting its outcome never fails (which would end this thread).
            if not job.done.set_running_or_notify_cancel():
                continue
            if failure is not None or ctx is None:
                job.done.set_exception(NftError(failure or "libnftables did not start"))
                continue
            status = lib.nft_run_cmd_from_buffer(ctx, job.script.encode())
            # Reading a buffer also rewinds it: both are drained after every script.
            lib.nft_ctx_get_output_buffer(ctx)
            message = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace").strip()
            if status == 0:
                job.done.set_result(None)
            else:
                job.done.set_exception(NftError(message or "nft refused the script"))
    finally:
        if ctx is not None:
            lib.nft_ctx_free(ctx)


_libc = ctypes.CDLL(None, use_errno=True)
_lib: ctypes.CDLL | None = None
_lib_loaded = False


def _libnftables() -> ctypes.CDLL | None:
    """libnftables with its prototypes declared, or None where it is not installed."""
    global _lib, _lib_loaded
    if not _lib_loaded:
        _lib_loaded = True
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            return None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _lib = lib
    return _lib
