"""Named volumes at hostile layouts: a `subPath` never leads the server out of its volume.

The hostile sandbox builds a layout in its volume (`/mnt/shared/adv`); each example then creates a
second sandbox on the same claim with a generated `subPath` into it. The create must be refused
(400) or succeed without the server having made, chmod'ed or mounted anything outside the volume.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.adversarial.conftest import Hostile
from tests.adversarial.layouts import Entry, layouts, relative_paths

pytestmark = pytest.mark.adversarial

SETTINGS = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@st.composite
def layouts_and_sub_paths(draw: st.DrawFn) -> tuple[list[Entry], str]:
    """A layout, and a `subPath` that is mostly one of its entries (maybe with more below it)."""
    layout = draw(layouts)
    sub_path = draw(st.one_of(st.sampled_from([entry.path for entry in layout]), relative_paths))
    return layout, sub_path + draw(st.sampled_from(("", "/a", "/b/a")))


@SETTINGS
@given(case=layouts_and_sub_paths(), read_only=st.booleans())
@example(case=([Entry("a", "symlink", "{canary}")], "a"), read_only=False)  # the attack
@example(case=([Entry("a", "symlink", "{canary}/sub")], "a/new"), read_only=False)
@example(case=([Entry("a", "symlink", "../../../../../../var/tmp")], "a"), read_only=False)
def test_pvc_subpaths_at_hostile_layouts(
    hostile: Hostile, case: tuple[list[Entry], str], read_only: bool
) -> None:
    layout, sub_path = case
    hostile.build("/mnt/shared/adv", layout)
    volume = {
        "name": "v",
        "mountPath": "/mnt/v",
        "readOnly": read_only,
        "pvc": {"claimName": hostile.claim},
        "subPath": f"adv/{sub_path}",
    }
    body = {"image": {"uri": "python:3.11"}, "entrypoint": ["tail", "-f", "/dev/null"], "volumes": [volume]}
    response = hostile.api.post("/sandboxes", json=body)
    assert response.status_code in (202, 400), response.text
    if response.status_code == 202:
        assert hostile.api.delete(f"/sandboxes/{response.json()['id']}").status_code == 204
    hostile.assert_outside_unchanged()
