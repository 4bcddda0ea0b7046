"""PTY keystroke echo: a key typed into a sandbox's terminal until its echo is back, against the same
echo from a terminal on the host in the same run.

osbox (an `osbox serve` subprocess, one sandbox, the sync `ExecdClient`): a PTY session running `cat`
(cooked mode, so the terminal's line discipline echoes each key as a shell's readline would); one byte
goes out as a WebSocket frame through the server proxy to the pty, and the time is taken until its echo
frame is back. baseline: `cat` on a pty of this machine's own (`os.openpty`), the byte written to the
controller end and its echo read back: the terminal alone, without sandbox, server or WebSocket.
Goal: p50 <= 5 ms (issue 9).

    python benchmarks/bench_pty.py [--quick]
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import termios
import time

from _common import SANDBOX_ARGS, Goal, Report, median, ms, osbox_server, parse_args, percentile

from osbox import ExecdClient, LifecycleClient, PtyConnection, PtyOutput

#: A newline every so many keys keeps the terminal's line short (canonical lines stop at 4095).
LINE = 64


def _take_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def baseline(keys: int) -> list[float]:
    """Echo round trips of `cat` on a host pty."""
    controller, follower = os.openpty()
    cat = subprocess.Popen(
        ["cat"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
        preexec_fn=_take_terminal,
    )
    os.close(follower)
    times: list[float] = []
    try:
        for n in range(keys):
            if n % LINE == LINE - 1:
                os.write(controller, b"\n")
                _read_until(lambda: os.read(controller, 65536), b"\n", count=2)  # echo, then cat's copy
            began = time.perf_counter()
            os.write(controller, b"x")
            _read_until(lambda: os.read(controller, 65536), b"x")
            times.append(time.perf_counter() - began)
    finally:
        cat.kill()
        cat.wait()
        os.close(controller)
    return times


def through_osbox(conn: PtyConnection, keys: int) -> list[float]:
    """Echo round trips through `osbox serve` and the sandbox's terminal."""

    def read() -> bytes:
        event = conn.recv(timeout=30)
        assert isinstance(event, PtyOutput), event
        return event.data

    times: list[float] = []
    for n in range(keys):
        if n % LINE == LINE - 1:
            conn.send_input(b"\n")
            _read_until(read, b"\n", count=2)
        began = time.perf_counter()
        conn.send_input(b"x")
        _read_until(read, b"x")
        times.append(time.perf_counter() - began)
    return times


def _read_until(read: object, wanted: bytes, count: int = 1) -> None:
    seen = b""
    while seen.count(wanted) < count:
        seen += read()  # type: ignore[operator]


def main() -> None:
    args = parse_args(__doc__ or "")
    keys = 100 if args.quick else 1000
    report = Report.start("pty", args.quick)
    with osbox_server() as server, LifecycleClient(server.lifecycle_url, timeout=60) as lifecycle:
        sandbox = lifecycle.create_sandbox(**SANDBOX_ARGS)
        with ExecdClient.from_endpoint(lifecycle.get_endpoint(sandbox.id, 44772), timeout=60) as execd:
            session_id = execd.create_pty(command="exec cat")
            with execd.connect_pty(session_id) as conn:
                through_osbox(conn, 50)  # warm-up (not counted)
                baseline(50)
                osbox_times = through_osbox(conn, keys)
                base_times = baseline(keys)
            execd.delete_pty(session_id)
        lifecycle.delete_sandbox(sandbox.id)
    figures: dict[str, float] = {"keys": keys}
    print(f"\n{keys} keystrokes each way (plus a warm-up not counted)")
    print(f"  {'':30s} {'p50':>10s} {'p95':>10s} {'p99':>10s}")
    for label, key, values in (
        ("osbox pty echo round trip", "osbox", osbox_times),
        ("host pty echo (baseline)", "host", base_times),
    ):
        p50, p95, p99 = median(values), percentile(values, 95), percentile(values, 99)
        print(f"  {label:30s} {ms(p50):>10s} {ms(p95):>10s} {ms(p99):>10s}")
        for name, value in (("p50", p50), ("p95", p95), ("p99", p99)):
            figures[f"{key}_{name}_ms"] = round(value * 1000, 3)
    report.figures["pty"] = figures
    report.goals.append(Goal("pty keystroke echo p50", figures["osbox_p50_ms"], 5.0, "<=", " ms"))
    report.emit()


if __name__ == "__main__":
    main()
