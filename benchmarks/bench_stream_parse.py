"""Stream parsing throughput: a 100 MB command stdout stream through `ExecdClient.run_command`.

The stream is what the reference execd sends for `POST /command`: an `init` event, one
`{"type":"stdout","text":...,"timestamp":...}` object per output line followed by a blank line, and an
`execution_complete` event. Line texts are printable ASCII words, lengths uniform in 80..200 chars
(seeded, so every run parses the same bytes). A second run frames the same events as SSE
(`data: {...}\\n\\n`). The bytes come from an `httpx2.MockTransport` streaming response in 64 KiB
chunks, so no socket is involved: this measures the client's parsing, not the network.

Measured, interleaved in rounds over the same bytes:
- osbox fold: `execd.run_command(...).run()` -> `Execution` (stdout joined);
- osbox fold, pure Python: the same with the regex cutter osbox falls back to where its C extension
  (`osbox._speedups`) could not be built;
- osbox iterate: `for event in execd.run_command(...)` (events built, nothing folded);
- raw iter_lines: `response.iter_lines()` over the same transport (decode + split, no JSON) -- the
  baseline the ratio uses, since it pays for the same transport and chunking;
- raw bytes.split: a plain `bytes.split(b"\\n")` line loop over the same chunks (no transport), the
  floor of what any line reader costs.
MB = 10^6 bytes of stream (framing included). Goals: osbox fold >= 100 MB/s and >= 0.7x raw iter_lines.

    python benchmarks/bench_stream_parse.py [--quick]
"""

from __future__ import annotations

import json
import random
import string
import time
from collections.abc import Callable

import httpx2
from _common import Goal, Report, median, parse_args, profile_top

import osbox._decoder
from osbox import ExecdClient

CHUNK = 64 * 1024
LINE_MIN, LINE_MAX = 80, 200
TIMESTAMP = 1_780_000_000_000
GOAL_MBPS = 100.0
GOAL_RATIO = 0.7


def make_lines(n_distinct: int, seed: int = 7) -> list[str]:
    """Distinct output lines of words, 80..200 chars each."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10))) for _ in range(2000)]
    lines = []
    for _ in range(n_distinct):
        target = rng.randint(LINE_MIN, LINE_MAX)
        parts: list[str] = []
        length = 0
        while length < target:
            word = rng.choice(words)
            parts.append(word)
            length += len(word) + 1
        lines.append(" ".join(parts)[:target])
    return lines


def make_stream(size: int, sse: bool) -> tuple[bytes, int]:
    """An execd command stream of about `size` bytes; returns (bytes, number of stdout events)."""
    prefix = b"data: " if sse else b""
    lines = make_lines(4096)
    frames = []
    frames.append(prefix + b'{"type":"init","text":"' + b"c" * 32 + b'","timestamp":1780000000000}\n\n')
    total = len(frames[0])
    count = 0
    while total < size:
        line = lines[count % len(lines)]
        event = {"type": "stdout", "text": line, "timestamp": TIMESTAMP + count}
        frame = prefix + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
        frames.append(frame)
        total += len(frame)
        count += 1
    done = b'{"type":"execution_complete","execution_time":1234,"timestamp":1780000009999}\n\n'
    frames.append(prefix + done)
    return b"".join(frames), count


def chunked(data: bytes) -> list[bytes]:
    """The stream cut into 64 KiB chunks, as a server writing through a socket would deliver it."""
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def transport_for(chunks: list[bytes]) -> httpx2.MockTransport:
    """A transport answering every request with the chunks as a streaming event-stream body."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=iter(chunks), request=request
        )

    return httpx2.MockTransport(handler)


def bytes_split_lines(chunks: list[bytes]) -> int:
    """The floor: split the chunks into lines with `bytes.split`, count the non-empty ones."""
    buffer = b""
    count = 0
    for chunk in chunks:
        lines = (buffer + chunk).split(b"\n")
        buffer = lines.pop()
        for line in lines:
            if line:
                count += 1
    return count + (1 if buffer else 0)


def measure(
    modes: dict[str, Callable[[], int]], rounds: int, expected: dict[str, int]
) -> dict[str, list[float]]:
    """Seconds per run of each mode, interleaved in rounds; checks each mode saw what it should."""
    times: dict[str, list[float]] = {name: [] for name in modes}
    names = list(modes)
    for round_no in range(rounds):
        for name in names if round_no % 2 == 0 else list(reversed(names)):
            start = time.perf_counter()
            seen = modes[name]()
            times[name].append(time.perf_counter() - start)
            if seen != expected[name]:
                raise AssertionError(f"{name}: saw {seen}, expected {expected[name]}")
    return times


def bench_framing(label: str, size: int, rounds: int, sse: bool, report: Report) -> None:
    data, n_stdout = make_stream(size, sse)
    chunks = chunked(data)
    n_lines = n_stdout + 2  # init and execution_complete
    http = httpx2.Client(transport=transport_for(chunks))
    execd = ExecdClient("http://execd.invalid:44772", "token", http_client=http, max_retries=0)
    expected_stdout_len = sum(
        len(json.loads(frame.removeprefix(b"data: "))["text"]) + 1
        for frame in data.split(b"\n\n")
        if b'"stdout"' in frame[:40]
    )

    def osbox_fold() -> int:
        result = execd.run_command("cat big.log").run()
        assert result.exit_code == 0 and result.complete
        return len(result.stdout)

    def osbox_fold_pure_python() -> int:
        c_cutter = osbox._decoder.output_run
        osbox._decoder.output_run = osbox._decoder._output_run_py  # what a new EventDecoder picks up
        try:
            return osbox_fold()
        finally:
            osbox._decoder.output_run = c_cutter

    def osbox_iterate() -> int:
        n = 0
        for event in execd.run_command("cat big.log"):
            if event.type == "stdout":
                n += 1
        return n

    def raw_iter_lines() -> int:
        n = 0
        with http.stream("POST", "http://execd.invalid:44772/command", json={"command": "x"}) as r:
            for line in r.iter_lines():
                if line:
                    n += 1
        return n

    def raw_bytes_split() -> int:
        return bytes_split_lines(chunks)

    modes: dict[str, Callable[[], int]] = {
        "osbox_fold": osbox_fold,
        "osbox_fold_py": osbox_fold_pure_python,
        "osbox_iterate": osbox_iterate,
        "raw_iter_lines": raw_iter_lines,
        "raw_bytes_split": raw_bytes_split,
    }
    expected = {
        "osbox_fold": expected_stdout_len,
        "osbox_fold_py": expected_stdout_len,
        "osbox_iterate": n_stdout,
        "raw_iter_lines": n_lines,
        "raw_bytes_split": n_lines,
    }
    mb = len(data) / 1e6
    print(f"\n[{label}] {mb:.1f} MB, {n_stdout} stdout events, {len(chunks)} chunks, {rounds} rounds")
    times = measure(modes, rounds, expected)
    figures: dict[str, float] = {"mb": round(mb, 1), "events": n_stdout}
    rates = {name: mb / median(t) for name, t in times.items()}
    for name, rate in rates.items():
        print(f"  {name:16s} median {median(times[name]):7.3f} s  {rate:8.1f} MB/s")
        figures[f"{name}_mbps"] = round(rate, 1)
    for mode in ("osbox_fold", "osbox_fold_py", "osbox_iterate"):
        figures[f"{mode}_vs_iter_lines"] = round(rates[mode] / rates["raw_iter_lines"], 3)
        figures[f"{mode}_vs_bytes_split"] = round(rates[mode] / rates["raw_bytes_split"], 3)
    print(
        f"  fold/iter_lines {figures['osbox_fold_vs_iter_lines']:.3f}x, "
        f"fold/bytes.split {figures['osbox_fold_vs_bytes_split']:.3f}x, "
        f"iterate/iter_lines {figures['osbox_iterate_vs_iter_lines']:.3f}x"
    )
    report.figures[label] = figures
    speed = Goal(f"{label} osbox fold throughput", rates["osbox_fold"], GOAL_MBPS, ">=", " MB/s")
    fold_ratio = figures["osbox_fold_vs_iter_lines"]
    ratio = Goal(f"{label} osbox fold / raw iter_lines", fold_ratio, GOAL_RATIO, ">=", "x")
    report.goals += [speed, ratio]
    if not (speed.met and ratio.met):
        small_data, _ = make_stream(size // 10, sse)
        small_http = httpx2.Client(transport=transport_for(chunked(small_data)))
        small_execd = ExecdClient("http://execd.invalid:44772", "t", http_client=small_http, max_retries=0)
        print(f"  profile of one fold of a {len(small_data) / 1e6:.0f} MB stream (own time):")
        print(profile_top(lambda: small_execd.run_command("x").run()))
        small_http.close()
    http.close()


def main() -> None:
    args = parse_args(__doc__ or "")
    size, rounds = (10_000_000, 2) if args.quick else (100_000_000, 3)
    report = Report.start("stream_parse", args.quick)
    report.notes.append(f"lines {LINE_MIN}-{LINE_MAX} chars; chunks {CHUNK} B; ratio baseline = iter_lines")
    built = osbox._decoder.output_run is not osbox._decoder._output_run_py
    report.notes.append("osbox_fold cuts in C (osbox._speedups)" if built else "osbox._speedups NOT BUILT")
    bench_framing("bare_json", size, rounds, sse=False, report=report)
    bench_framing("sse_data", size, rounds, sse=True, report=report)
    report.emit()


if __name__ == "__main__":
    main()
