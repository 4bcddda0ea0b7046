"""Stream events of execd's ``POST /command``, ``POST /code`` and ``POST /session/{id}/run``, and their fold.

A stream is a sequence of JSON objects. Each one with a ``type`` is a :class:`StreamEvent`; an object
without ``type`` appended after ``init`` is a :class:`StreamErrorBody` (``{code, message}``) reporting a
failure that happened once the stream had started. :func:`parse_stream_object` tells them apart.

:class:`ExecutionBuilder` folds events one at a time into an :class:`Execution` (pure, no I/O, so sync and
async streams share it). Output rules:

* Command and session output arrives one line per event without its newline; an empty line is sent as
  ``"\\n"``. A line event gets ``"\\n"`` appended, except when its text is exactly ``"\\n"`` (which *is* the
  empty line).
* Jupyter output arrives in chunks that carry their own newlines. A chunk that ends in ``"\\n"`` or contains
  one is appended verbatim. A chunk with no newline at all cannot be told from a command line, so by default
  it is treated as a line; pass ``chunks=True`` (what code-interpreter callers should do) to append every
  text verbatim.
* With osbox's exact framing (the SDK asks for it; ``chunks`` is then set when the server agrees), every
  text is appended verbatim: ``stdout`` is exactly what the command wrote. Bytes that are not UTF-8 come
  as lone surrogates (``surrogateescape``); ``Execution.stdout_bytes`` gives the bytes back.
* ``execution_complete`` sets the exit code to 0 unless an error was seen, and ``duration_ms`` from
  ``execution_time``. ``error`` with ename ``CommandExecError`` sets the exit code to ``int(evalue)``; any
  other error (e.g. a Python exception) sets it to 1. ``ping``, ``status`` and unknown types are ignored.
* A command a signal killed: osbox's server says which (``signal: "SIGKILL"`` beside ``error``, and
  ``timed_out: true`` when its timeout did it) with exit code 128 + N. The reference says ``evalue: "-1"``
  with a traceback ``signal: killed``; that is read back as the same: ``SIGKILL``, exit code 137.
  A code cell past its timeout ends with ``error{ename: "Timeout"}`` and osbox's ``timed_out: true``.
* A :class:`StreamErrorBody` becomes ``Execution.error`` with ``ename`` = its code and ``evalue`` = its
  message; the exit code is left as it was.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from pydantic import Field, GetCoreSchemaHandler
from pydantic_core import core_schema

from .._wire import GO_SIGNAL_WORDS
from ._base import ErrorResponse, SnakeCaseWireModel

__all__ = [
    "COMMAND_EXEC_ERROR",
    "CodeResult",
    "EventType",
    "Execution",
    "ExecutionBuilder",
    "ExecutionError",
    "StreamErrorBody",
    "StreamEvent",
    "fold",
    "output_piece",
    "parse_stream_object",
]

COMMAND_EXEC_ERROR: Final = "CommandExecError"
"""The ``ename`` execd uses for a command that exited non-zero or was killed; ``evalue`` is the exit code."""


class EventType:
    """The known values of :attr:`StreamEvent.type` (a plain ``str``: unknown types must be tolerated)."""

    INIT: Final = "init"
    STDOUT: Final = "stdout"
    STDERR: Final = "stderr"
    RESULT: Final = "result"
    EXECUTION_COUNT: Final = "execution_count"
    EXECUTION_COMPLETE: Final = "execution_complete"
    ERROR: Final = "error"
    STATUS: Final = "status"
    PING: Final = "ping"


class ExecutionError(SnakeCaseWireModel):
    """An error reported by a stream: exception name, value and traceback lines."""

    ename: str = ""
    evalue: str = ""
    traceback: list[str] = Field(default_factory=list)


_SIMPLE_FIELDS: Final = ("text", "execution_count", "execution_time", "timestamp")
_FIELD_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "type": (str,),
    "text": (str,),
    "execution_count": (int,),
    "execution_time": (int, float),
    "timestamp": (int,),
    "results": (dict,),
}


class StreamEvent:
    """One event of an execution stream (the spec's ``ServerStreamEvent``); every field but ``type`` optional.

    ``timestamp`` is Unix milliseconds; ``results`` is the MIME bundle of a ``result`` event with every
    MIME type kept (execd renames ``text/plain`` to ``text``); unknown fields are kept in ``extra``.

    Not a pydantic model on purpose: a big command output is hundreds of thousands of these, and a
    slotted class is built about five times faster. :meth:`from_wire` checks every field's type.
    """

    __slots__ = (
        "error",
        "execution_count",
        "execution_time",
        "extra",
        "results",
        "text",
        "timestamp",
        "type",
    )

    def __init__(
        self,
        type: str,
        text: str | None = None,
        execution_count: int | None = None,
        execution_time: int | float | None = None,
        timestamp: int | None = None,
        results: dict[str, Any] | None = None,
        error: ExecutionError | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.type = type
        self.text = text
        self.execution_count = execution_count
        self.execution_time = execution_time
        self.timestamp = timestamp
        self.results = results
        self.error = error
        self.extra = extra

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> StreamEvent:
        """Build an event from one decoded stream object; a field of the wrong type is a ``ValueError``."""
        if data.keys() <= _OUTPUT_KEYS:  # the hot path: {"type", "text", "timestamp"}
            kind, text, timestamp = data.get("type"), data.get("text"), data.get("timestamp")
            if (
                type(kind) is str
                and (text is None or type(text) is str)
                and (timestamp is None or type(timestamp) is int)
            ):
                return cls(kind, text, None, None, timestamp)
        for name, value in data.items():
            expected = _FIELD_TYPES.get(name)
            if (
                expected is not None
                and value is not None
                and (not isinstance(value, expected) or isinstance(value, bool))
            ):
                raise ValueError(f"stream event field {name!r} has the wrong type: {value!r:.80}")
        kind = data.get("type")
        if kind is None:
            raise ValueError("stream event without 'type'")
        error = data.get("error")
        extra = {k: v for k, v in data.items() if k not in _KNOWN_KEYS} if data.keys() - _KNOWN_KEYS else None
        return cls(
            kind,
            data.get("text"),
            data.get("execution_count"),
            data.get("execution_time"),
            data.get("timestamp"),
            data.get("results"),
            ExecutionError.model_validate(error) if error is not None else None,
            extra,
        )

    def to_wire(self) -> dict[str, Any]:
        """The event as JSON-able wire data (fields that are None are left out)."""
        data: dict[str, Any] = {"type": self.type}
        for name in _SIMPLE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.results is not None:
            data["results"] = self.results
        if self.error is not None:
            data["error"] = self.error.to_wire()
        if self.extra:
            data.update(self.extra)
        return data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamEvent):
            return NotImplemented
        return self.to_wire() == other.to_wire()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_wire().items())
        return f"StreamEvent({fields})"


_KNOWN_KEYS: Final = frozenset({"type", "error", "results", *_SIMPLE_FIELDS})
_OUTPUT_KEYS: Final = frozenset({"type", "text", "timestamp"})


class StreamErrorBody(ErrorResponse):
    """A ``{code, message}`` object without ``type``: a failure appended to a stream after ``init``."""


def parse_stream_object(data: dict[str, Any]) -> StreamEvent | StreamErrorBody:
    """Validate one decoded stream object: an event if it has ``type``, else a trailing error body."""
    if "type" in data:
        return StreamEvent.from_wire(data)
    return StreamErrorBody.model_validate(data)


class CodeResult(dict[str, Any]):
    """One result of a code cell: its MIME bundle, exactly as the server sent it, plus accessors
    that read both kinds of server.

    The spec keys a bundle by MIME type (`text/plain`, `text/html`, `image/png`, ...); the reference
    execd renames `text/plain` to `text`; `osbox serve` sends both. `text` and `data` read either::

        result = execution.results[0]
        result.text                # "42", from "text" or "text/plain"
        result.data["text/plain"]  # the same, under its MIME type, whichever the server sent
        result.png                 # base64 PNG data or None (also .html)
    """

    @property
    def text(self) -> str | None:
        """The plain-text form (`text`, else `text/plain`), or None."""
        value = self.get("text", self.get("text/plain"))
        return value if isinstance(value, str) else None

    @property
    def data(self) -> dict[str, Any]:
        """The bundle keyed by MIME type only: `text/plain` restored from `text` when the server
        renamed it, and no `text` key."""
        bundle = {mime: value for mime, value in self.items() if mime != "text"}
        if "text" in self and "text/plain" not in bundle:
            bundle["text/plain"] = self["text"]
        return bundle

    @property
    def html(self) -> str | None:
        """The `text/html` form, or None."""
        value = self.get("text/html")
        return value if isinstance(value, str) else None

    @property
    def png(self) -> str | None:
        """The `image/png` form (base64, as Jupyter sends it), or None."""
        value = self.get("image/png")
        return value if isinstance(value, str) else None

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls._of, core_schema.dict_schema(core_schema.str_schema(), core_schema.any_schema())
        )

    @classmethod
    def _of(cls, bundle: Mapping[str, Any]) -> CodeResult:
        return bundle if isinstance(bundle, cls) else cls(bundle)


class Execution(SnakeCaseWireModel):
    """The folded result of a command, session run or code cell.

    ``exit_code`` is ``None`` while no terminal event was seen; ``complete`` says whether one
    (``execution_complete`` or ``error``) was. A command a signal killed has exit code 128 + N (as a
    shell reports it), ``signal`` its name (``"SIGKILL"``), and ``timed_out`` says whether its
    ``timeout`` was what killed it; for a code cell (python or bash context), whether it ran past its
    ``timeout`` (its ``error`` is then a ``Timeout``).

    ``stdout``/``stderr`` are exactly what the command wrote when the server speaks osbox's exact
    framing (``osbox serve`` does); bytes that are not UTF-8 are kept as lone surrogates
    (``surrogateescape``), so ``stdout_bytes`` is the very bytes. Against a server without it, each
    line gets a ``"\n"`` (the reference's line framing cannot say whether it had one).
    """

    id: str | None = None
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    #: Each result of a code cell (`execute_result`, `display_data`): see `CodeResult`.
    results: list[CodeResult] = Field(default_factory=list)
    error: ExecutionError | None = None
    execution_count: int | None = None
    duration_ms: float | None = None
    complete: bool = False
    signal: str | None = None
    timed_out: bool = False

    @property
    def stdout_bytes(self) -> bytes:
        """``stdout`` as the bytes the command wrote (``surrogateescape``: non-UTF-8 bytes come back)."""
        return self.stdout.encode("utf-8", "surrogateescape")

    @property
    def stderr_bytes(self) -> bytes:
        """``stderr`` as the bytes the command wrote (see ``stdout_bytes``)."""
        return self.stderr.encode("utf-8", "surrogateescape")


def output_piece(text: str, *, chunks: bool = False) -> str:
    """What one output event adds to the output: a line gets its newline back (see the module
    docstring); a chunk (code execution) or a text that holds a newline is kept as it is."""
    if chunks or "\n" in text:
        return text
    return text + "\n"


_SIGNALS_BY_WORD: Final = {word: name for name, word in GO_SIGNAL_WORDS.items()}


def _signal_of(event: StreamEvent, error: ExecutionError) -> tuple[str | None, bool]:
    """Which signal ended a command, and whether its timeout ended it (a signal, or a code cell's
    timeout: no signal): osbox's fields, else what the reference's traceback (``signal: killed``) says."""
    extra = event.extra or {}
    named = extra.get("signal")
    timed_out = extra.get("timed_out") is True
    if (isinstance(named, str) and named) or timed_out:
        return (named if isinstance(named, str) and named else None), timed_out
    said = error.traceback[0] if error.ename == COMMAND_EXEC_ERROR and error.traceback else ""
    word = said.removeprefix("signal: ") if said.startswith("signal: ") else None
    return (_SIGNALS_BY_WORD.get(word) if word is not None else None), False


def _exit_code_of(error: ExecutionError) -> int:
    """The exit code an error event stands for (see the module docstring)."""
    if error.ename == COMMAND_EXEC_ERROR:
        try:
            return int(error.evalue)
        except ValueError:
            return 1
    return 1


class ExecutionBuilder:
    """Folds stream events one at a time into an :class:`Execution`.

    Example::

        builder = ExecutionBuilder()
        for event in stream:
            builder.add(event)
        execution = builder.result()
    """

    def __init__(self, *, chunks: bool = False) -> None:
        """``chunks=True`` appends all output text verbatim (Jupyter, osbox's exact framing); see the
        module docstring. It may be switched on before the first output event."""
        self.chunks = chunks
        self._id: str | None = None
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._exit_code: int | None = None
        self._results: list[CodeResult] = []
        self._error: ExecutionError | None = None
        self._execution_count: int | None = None
        self._duration_ms: float | None = None
        self._complete = False
        self._signal: str | None = None
        self._timed_out = False

    def add(self, event: StreamEvent | StreamErrorBody) -> None:
        """Fold one event (or a trailing error body) into the result."""
        if isinstance(event, StreamErrorBody):
            self._error = ExecutionError(ename=event.code, evalue=event.message)
            return
        kind = event.type
        if kind == EventType.STDOUT or kind == EventType.STDERR:
            if event.text is not None:
                self._output(kind).append(self._piece(event.text))
        elif kind == EventType.INIT:
            self._id = event.text
        elif kind == EventType.RESULT:
            if event.results is not None:
                self._results.append(CodeResult(event.results))
            if event.execution_count is not None:
                self._execution_count = event.execution_count
        elif kind == EventType.EXECUTION_COUNT:
            if event.execution_count is not None:
                self._execution_count = event.execution_count
        elif kind == EventType.EXECUTION_COMPLETE:
            self._complete = True
            if event.execution_time is not None:
                self._duration_ms = event.execution_time
            if self._error is None:
                self._exit_code = 0
        elif kind == EventType.ERROR:
            self._complete = True
            self._error = event.error if event.error is not None else ExecutionError()
            self._exit_code = _exit_code_of(self._error)
            self._signal, self._timed_out = _signal_of(event, self._error)
            number = getattr(_signal.Signals, self._signal or "", None)
            if number is not None and self._exit_code == -1:  # the reference's way of saying it
                self._exit_code = 128 + number

    def add_output(self, kinds: Sequence[str], texts: Sequence[str], *, newline_free: bool = False) -> None:
        """Fold many ``stdout``/``stderr`` texts at once: the same as ``add`` of each as an event.

        ``kinds[i]`` is the type of ``texts[i]``; each must be ``"stdout"`` or ``"stderr"``.
        ``newline_free=True`` says that no text holds a newline (the stream decoder knows it), which
        spares a scan of them all.
        """
        if not texts:
            return
        kind = kinds[0]
        if kinds.count(kind) == len(kinds):  # one stream
            out = self._output(kind)
            if self.chunks:
                out.append("".join(texts))  # chunks are kept as they are
                return
            joined = "\n".join(texts)
            if newline_free or joined.count("\n") == len(texts) - 1:
                out += (joined, "\n")  # no text holds a newline: each line gets one
                return
        for kind, text in zip(kinds, texts, strict=True):
            self._output(kind).append(self._piece(text))

    def _output(self, kind: str) -> list[str]:
        return self._stdout if kind == EventType.STDOUT else self._stderr

    def _piece(self, text: str) -> str:
        return output_piece(text, chunks=self.chunks)

    def result(self) -> Execution:
        """The execution as folded so far (may be called repeatedly)."""
        return Execution(
            id=self._id,
            stdout="".join(self._stdout),
            stderr="".join(self._stderr),
            exit_code=self._exit_code,
            results=list(self._results),
            error=self._error,
            execution_count=self._execution_count,
            duration_ms=self._duration_ms,
            complete=self._complete,
            signal=self._signal,
            timed_out=self._timed_out,
        )


def fold(events: Iterable[StreamEvent | StreamErrorBody], *, chunks: bool = False) -> Execution:
    """Fold a whole stream into an :class:`Execution` (see :class:`ExecutionBuilder`)."""
    builder = ExecutionBuilder(chunks=chunks)
    for event in events:
        builder.add(event)
    return builder.result()
