"""Code contexts over a hostile kernel directory: the server never connects outside the sandbox.

Each example plants a layout under `/tmp/.osbox` (the kernel directory itself a symlink to the
canary or to the root-only socket's directory, a FIFO, a file, a directory of symlinks, ...) and
asks for a code context. The answer is a context that works or a clean error, never a hang; the
canary's root-only socket is never connected to and nothing outside the sandbox changes.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings

from tests.adversarial.conftest import Hostile
from tests.adversarial.layouts import Entry, kernel_layouts

pytestmark = pytest.mark.adversarial

SETTINGS = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def kernels(hostile: Hostile) -> Hostile:
    if "ok" not in hostile.sh("python3 -c 'import ipykernel' && echo ok"):
        pytest.skip("the sandboxes' python3 has no ipykernel (Debian: apt-get install python3-ipykernel)")
    return hostile


@SETTINGS
@given(layout=kernel_layouts)
@example(layout=[Entry("kernels", "symlink", "{canary}/private")])
@example(layout=[Entry("kernels", "fifo")])
def test_code_contexts_over_hostile_kernel_dirs(kernels: Hostile, layout: list[Entry]) -> None:
    kernels.build("/tmp/.osbox", layout)
    created = kernels.execd.post("/code/context", json={"language": "python"})
    assert created.status_code in (200, 500), created.text
    if created.status_code == 200:
        context_id = created.json()["id"]
        cell = kernels.execd.post("/code", json={"code": "6 * 7", "context": {"id": context_id}})
        assert cell.status_code == 200 and "42" in cell.text, cell.text
        assert kernels.execd.delete(f"/code/contexts/{context_id}").status_code == 200
    else:
        assert created.json()["message"], created.text
    kernels.sh("rm -rf /tmp/.osbox")
    kernels.assert_outside_unchanged()
