"""Image references: the `image.uri` strings clients send, parsed and normalised as Docker does.

    python:3.12                   -> docker.io/library/python:3.12
    ghcr.io/org/app:tag           -> ghcr.io/org/app:tag
    host:5000/app@sha256:<64 hex> -> host:5000/app@sha256:...   (pulled by digest)
    localhost:5000/x              -> localhost:5000/x:latest

The grammar is distribution's (github.com/distribution/reference): the first path component is a
registry when it has a `.` or a `:`, or is `localhost`; otherwise the image is on Docker Hub, where a
one-component name lives under `library/`. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidReference

__all__ = ["DOCKER_HUB", "ImageReference", "parse_reference", "validate_digest"]

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"
_MAX_NAME_LENGTH = 255

_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
#: Digest algorithms and the length of their lowercase hex encodings.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}


@dataclass(frozen=True)
class ImageReference:
    """A fully qualified image reference; `str()` gives the canonical form."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def transport(self) -> str:
        """The reference for skopeo's `docker://` transport (by digest when there is one).

        containers/image refuses a reference with both a tag and a digest; the digest is what
        identifies the content, so it wins.
        """
        if self.digest is not None:
            return f"docker://{self.name}@{self.digest}"
        return f"docker://{self.name}:{self.tag}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def validate_digest(digest: str) -> str:
    """Return `digest` (`algorithm:hex`) if it is well formed, else raise InvalidReference."""
    algorithm, sep, encoded = digest.partition(":")
    if not sep or algorithm not in _DIGEST_HEX_LENGTHS:
        raise InvalidReference(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    expected = _DIGEST_HEX_LENGTHS[algorithm]
    if len(encoded) != expected or not re.fullmatch(r"[0-9a-f]+", encoded):
        raise InvalidReference(
            f"invalid digest {digest!r}: {algorithm} needs {expected} lowercase hex digits"
        )
    return digest


def parse_reference(text: str) -> ImageReference:
    """Parse and normalise an image reference; raises InvalidReference saying what is wrong."""
    if not text or text != text.strip():
        raise InvalidReference(f"invalid image reference {text!r}: empty or surrounded by spaces")
    remainder, at, digest = text.partition("@")
    digest_value = validate_digest(digest) if at else None

    # A tag is after the last ':' that comes after the last '/' (a registry port has a '/' after it).
    tag: str | None = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(
                f"invalid tag {tag!r} in {text!r}: letters, digits, '_', '.', '-' (at most 128, not "
                "starting with '.' or '-')"
            )

    registry, repository = _split_registry(remainder, text)
    for component in repository.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            hint = " (repository names must be lowercase)" if component.lower() != component else ""
            raise InvalidReference(f"invalid repository name {repository!r} in {text!r}{hint}")
    if len(f"{registry}/{repository}") > _MAX_NAME_LENGTH:
        raise InvalidReference(f"image name in {text!r} is longer than {_MAX_NAME_LENGTH} characters")
    if tag is None and digest_value is None:
        tag = DEFAULT_TAG
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest_value)


def _split_registry(name: str, text: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    is_registry = slash and ("." in first or ":" in first or first == "localhost")
    if not is_registry:
        registry, repository = DOCKER_HUB, name
    else:
        if not _DOMAIN.fullmatch(first):
            raise InvalidReference(f"invalid registry {first!r} in {text!r}")
        registry, repository = first, rest
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    if not repository:
        raise InvalidReference(f"invalid image reference {text!r}: no repository name")
    return registry, repository
