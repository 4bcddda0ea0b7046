"""Run the C output cutter (`src/osbox/_speedups.c`) under AddressSanitizer and UBSan.

Compiles a sanitized copy of the extension into a temporary directory, loads it in place of
`osbox._speedups`, and holds it to the pure-Python cutter on random frames, near-frames and
garbage. `make sanitize` runs it with libasan preloaded (the interpreter itself is not built with it):

    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \\
        .venv/bin/python scripts/sanitize_speedups.py [--rounds N]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from osbox._decoder import _output_run_py
from osbox.server.execd.output import _exact_frame_py, _line_frames_py

SOURCE = Path(__file__).resolve().parent.parent / "src" / "osbox" / "_speedups.c"
FLAGS = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
TEXT_BYTES = [b"a", b" ", b"\\", b'"', b"\t", b"\xc3\xa9", b"\xff", b"\xed\xa0\x80", b"\\n", b'\\"']
TEXT_BYTES += [b"\\u00e9", b"\\ud83d\\ude00", b"\\udcff", b"\\x", b"abcdefgh" * 3]
OUTPUT_BYTES = [b"\n", b"\r", b"\r\n", b"plain text", b'"\\', b"\x00\x1f", b"\xe2\x82", b"\xac", b"\xff"]
OUTPUT_BYTES += [b"\xf0\x9f\x98", b"12345678" * 2]
STAMPS = [b"0", b"-0", b"17", b"01", b"9" * 18, b"9" * 19, b"9" * 60, b"-", b""]


def build(directory: Path) -> object:
    target = directory / ("_speedups" + str(sysconfig.get_config_var("EXT_SUFFIX")))
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        ["gcc", *FLAGS, "-shared", "-fPIC", f"-I{include}", str(SOURCE), "-o", str(target)], check=True
    )
    spec = importlib.util.spec_from_file_location("osbox._speedups", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def frames(rng: random.Random) -> bytes:
    out = []
    for _ in range(rng.randint(1, 6)):
        text = b"".join(rng.choice(TEXT_BYTES) for _ in range(rng.randint(0, 8)))
        kind = rng.choice([b"out", b"err", b"in"])
        prefix = b"data: " if rng.random() < 0.5 else b""
        head = prefix + b'{"type":"std' + kind + b'","text":"' + text + b'","timestamp":'
        out.append(head + rng.choice(STAMPS) + b"}\n" + b"\n" * rng.randint(0, 2))
    data = b"".join(out)
    return data[: rng.randint(0, len(data))] if rng.random() < 0.3 else data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100_000)
    rounds = parser.parse_args().rounds
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as directory:
        speedups = build(Path(directory))
        cut = speedups.output_run  # type: ignore[attr-defined]
        runs = 0
        for _ in range(rounds):
            data = frames(rng)
            pos = 0 if rng.random() < 0.8 else rng.randint(0, len(data))
            for sse in (False, True):
                got, expected = cut(data, pos, sse), _output_run_py(data, pos, sse)
                if got != expected:
                    sys.exit(
                        f"C and Python cutters differ on {data!r} at {pos} (sse={sse}): {got} != {expected}"
                    )
                runs += bool(got[1])
        for _ in range(rounds // 4):
            output = b"".join(rng.choice(OUTPUT_BYTES) for _ in range(rng.randint(0, 12)))
            final, start, longest = rng.random() < 0.5, rng.randint(0, len(output)), rng.randint(0, 12)
            exact = speedups.exact_frame(b"<", output, b">", final)  # type: ignore[attr-defined]
            lines = speedups.line_frames(b"<", output, start, b">", longest)  # type: ignore[attr-defined]
            if (exact, lines) != (
                _exact_frame_py(b"<", output, b">", final),
                _line_frames_py(b"<", output, start, b">", longest),
            ):
                sys.exit(f"C and Python output framers differ on {output!r}")
    print(f"sanitized C cutter agrees with the Python cutter on {rounds} inputs ({runs} runs cut); no error")
    print(f"sanitized C output framers agree with the Python ones on {rounds // 4} inputs; no error")


if __name__ == "__main__":
    main()
