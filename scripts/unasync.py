"""Generate the SDK's sync twins from their async source (the httpcore way), or check that they match.

    python scripts/unasync.py            # rewrite src/osbox/_sync/ from src/osbox/_async/
    python scripts/unasync.py --check    # fail if src/osbox/_sync/ is not exactly what would be written

`src/osbox/_async/` is written by hand: the async clients' I/O shell and public methods, `AsyncStream`
and `AsyncSandbox`. Every module there becomes the module of the same name in `src/osbox/_sync/` by the
whole-word rewrites in `RULES` (`AsyncX` -> `X`, `async def` -> `def`, `await ` dropped, ...), then the
imports are sorted and the file formatted with ruff, and a header says where it came from. It works
because the naming is strict: every async name is its sync twin's with `Async` or an `a` in front.

`--check` derives the whole sync tree again and fails on any difference: a changed line, an extra or
missing file, a rule that no longer applies anywhere (a dead rule hides a renamed name). `make lint`
runs it, so `make test` and CI do.
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = Path("src/osbox/_async")
TARGET = Path("src/osbox/_sync")

#: (pattern, replacement), applied in this order to every line. Patterns are whole words.
RULES: list[tuple[str, str]] = [
    # Types: the sync client shell keeps its historic name; generators take one more parameter.
    (r"\bAsyncAPIClient\b", "SyncAPIClient"),
    (r"\bAsyncGenerator\[(\w+), None\]", r"Generator[\1, None, None]"),
    (r"\bAsync(\w+)", r"\1"),  # AsyncStream, AsyncIterator, httpx2.AsyncClient, AsyncLifecycleClient, ...
    # Syntax.
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
    # Protocol methods and `a`-prefixed twins (httpx's names, and osbox's own helpers).
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\banext\b", "next"),
    (r"\baclose\b", "close"),
    (r"\baread\b", "read"),
    (r"\baiter_bytes\b", "iter_bytes"),
    (r"\baiter_raw\b", "iter_raw"),
    (r"\b_asleep\b", "_sleep"),
    (r"\b_astopped\b", "_stopped"),
    # websockets has an asyncio client and a sync one of the same shape.
    (r"\bwebsockets\.asyncio\b", "websockets.sync"),
    (r"\b_arecv_within\b", "_recv_within"),
    (r"\b_astdin_chunks\b", "_stdin_chunks"),
]
_COMPILED = [(re.compile(pattern), replacement) for pattern, replacement in RULES]


def header(source: Path) -> str:
    return f"# Generated from {source.as_posix()} by scripts/unasync.py: do not edit.\n"


def unasync_text(text: str, used: set[str]) -> str:
    """The sync twin of one async module's text; adds each rule that matched to `used`."""
    lines = []
    for line in text.splitlines(keepends=True):
        for regex, replacement in _COMPILED:
            line, count = regex.subn(replacement, line)
            if count:
                used.add(regex.pattern)
        lines.append(line)
    return "".join(lines)


def ruff(args: list[str], text: str, filename: Path) -> str:
    """`text` run through `ruff <args>` as if it were `filename` (the repository's ruff settings)."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", filename.as_posix(), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"ruff {' '.join(args)} failed on the twin of {filename}:\n{done.stderr}")
    return done.stdout


def generate(root: Path) -> tuple[dict[Path, str], set[str]]:
    """Every sync module (path relative to `root`) and its text, and the rules that were used."""
    used: set[str] = set()
    out: dict[Path, str] = {}
    for source in sorted((root / SOURCE).glob("*.py")):
        relative = source.relative_to(root)
        target = TARGET / source.name
        text = header(relative) + unasync_text(source.read_text(), used)
        text = ruff(["check", "--fix", "--select", "I", "--quiet", "--exit-zero"], text, target)
        out[target] = ruff(["format", "--quiet"], text, target)
    return out, used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail on any difference instead of writing")
    parser.add_argument(
        "--root", type=Path, default=REPO, help="the tree holding src/osbox/ (default: this repo)"
    )
    options = parser.parse_args()
    root: Path = options.root.resolve()

    expected, used = generate(root)
    problems = [
        f"rule {pattern!r} matched nothing: remove it or fix the name"
        for pattern, _ in RULES
        if pattern not in used
    ]
    existing = {path.relative_to(root) for path in (root / TARGET).glob("*.py")}
    if options.check:
        for path in sorted(existing - set(expected)):
            problems.append(f"{path} has no source in {SOURCE}/: delete it or add the source")
        for path, text in sorted(expected.items()):
            actual = (root / path).read_text() if path in existing else None
            if actual is None:
                problems.append(f"{path} is missing: run scripts/unasync.py")
            elif actual != text:
                diff = difflib.unified_diff(
                    text.splitlines(keepends=True),
                    actual.splitlines(keepends=True),
                    "generated",
                    "on disk",
                    n=1,
                )
                problems.append(f"{path} differs from its generated form:\n{''.join(diff)}")
    else:
        (root / TARGET).mkdir(exist_ok=True)
        for path in existing - set(expected):
            (root / path).unlink()
        for path, text in expected.items():
            if not (root / path).exists() or (root / path).read_text() != text:
                (root / path).write_text(text)
                print(f"wrote {path}")
    for problem in problems:
        print(f"unasync: {problem}", file=sys.stderr)
    if options.check and not problems:
        print(f"unasync: {len(expected)} sync modules match their async source")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
