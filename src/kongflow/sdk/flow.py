"""How an execution ends early: `io` raises one of these inside a job (a task to wait for, a
retry, a cancelled run, a yield), and the endpoint answers EXECUTE_JOB with what it carries.

They derive from BaseException, not Exception, so that a job's own `except Exception` never
swallows one (trigger.dev's Node SDK needs `io.try` for that). A job that catches
BaseException must re-raise `ControlFlow`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from kongflow.protocol import (
    AutoYieldMetadata,
    DisplayProperty,
    ErrorWithStack,
    RunJobAutoYield,
    RunJobAutoYieldRateLimit,
    RunJobAutoYieldWithCompletedTask,
    RunJobCanceled,
    RunJobFlow,
    RunJobResumeWithTask,
    RunJobRetryWithTask,
    RunJobYield,
    TaskState,
)

if TYPE_CHECKING:
    from kongflow.sdk.api import ServerTask


class ControlFlow(BaseException):
    """The execution stops here; `answer()` is what the endpoint tells the jobs service."""

    def answer(self) -> RunJobFlow:
        raise NotImplementedError


def task_state(task: ServerTask) -> TaskState:
    """A task as an answer reports it: every field the server sent, camelCase."""
    return TaskState.model_validate(task.model_dump(mode="json", by_alias=True))


class ResumeWithTask(ControlFlow):
    """The task waits (io.wait's delay, an operation the server performs): the run is executed
    again once it is done."""

    def __init__(self, task: ServerTask) -> None:
        super().__init__(f"waiting on task {task.id}")
        self.task = task

    def answer(self) -> RunJobResumeWithTask:
        return RunJobResumeWithTask(status="RESUME_WITH_TASK", task=task_state(self.task))


class RetryWithTask(ControlFlow):
    """The task failed and is tried again at `retry_at`, in a new execution."""

    def __init__(self, task: ServerTask, error: ErrorWithStack, retry_at: datetime) -> None:
        super().__init__(f"retrying task {task.id} at {retry_at.isoformat()}")
        self.task = task
        self.error = error
        self.retry_at = retry_at

    def answer(self) -> RunJobRetryWithTask:
        return RunJobRetryWithTask(
            status="RETRY_WITH_TASK",
            task=task_state(self.task),
            error=self.error,
            retry_at=self.retry_at,
        )


class CanceledWithTask(ControlFlow):
    """The run was cancelled: the server answered a task request with a CANCELED task."""

    def __init__(self, task: ServerTask) -> None:
        super().__init__(f"the run was cancelled (task {task.id})")
        self.task = task

    def answer(self) -> RunJobCanceled:
        return RunJobCanceled(status="CANCELED", task=task_state(self.task))


class YieldExecution(ControlFlow):
    """io.yield_: the run is executed again at once, with `key` among its yielded executions."""

    def __init__(self, key: str) -> None:
        super().__init__(f"yielding at {key!r}")
        self.key = key

    def answer(self) -> RunJobYield:
        return RunJobYield(status="YIELD_EXECUTION", key=self.key)


class AutoYield(ControlFlow):
    """The execution is close to its time limit (`runChunkExecutionLimit`): it stops between
    tasks and the run is executed again."""

    def __init__(
        self, location: str, time_remaining: float, time_elapsed: float, limit: float | None
    ) -> None:
        super().__init__(f"auto-yield at {location} ({time_remaining:.0f} ms left)")
        self.location = location
        self.time_remaining = time_remaining
        self.time_elapsed = time_elapsed
        self.limit = limit

    def answer(self) -> RunJobAutoYield:
        return RunJobAutoYield(
            status="AUTO_YIELD_EXECUTION",
            location=self.location,
            time_remaining=self.time_remaining,
            time_elapsed=self.time_elapsed,
            limit=self.limit,
        )


class AutoYieldWithCompletedTask(ControlFlow):
    """Out of time just after a task's body ran: the server completes the task with `output`
    (a JSON string) and executes the run again."""

    def __init__(
        self,
        task_id: str,
        properties: list[DisplayProperty],
        output: str,
        metadata: AutoYieldMetadata,
    ) -> None:
        super().__init__(f"auto-yield with task {task_id} completed")
        self.task_id = task_id
        self.properties = properties
        self.output = output
        self.metadata = metadata

    def answer(self) -> RunJobAutoYieldWithCompletedTask:
        return RunJobAutoYieldWithCompletedTask(
            status="AUTO_YIELD_EXECUTION_WITH_COMPLETED_TASK",
            id=self.task_id,
            properties=self.properties,
            output=self.output,
            data=self.metadata,
        )


class RateLimited(ControlFlow):
    """The API answered 429 with `x-ratelimit-reset`: execute again at `reset` (epoch ms)."""

    def __init__(self, reset: float) -> None:
        super().__init__(f"rate limited until {reset}")
        self.reset = reset

    def answer(self) -> RunJobAutoYieldRateLimit:
        return RunJobAutoYieldRateLimit(status="AUTO_YIELD_RATE_LIMIT", reset=self.reset)
