"""The README's examples run as pasted, against a real `LocalServer`, so a README that drifts fails CI.

Every ```python block runs with this interpreter, every ```bash block with `bash -euo pipefail`
(the `osbox` command of this environment first on PATH), each in a fresh working directory, with
`OPEN_SANDBOX_DOMAIN` and `OPEN_SANDBOX_API_KEY` naming the server, as a user would set them.
```console blocks are commands that start a server or the suite itself (`osbox serve`, `make test`),
shown and not run; unlabelled fences are diagrams. Each example must succeed, print what its
`# → text` comments say (in that order), and leave no sandbox behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from osbox.server import LocalServer
from tests.integration.server_fixtures import API_KEY, lifecycle_client, requires_runtime

pytestmark = requires_runtime

README = Path(__file__).resolve().parents[2] / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
_EXPECTED = re.compile(r"#\s*→\s*(.+?)\s*$", re.MULTILINE)
#: Each runner takes the code as its last argument: stdin stays free (`/dev/null`), since `osbox exec`
#: forwards a piped stdin to its command and would read a script that came on it.
_RUNNERS = {"python": [sys.executable, "-c"], "bash": ["bash", "-euo", "pipefail", "-c"]}


@dataclass(frozen=True)
class Example:
    language: str
    line: int
    code: str

    @property
    def expected_lines(self) -> list[str]:
        """What the example's `# → text` comments say it prints, in order."""
        return _EXPECTED.findall(self.code)


def readme_examples() -> list[Example]:
    """The README's fenced blocks in a language we run, with the line each starts on."""
    text = README.read_text()
    return [
        Example(match[1], text.count("\n", 0, match.start()) + 1, match[2])
        for match in _FENCE.finditer(text)
        if match[1] in _RUNNERS
    ]


def test_the_readme_has_examples_of_each_kind() -> None:
    """Guards the collector itself: a changed fence style must not make every example vanish."""
    languages = [example.language for example in readme_examples()]
    assert languages.count("python") >= 2 and "bash" in languages
    assert all(example.expected_lines for example in readme_examples() if example.language == "python")


@pytest.fixture(scope="module")
def readme_server() -> Iterator[LocalServer]:
    with LocalServer(api_key=API_KEY) as server:
        yield server


@pytest.mark.parametrize("example", readme_examples(), ids=lambda e: f"README.md:{e.line}-{e.language}")
def test_readme_example_runs(example: Example, readme_server: LocalServer, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OPEN_SANDBOX_DOMAIN": readme_server.base_url.removeprefix("http://"),
        "OPEN_SANDBOX_API_KEY": API_KEY,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(
        [*_RUNNERS[example.language], example.code],
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, (
        f"README.md line {example.line} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    printed = iter(result.stdout.splitlines())
    for expected in example.expected_lines:  # each in order: consumes the output up to its line
        assert any(line.strip() == expected for line in printed), (
            f"README.md line {example.line}: no line {expected!r} in the output:\n{result.stdout}"
        )
    with lifecycle_client(readme_server) as api:
        left = api.get("/sandboxes").raise_for_status().json()["items"]
    assert left == [], f"README.md line {example.line} left sandboxes behind: {[s['id'] for s in left]}"
