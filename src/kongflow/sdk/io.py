"""A run's durable io (trigger.dev v2's IO): tasks the jobs service records, so that a run can
wait, retry a step or be resumed without redoing the steps it took."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypedDict, Unpack

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from kongflow.bloom import NOOP_TASK_SET_SIZE, BloomFilter
from kongflow.protocol import (
    LAZY_LOADED_CACHED_TASKS,
    ApiEventLog,
    AutoYieldConfig,
    AutoYieldMetadata,
    CachedTask,
    DisplayProperty,
    ErrorWithStack,
    RunJobBody,
)
from kongflow.sdk.api import ApiClient, ApiError, ServerTask, json_text
from kongflow.sdk.flow import (
    AutoYield,
    AutoYieldWithCompletedTask,
    CanceledWithTask,
    ResumeWithTask,
    RetryWithTask,
    YieldExecution,
)
from kongflow.sdk.keys import CacheKey, display_key, idempotency_key
from kongflow.sdk.retry import RetryOptions, calculate_retry_at
from kongflow.sdk.store import RunStores

if TYPE_CHECKING:
    from kongflow.sdk.context import Context

LOGGER_NAME = "kongflow.sdk"
_internal = logging.getLogger("kongflow.sdk.io")

TaskBody = Callable[[ServerTask], Awaitable[Any]]
StatusState = Literal["loading", "success", "failure"]
Property = DisplayProperty | Mapping[str, Any]

#: Milliseconds left below which an execution yields at each point of a task, unless the
#: server's `autoYieldConfig` says otherwise (trigger.dev's Node SDK's).
DEFAULT_AUTO_YIELD = AutoYieldConfig(
    start_task_threshold=500,
    before_execute_task_threshold=1500,
    before_complete_task_threshold=500,
    after_complete_task_threshold=500,
)

#: The task whose body is running, per IO: a task started inside it is its subtask.
_current_task: ContextVar[tuple[IO, str] | None] = ContextVar("kongflow_sdk_task", default=None)


def describe_error(error: BaseException) -> ErrorWithStack:
    return ErrorWithStack(
        message=str(error),
        name=type(error).__name__,
        stack="".join(traceback.format_exception(error)),
    )


def _iso(value: datetime) -> str:
    """A time as JavaScript's toISOString writes it (UTC, milliseconds, Z)."""
    if value.tzinfo is None:
        value = value.astimezone()  # naive: local time, as JavaScript reads it
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    """A value for the wire; what JSON cannot write is shown as text (params are for display)."""
    return to_jsonable_python(value, by_alias=True, inf_nan_mode="null", fallback=repr)


def _property(value: Property) -> DisplayProperty:
    return value if isinstance(value, DisplayProperty) else DisplayProperty.model_validate(value)


class TaskError(Exception):
    """A task failed in an earlier execution: the server has it ERRORED (with the error it
    failed with as its output), so it is not run again. Raised by the `run_task` that finds it;
    left uncaught, the run fails with that task's error."""

    def __init__(self, task: ServerTask) -> None:
        self.task = task
        self.error = self._error(task.output)
        super().__init__(self.error.message)

    @staticmethod
    def _error(output: Any) -> ErrorWithStack:
        try:
            return ErrorWithStack.model_validate(output)
        except ValidationError:
            message = json.dumps(output) if output else "Task errored"
            return ErrorWithStack(message=message)


@dataclass
class _TaskOptions:
    """What run_task sends about a task (trigger.dev's RunTaskOptions)."""

    name: str | None = None
    icon: str | None = None
    description: str | None = None
    params: Any = None
    properties: Sequence[Property] | None = None
    style: Mapping[str, str] | None = None
    retry: RetryOptions | None = None
    noop: bool = False
    delay_until: datetime | None = None
    display_key: str | None = None
    operation: str | None = None

    def body(self, key: str, display: str | None, parent_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"idempotencyKey": key}
        display = self.display_key if self.display_key is not None else display
        if display is not None:
            body["displayKey"] = display
        body["name"] = self.name or "Task"
        body["noop"] = self.noop
        for wire_name, value in (
            ("icon", self.icon),
            ("description", self.description),
            ("operation", self.operation),
            ("parentId", parent_id),
        ):
            if value is not None:
                body[wire_name] = value
        if self.params is not None:
            body["params"] = _jsonable(self.params)
        if self.properties is not None:
            body["properties"] = [_property(p).wire() for p in self.properties]
        if self.style is not None:
            body["style"] = dict(self.style)
        if self.delay_until is not None:
            body["delayUntil"] = _iso(self.delay_until)
        if self.retry is not None:
            body["retry"] = self.retry.wire()
        return body


async def _no_body(task: ServerTask) -> None:
    return None


_LEVELS = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "ERROR",
}


@dataclass(eq=False)
class LogEntry:
    """A line `io.logger` logged: written to Python's logging at once, and recorded in the run
    (a no-op "log" task) by the next io call, when the job ends, or now if awaited."""

    io: IO
    level: str
    message: str
    params: Any
    parent_id: str | None
    recorded: asyncio.Event = field(default_factory=asyncio.Event)

    def __await__(self) -> Generator[Any, None, None]:
        return self.io._record_logs(until=self).__await__()


class LogOptions(TypedDict, total=False):
    """What Python's logging methods take besides the message."""

    exc_info: Any
    stack_info: bool
    stacklevel: int
    extra: Mapping[str, object] | None


class IOLogger:
    """`io.logger`: Python logging (logger `kongflow.sdk`, with `run_id` and `job_id` on every
    record) that also records each line in the run, as trigger.dev's io.logger does. The
    methods need not be awaited; `extra` (JSON-able) is recorded as the line's params."""

    def __init__(self, io: IO, logger: logging.Logger) -> None:
        self._io = io
        self.logger = logger
        self.extra = {"run_id": io.run_id, "job_id": io.job_id}

    def _log(
        self, level: int, msg: object, args: tuple[object, ...], options: LogOptions
    ) -> LogEntry:
        extra = options.get("extra")
        exc_info = options.get("exc_info")
        self.logger.log(
            level,
            msg,
            *args,
            exc_info=exc_info,
            stack_info=options.get("stack_info", False),
            stacklevel=options.get("stacklevel", 1) + 2,
            extra={**(extra or {}), **self.extra},
        )
        return self._io._log_task(_LEVELS[level], _message(msg, args), extra, exc_info)

    def debug(self, msg: object, *args: object, **options: Unpack[LogOptions]) -> LogEntry:
        return self._log(logging.DEBUG, msg, args, options)

    def info(self, msg: object, *args: object, **options: Unpack[LogOptions]) -> LogEntry:
        return self._log(logging.INFO, msg, args, options)

    def warning(self, msg: object, *args: object, **options: Unpack[LogOptions]) -> LogEntry:
        return self._log(logging.WARNING, msg, args, options)

    warn = warning

    def error(self, msg: object, *args: object, **options: Unpack[LogOptions]) -> LogEntry:
        return self._log(logging.ERROR, msg, args, options)

    def exception(self, msg: object, *args: object, **options: Unpack[LogOptions]) -> LogEntry:
        return self._log(logging.ERROR, msg, args, {"exc_info": True, **options})

    def critical(self, msg: object, *args: object, **options: Unpack[LogOptions]) -> LogEntry:
        return self._log(logging.CRITICAL, msg, args, options)


def _message(msg: object, args: tuple[object, ...]) -> str:
    """The line as logging formats it (LogRecord.getMessage)."""
    text = str(msg)
    if not args:
        return text
    try:
        return text % args
    except (TypeError, ValueError):
        return text


def _exception(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1] if isinstance(exc_info[1], BaseException) else None
    if exc_info:
        return sys.exc_info()[1]
    return None


class Status:
    """A run status (trigger.dev's TriggerStatus), made by `io.create_status`: a label, a state
    and data that the run's readers see, updated as the run goes."""

    def __init__(self, io: IO, id: str) -> None:
        self._io = io
        self.id = id

    async def update(
        self,
        key: CacheKey,
        *,
        label: str | None = None,
        state: StatusState | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Update the status (a task with cache key `key`); returns the status record
        (`key`, `label`, `state`, `data`, `history`)."""
        update: dict[str, Any] = {}
        properties: list[DisplayProperty] = []
        if label is not None:
            update["label"] = label
            properties.append(DisplayProperty(label="Label", text=label))
        if state is not None:
            update["state"] = state
            properties.append(DisplayProperty(label="State", text=state))
        if data is not None:
            update["data"] = _jsonable(data)

        async def body(task: ServerTask) -> dict[str, Any]:
            return await self._io.api.update_status(self._io.run_id, self.id, update)

        record: dict[str, Any] = await self._io.run_task(
            key,
            body,
            name=label or "Status update",
            icon="bell",
            params=update,
            properties=properties,
        )
        return record


class IO:
    """The run's durable toolbox (trigger.dev v2's `io`).

    A job may run in several executions: it is executed again after an `io.wait`, when a failed
    task is retried, after a yield, and whenever the endpoint is called anew. Each step that
    must not be redone is a task, `await io.run_task(key, fn)`: its output is recorded by the
    jobs service, and in the next executions `run_task` returns it without running `fn`. The
    code around tasks runs again in every execution, so it must take the same path (keep side
    effects and randomness inside tasks). Task keys are unique in a run; a task started inside
    another task's `fn` is its subtask (its key is unique under that parent).

    To stop an execution, io raises a `kongflow.sdk.flow.ControlFlow`: a BaseException, not an
    Exception, so that `except Exception` in a job never swallows a wait, a retry or a
    cancellation (what trigger.dev's Node SDK needs `io.try` for). Catching BaseException
    means re-raising ControlFlow. A task that failed in an earlier execution raises TaskError.

    `io.logger` logs with Python's logging at once and records each line in the run (a no-op
    task, skipped on replay); its methods return an awaitable that need not be awaited (the
    line is then recorded by the next io call, or when the job ends).

    Calls reach kongflow's API at the endpoint's `api_url` (KONGFLOW_API_URL, TRIGGER_API_URL)
    with the environment's API key. Without one, `io.logger` only logs locally and the other
    calls raise MissingApiUrl. A call the API keeps failing raises ApiError ("Failed to run
    task"), which fails the run unless caught."""

    def __init__(
        self,
        ctx: Context,
        api: ApiClient | None = None,
        *,
        body: RunJobBody | None = None,
        server_version: str | None = None,
        time_origin: float | None = None,
    ) -> None:
        self.run_id = ctx.run_id
        self.job_id = ctx.job_id
        self.api = api or ApiClient(None, "")
        self.server_version = server_version
        self.logger = IOLogger(self, logging.getLogger(LOGGER_NAME))
        self.store = RunStores(self, ctx.job_id, ctx.run_id)
        self._cache: dict[str, CachedTask] = {}
        self._cursor: str | None = None
        self._noops = BloomFilter()
        self._yielded: frozenset[str] = frozenset()
        self._limit_ms: float | None = None
        self._thresholds = DEFAULT_AUTO_YIELD
        if body is not None:
            self._load(body)
        self._origin = time.monotonic() if time_origin is None else time_origin
        self._visited: set[str] = set()
        self._pending_logs: deque[LogEntry] = deque()
        self._failures: list[tuple[BaseException, ServerTask]] = []

    def _load(self, body: RunJobBody) -> None:
        for task in body.tasks or []:
            self._cache[task.idempotency_key] = task
        self._cursor = body.cached_task_cursor
        if body.noop_tasks_set:
            try:
                self._noops = BloomFilter.deserialize(body.noop_tasks_set, NOOP_TASK_SET_SIZE)
            except ValueError:
                _internal.warning("run %s: the noop task set is not base64; ignored", self.run_id)
        self._yielded = frozenset(body.yielded_executions or ())
        self._limit_ms = body.run_chunk_execution_limit
        if body.auto_yield_config is not None:
            self._thresholds = body.auto_yield_config

    # -- tasks --------------------------------------------------------------------------------

    async def run_task(
        self,
        key: CacheKey,
        fn: TaskBody,
        *,
        name: str | None = None,
        icon: str | None = None,
        description: str | None = None,
        params: Any = None,
        properties: Sequence[Property] | None = None,
        style: Mapping[str, str] | None = None,
        retry: RetryOptions | None = None,
        noop: bool = False,
        delay_until: datetime | None = None,
        display_key: str | None = None,
        operation: str | None = None,
    ) -> Any:
        """Run `await fn(task)` once in the run's life, and return its output as JSON reads
        it back (a model becomes a dict), which a later execution gets without running `fn`.

        `key` (a str or a list of parts) names the task, uniquely in the run (or in its parent
        task). If `fn` raises, the task is retried in a later execution as `retry` says
        (RetryOptions; none by default), else it fails and the error is raised again. `name`,
        `icon`, `description`, `params`, `properties` and `style` describe the task in the
        run's log. A `noop` task has no body to run; `delay_until` makes the run wait for
        that time (io.wait)."""
        options = _TaskOptions(
            name=name,
            icon=icon,
            description=description,
            params=params,
            properties=properties,
            style=style,
            retry=retry,
            noop=noop,
            delay_until=delay_until,
            display_key=display_key,
            operation=operation,
        )
        return await self._run_task(key, fn, options, parent_id=self._parent_id())

    def _parent_id(self) -> str | None:
        current = _current_task.get()
        return current[1] if current is not None and current[0] is self else None

    async def _run_task(
        self,
        key: CacheKey,
        fn: TaskBody,
        options: _TaskOptions,
        *,
        parent_id: str | None,
        unique: bool = True,
        flush: bool = True,
    ) -> Any:
        if not (options.noop and parent_id is not None):
            self._detect_auto_yield("start_task", self._thresholds.start_task_threshold)
        if flush:
            await self._record_logs()
        ikey = idempotency_key(self.run_id, parent_id, key)
        if ikey in self._visited:
            if not unique:
                return None
            raise ValueError(
                f'Task with cacheKey "{display_key(key)}" has already been executed in this '
                "run. Each task must have a unique cacheKey."
            )
        self._visited.add(ikey)
        cached = self._cache.get(ikey)
        if cached is not None and cached.status == "COMPLETED":
            return cached.output
        if options.noop and ikey in self._noops:
            return None
        self.api.check()
        body = options.body(ikey, key if isinstance(key, str) else None, parent_id)
        try:
            answer = await self.api.run_task(self.run_id, body, self._cursor)
        except ApiError as exc:
            raise ApiError("Failed to run task") from exc
        task = answer.task
        if task.force_yield:
            self._force_yield("after_run_task")
        if answer.cached is not None:
            self._cursor = answer.cached.cursor
            for loaded in answer.cached.tasks:
                self._cache.setdefault(loaded.idempotency_key, loaded)
        if task.status == "CANCELED":
            raise CanceledWithTask(task)
        if task.status == "COMPLETED":
            if task.noop:
                self._noops.add(task.idempotency_key)
            else:
                self._cache[task.idempotency_key] = CachedTask(
                    id=task.id,
                    idempotency_key=task.idempotency_key,
                    status=task.status,
                    noop=task.noop,
                    output=task.output,
                    parent_id=task.parent_id,
                )
            return task.output
        if task.status == "ERRORED":
            raise TaskError(task)
        self._detect_auto_yield(
            "before_execute_task", self._thresholds.before_execute_task_threshold
        )
        if task.status == "WAITING" or (task.status == "RUNNING" and task.operation):
            raise ResumeWithTask(task)
        return await self._execute(task, fn, options)

    async def _execute(self, task: ServerTask, fn: TaskBody, options: _TaskOptions) -> Any:
        """Run a task's body and complete (or fail, or retry) the task."""
        token = _current_task.set((self, task.id))
        try:
            output = json_text(await fn(task))
        except Exception as error:
            _current_task.reset(token)
            await self._task_failed(task, error, options)
        except BaseException:
            _current_task.reset(token)
            raise
        _current_task.reset(token)
        await self._record_logs()
        self._detect_auto_yield(
            "before_complete_task",
            self._thresholds.before_complete_task_threshold,
            task,
            output,
        )
        try:
            completed = await self.api.complete_task(
                self.run_id, task.id, output, task.output_properties
            )
        except ApiError as exc:
            raise ApiError("Failed to complete task") from exc
        if completed.force_yield:
            self._force_yield("after_complete_task")
        if completed.status == "CANCELED":
            raise CanceledWithTask(completed)
        self._detect_auto_yield(
            "after_complete_task", self._thresholds.after_complete_task_threshold
        )
        return json.loads(output)

    async def _task_failed(
        self, task: ServerTask, error: Exception, options: _TaskOptions
    ) -> NoReturn:
        await self._record_logs(quiet=True)
        if isinstance(error, TaskError):  # a subtask failed earlier: so does this task
            await self._fail(task, error.error.wire())
            raise error
        described = describe_error(error)
        if options.retry is not None:
            retry_at = calculate_retry_at(options.retry, task.attempts - 1)
            if retry_at is not None:
                raise RetryWithTask(task, described, retry_at) from error
        failed = await self._fail(task, described.wire())
        self._failures.append((error, failed))
        raise error

    async def _fail(self, task: ServerTask, error: dict[str, Any]) -> ServerTask:
        try:
            return await self.api.fail_task(self.run_id, task.id, error)
        except ApiError as exc:
            raise ApiError("Failed to fail task") from exc

    def failed_task(self, error: BaseException) -> ServerTask | None:
        """The task `error` failed (if it made one fail), the outermost first."""
        for failure, task in reversed(self._failures):
            if failure is error:
                return task
        return None

    # -- auto-yield ---------------------------------------------------------------------------

    def _elapsed_ms(self) -> float:
        return (time.monotonic() - self._origin) * 1000

    def _remaining_ms(self) -> float | None:
        return None if self._limit_ms is None else self._limit_ms - self._elapsed_ms()

    def _detect_auto_yield(
        self,
        location: str,
        threshold: float,
        task: ServerTask | None = None,
        output: str | None = None,
    ) -> None:
        remaining = self._remaining_ms()
        if remaining is not None and remaining < threshold:
            self._yield_now(location, remaining, task, output)

    def _force_yield(self, location: str) -> None:
        remaining = self._remaining_ms()
        if remaining is not None:
            self._yield_now(location, remaining, None, None)

    def _yield_now(
        self, location: str, remaining: float, task: ServerTask | None, output: str | None
    ) -> NoReturn:
        if task is not None and output is not None:
            metadata = AutoYieldMetadata(
                location=location,
                time_remaining=remaining,
                time_elapsed=self._elapsed_ms(),
                limit=self._limit_ms,
            )
            raise AutoYieldWithCompletedTask(
                task.id, list(task.output_properties or []), output, metadata
            )
        raise AutoYield(location, remaining, self._elapsed_ms(), self._limit_ms)

    # -- what jobs call -----------------------------------------------------------------------

    async def wait(self, key: CacheKey, seconds: float) -> None:
        """Pause the run for `seconds` (resumed in a new execution, however long the wait)."""
        await self.run_task(
            key,
            _no_body,
            name="wait",
            icon="clock",
            params={"seconds": seconds},
            noop=True,
            delay_until=datetime.now(UTC) + timedelta(seconds=seconds),
            style={"style": "minimal"},
        )

    async def send_event(
        self,
        key: CacheKey,
        name: str,
        payload: Any = None,
        *,
        id: str | None = None,
        context: Any = None,
        timestamp: datetime | None = None,
        source: str | None = None,
        deliver_at: datetime | None = None,
        deliver_after: int | None = None,
    ) -> ApiEventLog:
        """Send an event (once, as a task), which runs the jobs it triggers; `deliver_at` or
        `deliver_after` (seconds) delays its delivery."""
        event: dict[str, Any] = {"name": name, "payload": _jsonable(payload)}
        if id is not None:
            event["id"] = id
        if context is not None:
            event["context"] = _jsonable(context)
        if timestamp is not None:
            event["timestamp"] = _iso(timestamp)
        if source is not None:
            event["source"] = source
        options: dict[str, Any] = {}
        properties = [DisplayProperty(label="name", text=name)]
        if id is not None:
            properties.append(DisplayProperty(label="ID", text=id))
        if deliver_after is not None:
            options["deliverAfter"] = deliver_after
            properties.append(DisplayProperty(label="Deliver After", text=f"{deliver_after}s"))
        if deliver_at is not None:
            options["deliverAt"] = _iso(deliver_at)
            properties.append(DisplayProperty(label="Deliver At", text=options["deliverAt"]))
        params: dict[str, Any] = {"event": event}
        if options:
            params["options"] = options

        async def body(task: ServerTask) -> dict[str, Any]:
            return await self.api.send_event(event, options)

        output = await self.run_task(
            key, body, name="Send Event", params=params, icon="send", properties=properties
        )
        return ApiEventLog.model_validate(output)

    async def create_status(
        self,
        key: CacheKey,
        *,
        label: str,
        state: StatusState | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Status:
        """A run status, set now (a task with cache key `key`); `update` it as the run goes.
        Its id is the key (parts joined with "-")."""
        status = Status(self, display_key(key))
        await status.update(key, label=label, state=state, data=data)
        return status

    def yield_(self, key: str) -> None:
        """End this execution here and continue in a new one at once (io.yield), unless this
        run already yielded at `key`. Needs a server that supports it; otherwise nothing
        happens."""
        if self.server_version is None or self.server_version < LAZY_LOADED_CACHED_TASKS:
            _internal.warning(
                "io.yield_() is not supported by this server (version %s)", self.server_version
            )
            return
        if key in self._yielded:
            return
        raise YieldExecution(key)

    # -- the log ------------------------------------------------------------------------------

    def _log_task(
        self, level: str, message: str, extra: Mapping[str, object] | None, exc_info: Any
    ) -> LogEntry:
        params: Any = _jsonable(dict(extra)) if extra else None
        error = _exception(exc_info)
        if error is not None:
            params = {**(params or {}), "error": describe_error(error).wire()}
        entry = LogEntry(self, level, message, params, self._parent_id())
        if self.api.api_url is None:
            entry.recorded.set()  # nowhere to record it: logged locally only
        else:
            self._pending_logs.append(entry)
        return entry

    async def _record_logs(self, *, until: LogEntry | None = None, quiet: bool = False) -> None:
        """Record the lines logged so far (up to `until`), in order, as no-op tasks; `quiet`
        logs a failure instead of raising it (control flow still goes through)."""
        while self._pending_logs and not (until is not None and until.recorded.is_set()):
            entry = self._pending_logs.popleft()
            try:
                await self._run_task(
                    [entry.message, entry.level],
                    _no_body,
                    _TaskOptions(
                        name="log",
                        icon="log",
                        description=entry.message,
                        params=entry.params,
                        properties=[DisplayProperty(label="Level", text=entry.level)],
                        style={"style": "minimal", "variant": entry.level.lower()},
                        noop=True,
                    ),
                    parent_id=entry.parent_id,
                    unique=False,
                    flush=False,
                )
            except Exception:
                if not quiet:
                    raise
                _internal.warning("run %s: a log line was not recorded", self.run_id, exc_info=True)
            finally:
                entry.recorded.set()
        if until is not None and not until.recorded.is_set():
            await until.recorded.wait()  # being recorded by a concurrent flush

    async def flush(self, *, quiet: bool = False) -> None:
        """Record the log lines not yet recorded (the endpoint does it when the job ends);
        `quiet` logs a failure to record them instead of raising it."""
        await self._record_logs(quiet=quiet)
