"""The agent's code as each sandbox gets it: bytecode, compiled once by the sandbox's own python.

The agent's directory inside the sandbox is read-only and has no `__pycache__`, so an agent
shipped as source is compiled again at every sandbox start (~8 ms of its ~20 ms start-up on a
2-core machine). Compiling once per server, with the very interpreter that runs the agent (its
magic number must match), removes that. When compiling fails for any reason the sources are
shipped instead: slower, same behaviour.

    files, script = agent_files("/usr/bin/python3", Path(".../_agent"))
    # files: {"main.pyc": b"...", "protocol.pyc": ..., "fs.pyc": ...}; script: "main.pyc"
"""

from __future__ import annotations

import base64
import functools
import json
import subprocess
from pathlib import Path

__all__ = ["agent_files"]

#: Runs under the sandbox's python: reads {name: source} as JSON on stdin, answers {name: pyc}.
#: The pyc header is the magic number and 12 zero bytes (a timestamp pyc with no timestamp):
#: sourceless imports and `python file.pyc` check the magic and the flags only.
_COMPILER = """
import base64, importlib.util, json, marshal, sys
sources = json.load(sys.stdin)
out = {}
for name, (display, text) in sources.items():
    code = compile(text, display, "exec", dont_inherit=True)
    out[name] = base64.b64encode(importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code)).decode()
json.dump(out, sys.stdout)
"""


def agent_files(python: str, source_dir: Path, agent_dir: str) -> tuple[dict[str, bytes], str]:
    """({file name: contents} to put in `agent_dir`, the file to run), bytecode when possible."""
    sources = {
        path.name: path.read_bytes() for path in sorted(source_dir.glob("*.py")) if path.name != "__init__.py"
    }
    compiled = _compiled(python, json.dumps(_request(sources, agent_dir)))
    if compiled is not None and set(compiled) == {_pyc_name(name) for name in sources}:
        return compiled, "main.pyc"
    return sources, "main.py"


def _request(sources: dict[str, bytes], agent_dir: str) -> dict[str, tuple[str, str]]:
    # The display name keeps tracebacks pointing at the module the agent runs.
    return {_pyc_name(name): (f"{agent_dir}/{name}", text.decode()) for name, text in sources.items()}


def _pyc_name(name: str) -> str:
    return name[: -len(".py")] + ".pyc"


@functools.lru_cache(maxsize=8)
def _compiled(python: str, request: str) -> dict[str, bytes] | None:
    """Bytecode per file from `python`, or None if it could not compile (cached per sources)."""
    try:
        done = subprocess.run(
            [python, "-S", "-I", "-c", _COMPILER],
            input=request.encode(),
            capture_output=True,
            check=True,
            timeout=60,
        )
        answer = json.loads(done.stdout)
        return {str(name): base64.b64decode(data) for name, data in answer.items()}
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
