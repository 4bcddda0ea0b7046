"""Import time: `import osbox` vs `import opensandbox` (the official SDK), each in a fresh interpreter.

osbox runs from the project venv; the official SDK from its own venv, `benchmarks/.venv-official/`
(created here with `python -m venv` + `pip install opensandbox` when missing; gitignored), so neither
import can warm the other's caches or share modules. Runs alternate between the two. Each run is a new
process that times only its import statement (`time.perf_counter` around `import X`), which is the
figure the goal uses; the whole process wall time (interpreter start-up included) is reported beside
it. Also `python -X importtime -c "import osbox"`: the modules that cost most.
Goal: median osbox import <= 1/3 of median opensandbox import. Also measured, not the goal's figure:
"ready to use", `import osbox; osbox.LifecycleClient; osbox.ExecdClient` (osbox loads clients on first
use) vs `import opensandbox; from opensandbox import Sandbox`.

    python benchmarks/bench_import.py [--quick]
"""

from __future__ import annotations

import subprocess
import sys
import time
import venv
from pathlib import Path

from _common import Goal, Report, median, ms, parse_args

HERE = Path(__file__).resolve().parent
OFFICIAL_VENV = HERE / ".venv-official"
OFFICIAL_PY = OFFICIAL_VENV / "bin" / "python"
GOAL_RATIO = 1 / 3

TIMED_IMPORT = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
#: "Ready to use": the import plus the names a program then touches (osbox loads its clients lazily,
#: so `import osbox` alone does not show what using it costs).
READY = {
    "osbox ready": "osbox; osbox.LifecycleClient; osbox.ExecdClient",
    "opensandbox ready": "opensandbox; from opensandbox import Sandbox",
}


def ensure_official_venv() -> str:
    """The official SDK's venv (made on first use); returns its installed version."""
    if not OFFICIAL_PY.exists():
        print(f"creating {OFFICIAL_VENV} and installing opensandbox (one time)...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(OFFICIAL_VENV)
        subprocess.run([str(OFFICIAL_PY), "-m", "pip", "install", "-q", "opensandbox"], check=True)
    version = subprocess.run(
        [str(OFFICIAL_PY), "-c", "import importlib.metadata as m; print(m.version('opensandbox'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    return version.stdout.strip()


def timed_import(python: str, module: str) -> tuple[float, float]:
    """(seconds inside the import statement, seconds of the whole process) for one fresh interpreter."""
    start = time.perf_counter()
    done = subprocess.run(
        [python, "-c", TIMED_IMPORT.format(module=module)], check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    return float(done.stdout.strip()), wall


def importtime_top(python: str, module: str, limit: int = 12) -> list[tuple[int, int, str]]:
    """The modules with the largest cumulative import time: (cumulative µs, self µs, name)."""
    done = subprocess.run(
        [python, "-X", "importtime", "-c", f"import {module}"], check=True, capture_output=True, text=True
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line[len("import time:") :].split("|"))
        rows.append((int(cumulative_us), int(self_us), name.strip()))
    rows.sort(reverse=True)
    return rows[:limit]


def main() -> None:
    args = parse_args(__doc__ or "")
    runs = 8 if args.quick else 40
    report = Report.start("import", args.quick)
    official_version = ensure_official_venv()
    contenders = {
        "osbox": (sys.executable, "osbox"),
        "opensandbox": (str(OFFICIAL_PY), "opensandbox"),
        "osbox ready": (sys.executable, READY["osbox ready"]),
        "opensandbox ready": (str(OFFICIAL_PY), READY["opensandbox ready"]),
        # Interpreter start-up alone, so the process wall times can be read net of it.
        "python -c pass": (sys.executable, "sys"),
    }
    for python, module in contenders.values():
        timed_import(python, module)  # warm the page cache and .pyc files
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    names = list(contenders)
    for run in range(runs):
        for name in names if run % 2 == 0 else list(reversed(names)):
            results[name].append(timed_import(*contenders[name]))
    print(f"\n{runs} fresh interpreters each (opensandbox {official_version}, osbox from the project venv)")
    figures: dict[str, float] = {}
    for name, samples in results.items():
        inside = median([s[0] for s in samples])
        wall = median([s[1] for s in samples])
        print(f"  {name:15s} import statement median {ms(inside):>10s}  whole process {ms(wall):>10s}")
        figures[f"{name}_import_ms"] = round(inside * 1000, 2)
        figures[f"{name}_process_ms"] = round(wall * 1000, 2)
    ratio = figures["osbox_import_ms"] / figures["opensandbox_import_ms"]
    print(f"  osbox / opensandbox (import statement): {ratio:.3f}")
    figures["ratio"] = round(ratio, 3)
    ready_ratio = figures["osbox ready_import_ms"] / figures["opensandbox ready_import_ms"]
    print(f"  osbox / opensandbox (ready to use: {READY['osbox ready']!r} vs")
    print(f"      {READY['opensandbox ready']!r}): {ready_ratio:.3f}")
    figures["ready_ratio"] = round(ready_ratio, 3)
    figures["opensandbox_version"] = official_version  # type: ignore[assignment]
    report.figures["import"] = figures
    report.goals.append(Goal("osbox/opensandbox import time", ratio, GOAL_RATIO, "<=", "x"))
    report.notes.append(f"ready to use (not the goal's figure): osbox/opensandbox {ready_ratio:.3f}x")
    print("\npython -X importtime -c 'import osbox' (top cumulative, µs):")
    for cumulative, self_us, name in importtime_top(sys.executable, "osbox"):
        print(f"  {cumulative:>8d} {self_us:>8d}  {name}")
    print(f"\npython -X importtime -c 'import {READY['osbox ready']}' (top cumulative, µs):")
    for cumulative, self_us, name in importtime_top(sys.executable, READY["osbox ready"]):
        print(f"  {cumulative:>8d} {self_us:>8d}  {name}")
    report.emit()


if __name__ == "__main__":
    main()
