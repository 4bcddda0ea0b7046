"""Image references are parsed and normalised as Docker does, and malformed ones say what is wrong."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from osbox.server.images import InvalidReference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("python:3.12", "docker.io/library/python:3.12"),
        ("python", "docker.io/library/python:latest"),
        ("library/python:3.12", "docker.io/library/python:3.12"),
        ("opensandbox/code-interpreter:v1.0.1", "docker.io/opensandbox/code-interpreter:v1.0.1"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox:1.36", "docker.io/library/busybox:1.36"),
        ("ghcr.io/org/app:tag", "ghcr.io/org/app:tag"),
        ("ghcr.io/org/team/app", "ghcr.io/org/team/app:latest"),
        (f"host:5000/app@{DIGEST}", f"host:5000/app@{DIGEST}"),
        (f"host:5000/app:v1@{DIGEST}", f"host:5000/app:v1@{DIGEST}"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("localhost/x", "localhost/x:latest"),
        ("127.0.0.1:5000/a/b_c.d-e:1.0-rc_1", "127.0.0.1:5000/a/b_c.d-e:1.0-rc_1"),
        ("[::1]:5000/x:y", "[::1]:5000/x:y"),
    ],
)
def test_references_normalise_as_docker_does(text: str, canonical: str) -> None:
    assert str(parse_reference(text)) == canonical


def test_parts_and_transport() -> None:
    ref = parse_reference("python:3.12")
    parts = (ref.registry, ref.repository, ref.tag, ref.digest)
    assert parts == ("docker.io", "library/python", "3.12", None)
    assert ref.transport == "docker://docker.io/library/python:3.12"
    pinned = parse_reference(f"host:5000/app:v1@{DIGEST}")
    assert pinned.transport == f"docker://host:5000/app@{DIGEST}"  # the digest wins over the tag


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        (" python", "spaces"),
        ("Python:3", "lowercase"),
        ("python:", "invalid tag"),
        ("python:-x", "invalid tag"),
        ("python:" + "a" * 129, "invalid tag"),
        ("python@sha256:abc", "64 lowercase hex"),
        ("python@sha256:" + "AB" * 32, "64 lowercase hex"),
        ("python@md5:" + "a" * 32, "expected sha256"),
        ("python@", "expected sha256"),
        ("ghcr.io/", "no repository"),
        ("ghcr.io//x", "invalid repository"),
        ("a..b/x", "invalid registry"),
        ("bad_host.io:5000/x", "invalid registry"),
        ("x/y-", "invalid repository"),
        ("registry.io/" + "a" * 300, "longer than"),
    ],
)
def test_malformed_references_are_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(InvalidReference, match=says):
        parse_reference(text)


# No '.' in components: a first component with one would be read as a registry host.
_component = st.from_regex(r"[a-z0-9]{1,8}(?:(?:_|__|-+)[a-z0-9]{1,8}){0,2}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.from_regex(r"[0-9a-f]{64}", fullmatch=True).map(lambda h: f"sha256:{h}")


@given(
    registry=st.sampled_from(["", "ghcr.io/", "localhost:5000/", "127.0.0.1:1/", "my.registry/"]),
    path=st.lists(_component, min_size=1, max_size=3),
    tag=st.none() | _tag,
    digest=st.none() | _digest,
)
def test_canonical_form_is_a_fixed_point(
    registry: str, path: list[str], tag: str | None, digest: str | None
) -> None:
    text = registry + "/".join(path) + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ref = parse_reference(text)
    assert parse_reference(str(ref)) == ref
    assert ref.digest == digest
    assert ref.tag == (tag or (None if digest else "latest"))


@given(st.text(max_size=60))
def test_any_text_parses_or_raises_invalid_reference(text: str) -> None:
    with contextlib.suppress(InvalidReference):
        parse_reference(text)
