"""`make demo`: a sandbox end to end on the embedded local runtime.

Builds a Debian image with `mmdebstrap` (once: it is cached under ~/.cache/osbox-images), serves it
from a throw-away local registry as `python:3.11`, and starts `osbox serve` in-process on a free
port, pulling Docker Hub names from that registry, exactly as from Docker Hub. Then it creates a
sandbox of that image, streams a command's output (the image's /etc/os-release and python3), uploads
and downloads a file, runs Python cells in a kernel, lists sandboxes, and deletes it; then does the
same in three lines with the high-level `Sandbox`. Run with `python -m osbox.demo` (as root).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from osbox import APIError, ExecdClient, LifecycleClient, Sandbox
from osbox.models import Sandbox as SandboxInfo
from osbox.models import StreamEvent
from osbox.server import LocalServer
from osbox.server.images.debian import debian_mirror

console = Console()


def _elapsed(start: float) -> str:
    return f"[dim]{(time.perf_counter() - start) * 1000:.0f} ms[/dim]"


def _sandbox_table(sandboxes: list[SandboxInfo]) -> Table:
    table = Table(title="Sandboxes", title_justify="left")
    for column in ("id", "state", "image", "metadata", "expires"):
        table.add_column(column)
    for sandbox in sandboxes:
        table.add_row(
            sandbox.id,
            str(sandbox.status.state),
            sandbox.image.uri if sandbox.image else "-",
            ", ".join(f"{k}={v}" for k, v in (sandbox.metadata or {}).items()) or "-",
            sandbox.expires_at.strftime("%H:%M:%S UTC") if sandbox.expires_at else "never",
        )
    if not sandboxes:
        table.add_row("(none)", "", "", "", "")
    return table


def _print_event(event: StreamEvent) -> None:
    if event.type in ("stdout", "stderr"):
        colour = "green" if event.type == "stdout" else "red"
        console.print(Text.assemble(("  │ ", colour), (event.text or "").rstrip("\n")), highlight=False)


CACHE_DIR = Path(os.environ.get("OSBOX_DEMO_CACHE", Path.home() / ".cache" / "osbox-images"))


def main() -> None:
    console.rule("[bold]osbox demo")
    if os.geteuid() != 0:
        sys.exit("The demo builds a Debian image and runs it in sandboxes: run it as root (make demo).")
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        with console.status("Building the demo's Debian image with mmdebstrap (once; cached in ~/.cache)"):
            registry = stack.enter_context(debian_mirror(CACHE_DIR, ["library/python:3.11"], pull=False))
        console.print(f"Debian image served as [cyan]python:3.11[/cyan] at {registry.host} {_elapsed(start)}")
        _run(registry.host)
    console.print(
        Panel.fit(
            "Every sandbox runs its image in its own namespaces, as an unprivileged user,\n"
            "with nothing of the host's filesystem in sight.\n"
            "Point the same clients at an OpenSandbox deployment when you outgrow one machine.",
            title="done",
        )
    )


def _run(mirror: str) -> None:
    start = time.perf_counter()
    with LocalServer(registry_mirrors={"docker.io": mirror}, image_store_dir=CACHE_DIR / "store") as server:
        console.print(f"Local runtime up at [cyan]{server.base_url}[/cyan] {_elapsed(start)}")
        with LifecycleClient(server.base_url + "/v1", api_key=server.api_key) as lifecycle:
            start = time.perf_counter()
            sandbox = lifecycle.create_sandbox(
                image="python:3.11",
                entrypoint=["tail", "-f", "/dev/null"],
                timeout=600,
                resource_limits={"cpu": "1", "memory": "512Mi"},
                metadata={"demo": "true"},
            )
            console.print(
                f"Created sandbox [bold]{sandbox.id}[/bold]: {sandbox.status.state} {_elapsed(start)}"
            )
            # Pending while the image is pulled (only the first time: the store keeps it).
            status = sandbox.status
            with console.status(f"[dim]{status.message or ''}[/dim]"):
                while status.state == "Pending":
                    time.sleep(0.2)
                    status = lifecycle.get_sandbox(sandbox.id).status
            if status.state != sandbox.status.state:
                console.print(f"  {status.state} {_elapsed(start)}")
            console.print(f"  [dim]{status.message or ''}[/dim]")
            endpoint = lifecycle.get_endpoint(sandbox.id, 44772)
            with ExecdClient.from_endpoint(endpoint) as execd:
                console.print("\n[bold]Streaming a command[/bold] (each line arrives as it is printed)")
                start = time.perf_counter()
                command = (
                    'echo "hello from $(hostname) as $(id -un) (uid $(id -u))"; '
                    "grep ^PRETTY_NAME /etc/os-release; python3 --version; "
                    'for i in 1 2 3; do echo "step $i"; done; '
                    'echo "can I write /usr? $(touch /usr/x 2>&1 || true)"; '
                    "ps -e | wc -l | xargs echo processes visible:; "
                    "echo 'and this goes to stderr' >&2"
                )
                result = execd.run_command(command).run(on_event=_print_event)
                console.print(f"  exit code {result.exit_code} {_elapsed(start)}")

                console.print("\n[bold]Files[/bold]")
                payload = b"".join(f"line {i}: osbox\n".encode() for i in range(10_000))
                start = time.perf_counter()
                execd.upload_file("/workspace/data.txt", payload, mode=0o644)
                info = execd.get_file_info("/workspace/data.txt")["/workspace/data.txt"]
                console.print(f"  uploaded /workspace/data.txt ({info.size:,} bytes) {_elapsed(start)}")
                buffer = io.BytesIO()
                start = time.perf_counter()
                execd.download_file("/workspace/data.txt", buffer)
                same = hashlib.sha256(buffer.getvalue()).digest() == hashlib.sha256(payload).digest()
                verdict = "matches" if same else "DIFFERS"
                console.print(f"  downloaded it back: SHA-256 {verdict} {_elapsed(start)}")
                wc = execd.run_command("wc -l /workspace/data.txt").run()
                console.print(f"  inside the sandbox: [cyan]{wc.stdout.strip()}[/cyan]")

                console.print("\n[bold]Code[/bold] (a Python kernel in the sandbox keeps its state)")
                start = time.perf_counter()
                try:
                    context = execd.create_context(language="python")
                except APIError as exc:  # the sandbox's python3 has no ipykernel: say so, go on
                    console.print(f"  [yellow]no code contexts here: {exc}[/yellow]")
                else:
                    console.print(f"  context {context.id} started {_elapsed(start)}")
                    execd.execute_code(
                        "lines = open('/workspace/data.txt').readlines()", context_id=context.id
                    ).run()
                    start = time.perf_counter()
                    cell = execd.execute_code("len(lines), lines[-1].strip()", context_id=context.id).run()
                    console.print(
                        f"  a later cell sees it: [cyan]{cell.results[0].text}[/cyan] {_elapsed(start)}"
                    )
                    execd.delete_context(str(context.id))

            console.print()
            console.print(_sandbox_table(list(lifecycle.iter_sandboxes())))
            start = time.perf_counter()
            lifecycle.delete_sandbox(sandbox.id)
            console.print(f"\nDeleted sandbox {sandbox.id} {_elapsed(start)}")
            console.print(_sandbox_table(list(lifecycle.iter_sandboxes())))

            console.print("\n[bold]The same in three lines[/bold] with the high-level Sandbox")
            start = time.perf_counter()
            with Sandbox.create("python:3.11", lifecycle=lifecycle) as quick:  # ready on return
                answer = quick.run("python3 -c 'print(6 * 7)'").stdout.strip()
            # The block's end deleted it.
            console.print(f"  created, ran, deleted: the answer is [cyan]{answer}[/cyan] {_elapsed(start)}")


if __name__ == "__main__":
    main()
