"""The engine's records: a job as stored, and a job to add in bulk."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Literal, Self

from kongflow.engine.errors import InvalidJobError

JobKeyMode = Literal["replace", "preserve_run_at", "unsafe_dedupe"]
JobState = Literal[
    "available", "scheduled", "blocked", "running", "failed", "completed", "cancelled"
]
JOB_KEY_MODES: tuple[str, ...] = ("replace", "preserve_run_at", "unsafe_dedupe")
# Task identifiers, queue names and job keys, in characters: at most 2 KB of UTF-8, within the
# ~2.7 KB a btree index entry may take (queue names and job keys are unique-indexed).
MAX_NAME_LENGTH = 512
MAX_KEY_LENGTH = MAX_NAME_LENGTH
MAX_ATTEMPTS_LIMIT = 32767
_INT32 = 2**31
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)  # made once, not per job
# The same encoding by json's C encoder, made once too: JSONEncoder.encode builds one per call,
# which costs more than encoding a small payload. Without circular-reference markers it keeps no
# state between calls (so threads can share it); a cycle ends in RecursionError instead.
_C_ENCODE: Callable[[Any, int], Sequence[str]] | None = (
    None
    if c_make_encoder is None
    else c_make_encoder(
        None, _ENCODER.default, encode_basestring_ascii, None, ":", ",", False, False, False
    )
)
_COLUMN_NAMES: dict[tuple[bytes, ...], list[str]] = {}  # a result's raw column names, decoded
# The C scanner json.loads ends in (set by JSONDecoder.__init__, so typeshed does not list it).
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Job:
    """A job as the database holds it (columns of the `jobs` view)."""

    id: int
    queue_name: str | None
    task_identifier: str
    payload: Any
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    key: str | None
    locked_at: datetime | None
    locked_by: str | None
    revision: int
    flags: list[str]
    state: JobState
    errors: list[dict[str, Any]]
    cancel_requested_at: datetime | None
    finished_at: datetime | None
    result: Any
    headers: dict[str, str] | None

    @classmethod
    def from_values(cls, names: Sequence[str], values: Sequence[Any]) -> Self:
        """A job from a row of the `jobs` view (column names, values). Fills the frozen
        instance's __dict__ in one step rather than field by field through the frozen
        __setattr__: about 3x faster, which matters to a worker claiming thousands a second."""
        state = dict(zip(names, values))  # noqa: B905 (the names are the row's own columns)
        flags = state["flags"]
        state["flags"] = sorted(flags) if flags else []
        if state["errors"] is None:
            state["errors"] = []
        cls._add_runtime_state(state)
        job = object.__new__(cls)
        object.__setattr__(job, "__dict__", state)
        return job

    @classmethod
    def row_factory(cls, cursor: Any) -> Callable[[Sequence[Any]], Self]:
        """A psycopg row factory building this class with `from_values`. The column names come
        from the raw result (psycopg's `description` builds an object per column, ~35 us for
        a job row: a tenth of a single enqueue)."""
        result = cursor.pgresult
        raw = tuple(map(result.fname, range(result.nfields))) if result is not None else ()
        names = _COLUMN_NAMES.get(raw)
        if names is None:
            names = _COLUMN_NAMES[raw] = [name.decode() for name in raw]
        return lambda values: cls.from_values(names, values)

    @staticmethod
    def _add_runtime_state(state: dict[str, Any]) -> None:
        """Add the fields that do not come from the database (none here)."""


@dataclass(frozen=True)
class JobSpec:
    """One job for `add_jobs`, with `add_job`'s arguments."""

    identifier: str
    payload: Any = None
    queue_name: str | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    job_key: str | None = None
    priority: int | None = None
    flags: Sequence[str] | None = field(default=None)

    def validated(self, where: str = "", *, encode: bool = True) -> dict[str, Any]:
        """The spec's values, checked; raises InvalidJobError naming the bad argument.

        With encode=False the payload is left as given, for the caller to encode with others.
        Options left at None are not checked at all (bulk enqueues validate every spec)."""
        queue_name, run_at, max_attempts = self.queue_name, self.run_at, self.max_attempts
        job_key, priority, flags = self.job_key, self.priority, self.flags
        return {
            "identifier": check_identifier(self.identifier, where),
            "payload": encode_payload(self.payload, where) if encode else self.payload,
            "queue_name": None
            if queue_name is None
            else check_optional_text(queue_name, "queue_name", where, MAX_NAME_LENGTH),
            "run_at": None if run_at is None else check_run_at(run_at, where),
            "max_attempts": None
            if max_attempts is None
            else check_int(max_attempts, "max_attempts", where, 1, MAX_ATTEMPTS_LIMIT),
            "job_key": None
            if job_key is None
            else check_optional_text(job_key, "job_key", where, MAX_KEY_LENGTH),
            "priority": None
            if priority is None
            else check_int(priority, "priority", where, -_INT32, _INT32 - 1),
            "flags": None if flags is None else check_flags(flags, where),
        }


def decode_payload(data: str | bytes) -> Any:
    """`json.loads` for JSON text from the database, in one call to the C scanner when the text
    is one value with no surrounding whitespace (what kongflow stores); anything else goes to
    `json.loads`. About twice as fast, which a worker decoding tens of thousands of payloads a
    second notices."""
    text = data if isinstance(data, str) else str(data, "utf-8")
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def _fail(where: str, argument: str, message: str) -> InvalidJobError:
    return InvalidJobError(f"{where}{argument}", message)


def text_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store this text, or None if it can."""
    if "\x00" in value:
        return "contains a NUL character, which PostgreSQL cannot store"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate, which is not valid Unicode text"
    return None


def _bad_text_in(value: object) -> str | None:
    """The first problem of a string (or key) anywhere in a JSON-like value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return f"a string in it {problem}"
        elif isinstance(item, dict):
            for key, member in item.items():
                stack.append(key)
                stack.append(member)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


def may_hold_bad_text(json_text: str) -> bool:
    """Whether ASCII JSON text may encode a NUL or a lone surrogate (both appear as escapes;
    so do escaped backslashes and surrogate pairs, hence "may")."""
    return "\\u0000" in json_text or "\\ud" in json_text


def check_identifier(value: object, where: str = "") -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise _fail(
            where,
            "identifier",
            f"must be a string of 1 to {MAX_NAME_LENGTH} characters, got {value!r:.80}",
        )
    problem = text_problem(value)
    if problem is not None:
        raise _fail(where, "identifier", problem)
    return value


def _encode(value: object) -> str:
    return "".join(_C_ENCODE(value, 0)) if _C_ENCODE else _ENCODER.encode(value)


def encode_payload(value: object, where: str = "") -> str | None:
    """JSON text of a payload (None stays None: the database stores `{}`)."""
    if value is None:
        return None
    try:
        text = _encode(value)
    except (TypeError, ValueError) as exc:
        raise _fail(where, "payload", f"must be JSON-serialisable: {exc}") from None
    except RecursionError:
        message = "must be JSON-serialisable: it refers to itself, or nests too deep"
        raise _fail(where, "payload", message) from None
    if may_hold_bad_text(text):
        check_payload_text(value, where)
    return text


def check_payload_text(value: object, where: str = "") -> None:
    """Refuses a payload with a NUL or a lone surrogate in a string or key: the json column
    would take it, but PostgreSQL could not use it as text or jsonb (merging, filtering)."""
    problem = _bad_text_in(value)
    if problem is not None:
        raise _fail(where, "payload", problem)


def unstorable_reason(value: object) -> str | None:
    """Why a handler's result cannot be stored as JSON, or None if it can."""
    try:
        text = _encode(value)
    except (TypeError, ValueError) as exc:
        return f"not JSON-serialisable: {exc}"
    except RecursionError:
        return "not JSON-serialisable: it refers to itself, or nests too deep"
    return _bad_text_in(value) if may_hold_bad_text(text) else None


def check_optional_text(value: object, argument: str, where: str, max_length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise _fail(
            where, argument, f"must be a string of 1 to {max_length} characters, got {value!r:.80}"
        )
    problem = text_problem(value)
    if problem is not None:
        raise _fail(where, argument, problem)
    return value


def check_run_at(value: object, where: str = "") -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _fail(where, "run_at", f"must be a timezone-aware datetime, got {value!r}")
    return value.isoformat()


def check_int(value: object, argument: str, where: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _fail(where, argument, f"must be an integer from {low} to {high}, got {value!r}")
    return value


def check_flags(value: object, where: str = "") -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
        raise _fail(where, "flags", f"must be a list of strings, got {value!r}")
    flags = list(value)
    if not all(isinstance(f, str) and f for f in flags):
        raise _fail(where, "flags", f"must be a list of non-empty strings, got {flags!r:.200}")
    for flag in flags:
        problem = text_problem(flag)
        if problem is not None:
            raise _fail(where, "flags", f"{flag!r:.80} {problem}")
    return flags


def check_job_key_mode(value: object) -> str:
    if value not in JOB_KEY_MODES:
        raise InvalidJobError(
            "job_key_mode", f"must be one of {', '.join(JOB_KEY_MODES)}, got {value!r}"
        )
    return str(value)
