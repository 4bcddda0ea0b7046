"""Base classes and shared types for the OpenSandbox wire models.

Conventions every model in :mod:`osbox.models` follows:

* Python attributes are snake_case; wire names are exactly the spec's. :class:`WireModel` derives camelCase
  aliases (the lifecycle, diagnostics and egress APIs); :class:`SnakeCaseWireModel` keeps the attribute names
  on the wire (execd, whose JSON is snake_case). Either accepts both spellings on input.
* Unknown fields are kept (``extra="allow"``): they stay readable as attributes and in ``model_extra``, and
  ``to_wire()`` sends them back unchanged, so a newer server or client never loses data through osbox.
* "Not given" differs from ``null``: ``to_wire()`` dumps with ``exclude_unset``, so a field never assigned is
  omitted, while a field explicitly set to ``None`` is sent as ``null``. Nested models keep their own set of
  assigned fields, so the rule holds at every depth.
* Datetimes are :data:`UtcDateTime`: naive values are taken as UTC, aware values converted to UTC, and the
  wire form is RFC 3339 ending in ``Z``.
* Validation errors never echo the input (``hide_input_in_errors``): inputs may hold secrets (passwords,
  tokens, environment values) and errors end up in logs and HTTP answers. Location and reason remain.
* Enums the spec says may grow are :class:`OpenStrEnum` subclasses: known values are members, unknown values
  still validate (as pseudo-members that compare equal to their string), so clients survive new states.

Request models derive from :class:`RequestModel`. They stay tolerant of extra fields (the SDK must be able to
send fields osbox does not know yet, and the server ignores unknown JSON like the reference does), but they
validate assignments too, so a request mutated after construction cannot reach the wire invalid.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, RootModel
from pydantic.alias_generators import to_camel

__all__ = [
    "ErrorResponse",
    "OpenStrEnum",
    "RequestModel",
    "SnakeCaseRequestModel",
    "SnakeCaseWireModel",
    "UtcDateTime",
    "WireModel",
    "WireRootModel",
]


def _as_utc(value: datetime) -> datetime:
    """Normalise to UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]
"""A ``datetime`` that is always timezone-aware UTC; serialized as RFC 3339 with a ``Z`` suffix."""


class OpenStrEnum(StrEnum):
    """A string enum that also accepts values it does not list.

    ``SandboxState("Hibernating")`` returns a pseudo-member (not added to the class) whose value and name are
    the given string, so it compares equal to ``"Hibernating"`` and serializes back unchanged. Use
    :meth:`is_known` to tell listed values from new ones.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        return member

    def is_known(self) -> bool:
        """Whether this value is one the enum lists (rather than one a newer server sent)."""
        return type(self)._value2member_map_.get(self._value_) is self


class WireModel(BaseModel):
    """Base of every wire object whose JSON names are camelCase.

    Example::

        req = CreateSandboxRequest(image=ImageSpec(uri="python:3.11"), entrypoint=["sleep", "inf"])
        req.to_wire()   # {"image": {"uri": "python:3.11"}, "entrypoint": ["sleep", "inf"]}
    """

    # defer_build: validators are built on first use, which keeps ``import osbox`` fast.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        hide_input_in_errors=True,
        defer_build=True,
    )

    # Fields the wire requires although they have a default (e.g. union discriminators): always sent.
    _always_sent: ClassVar[tuple[str, ...]] = ()

    def model_post_init(self, context: Any, /) -> None:
        """Mark :attr:`_always_sent` fields as assigned so ``to_wire()`` includes them."""
        if self._always_sent:
            self.__pydantic_fields_set__.update(self._always_sent)

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready wire form: spec names, unset fields omitted, explicit ``None`` kept as ``null``."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        """Validate a decoded JSON value (wire names or attribute names) into this model."""
        return cls.model_validate(data)


class SnakeCaseWireModel(WireModel):
    """Base of wire objects whose JSON names are the snake_case attribute names (most of execd)."""

    model_config = ConfigDict(alias_generator=None)


class RequestModel(WireModel):
    """Base of request bodies (camelCase): like :class:`WireModel`, and assignments are validated too."""

    model_config = ConfigDict(validate_assignment=True)


class SnakeCaseRequestModel(SnakeCaseWireModel):
    """Base of snake_case request bodies: like :class:`SnakeCaseWireModel`, assignments validated."""

    model_config = ConfigDict(validate_assignment=True)


RootT = TypeVar("RootT")


class WireRootModel(RootModel[RootT], Generic[RootT]):
    """A bare JSON array or map on the wire (e.g. ``{path: FileInfo}``, ``[NetworkRule]``)."""

    model_config = ConfigDict(hide_input_in_errors=True, defer_build=True)

    def to_wire(self) -> Any:
        """The JSON-ready wire form of the root value (nested models keep their unset-field omission)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        """Validate a decoded JSON value into this model."""
        return cls.model_validate(data)


class ErrorResponse(WireModel):
    """The ``{code, message}`` error body shared by the lifecycle, diagnostics and execd APIs.

    ``message`` defaults to ``""`` because execd sometimes omits it.
    """

    code: str
    message: str = ""
