"""Every client operation as a `Statement`: its SQL, its checked parameters, and how its rows
become the answer. `Client` (async) and `SyncClient` run the same statements, so both check
their input and answer alike; only the way they reach the database differs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Generic, TypeVar

from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from kongflow.engine.errors import InvalidJobError
from kongflow.engine.models import (
    MAX_KEY_LENGTH,
    MAX_NAME_LENGTH,
    Job,
    JobKeyMode,
    JobSpec,
    check_int,
    check_job_key_mode,
    check_optional_text,
    check_payload_text,
    check_run_at,
    encode_payload,
    may_hold_bad_text,
)
from kongflow.engine.rates import RateLimit, rate_limits_document
from kongflow.engine.sql import engine_sql
from kongflow.engine.workflows import Workflow, WorkflowRun

T = TypeVar("T")
EnqueuedCounts = Iterable[tuple[str, str | None, int]]
"""(task, queue, jobs) for the enqueued-jobs metric."""


@dataclass(frozen=True, slots=True)
class Statement(Generic[T]):
    """One operation: `query` with `params`, its rows read with `row_factory` and turned into
    the answer by `answer`; `enqueued` counts the jobs its rows enqueued, for metrics. A
    statement with no query (nothing to do, such as an empty batch) answers from no rows."""

    query: str | None
    params: Any
    answer: Callable[[list[Any]], T]
    row_factory: Any = tuple_row
    enqueued: Callable[[list[Any]], EnqueuedCounts] | None = None


def _as_is(rows: list[Any]) -> list[Any]:
    return rows


def _first(rows: list[Job]) -> Job | None:
    return rows[0] if rows else None


def _job(rows: list[Job]) -> Job:
    (job,) = rows
    return job


def _ids_of(rows: list[Any]) -> list[int]:
    ((ids,),) = rows
    return list(ids)


def _nothing(rows: list[Any]) -> None:
    return None


def _counted(rows: list[Any]) -> int:
    return sum(count for _, _, count in rows)


def _jobs_enqueued(rows: list[Job]) -> EnqueuedCounts:
    return ((job.task_identifier, job.queue_name, 1) for job in rows)


def _counts_enqueued(rows: list[Any]) -> EnqueuedCounts:
    return rows


class Statements:
    """The statements of one schema."""

    def __init__(self, schema: str) -> None:
        self.sql = engine_sql(schema)

    def _jobs(self, query: str, params: Any, answer: Callable[[list[Job]], T]) -> Statement[T]:
        return Statement(query, params, answer, Job.row_factory)

    def add_job(self, params: dict[str, Any]) -> Statement[Job]:
        """One job, its parameters from `add_job_params`."""
        return Statement(self.sql.add_job, params, _job, Job.row_factory, _jobs_enqueued)

    def add_job_params(
        self,
        identifier: str,
        payload: Any,
        queue_name: str | None,
        run_at: datetime | None,
        max_attempts: int | None,
        job_key: str | None,
        job_key_mode: JobKeyMode,
        priority: int | None,
        flags: Sequence[str] | None,
        headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        """The checked parameters of `sql.add_job_call` (and of `add_job`)."""
        params = JobSpec(
            identifier, payload, queue_name, run_at, max_attempts, job_key, priority, flags
        ).validated()
        params["job_key_mode"] = check_job_key_mode(job_key_mode)
        params["headers"] = Jsonb(dict(headers)) if headers else None
        return params

    def add_jobs(self, specs: Iterable[JobSpec], preserve_run_at: bool) -> Statement[list[Job]]:
        document = bulk_document(specs)
        query = self.sql.add_jobs if document is not None else None
        params = (document, preserve_run_at)
        return Statement(query, params, _as_is, Job.row_factory, _jobs_enqueued)

    def add_jobs_counted(self, specs: Iterable[JobSpec], preserve_run_at: bool) -> Statement[int]:
        """`add_jobs` answering only how many jobs were added or updated."""
        document = bulk_document(specs)
        query = self.sql.add_jobs_counted if document is not None else None
        params = (document, preserve_run_at)
        return Statement(query, params, _counted, tuple_row, _counts_enqueued)

    def remove_job(self, job_key: str) -> Statement[Job | None]:
        check_optional_text(job_key, "job_key", "", MAX_KEY_LENGTH)
        return self._jobs(self.sql.remove_job, (job_key,), _first)

    def complete_jobs(self, job_ids: Sequence[int]) -> Statement[list[Job]]:
        return self._jobs(self.sql.complete_jobs, (checked_ids(job_ids),), _as_is)

    def permanently_fail_jobs(
        self, job_ids: Sequence[int], message: str | None
    ) -> Statement[list[Job]]:
        params = (checked_ids(job_ids), message)
        return self._jobs(self.sql.permanently_fail_jobs, params, _as_is)

    def reschedule_jobs(
        self,
        job_ids: Sequence[int],
        *,
        run_at: datetime | None,
        priority: int | None,
        attempts: int | None,
        max_attempts: int | None,
    ) -> Statement[list[Job]]:
        params = {
            "ids": checked_ids(job_ids),
            "run_at": check_run_at(run_at),
            "priority": check_int(priority, "priority", "", -(2**31), 2**31 - 1),
            "attempts": check_int(attempts, "attempts", "", 0, 32767),
            "max_attempts": check_int(max_attempts, "max_attempts", "", 1, 32767),
        }
        return self._jobs(self.sql.reschedule_jobs, params, _as_is)

    def get_job(self, job_id: int) -> Statement[Job | None]:
        return self._jobs(self.sql.get_job, (job_id,), _first)

    def cancel_job(self, job_id: int) -> Statement[Job | None]:
        return self._jobs(self.sql.cancel_job, (job_id,), _first)

    def retry_job(self, job_id: int) -> Statement[Job | None]:
        def waiting(rows: list[Job]) -> Job | None:
            job = _first(rows)
            return job if job is not None and job.state != "running" else None

        return self._jobs(self.sql.retry_job, (job_id,), waiting)

    def delete_jobs(self, job_ids: Sequence[int]) -> Statement[list[int]]:
        return Statement(self.sql.delete_jobs, (checked_ids(job_ids),), _ids_of)

    def list_jobs(
        self, *, state: str | None, task: str | None, queue: str | None, limit: int
    ) -> Statement[list[Job]]:
        params = {"state": state, "task": task, "queue": queue, "limit": limit}
        return self._jobs(self.sql.list_jobs, params, _as_is)

    def queue_stats(self) -> Statement[list[dict[str, Any]]]:
        return Statement(self.sql.queue_stats, None, _as_is, dict_row)

    def force_unlock_workers(self, worker_ids: Sequence[str]) -> Statement[list[int]]:
        return Statement(self.sql.force_unlock_workers, (list(worker_ids),), _ids_of)

    def set_queue_limits(self, limits: Mapping[str, int]) -> Statement[None]:
        for name, limit in limits.items():
            check_int(limit, f"limits[{name!r}]", "", 1, 2**31 - 1)
        return Statement(self.sql.set_queue_limits, (json.dumps(dict(limits)),), _nothing)

    def set_rate_limits(self, limits: Mapping[str, RateLimit | str | None]) -> Statement[None]:
        document = json.dumps(rate_limits_document(limits))
        return Statement(self.sql.set_rate_limits, (document,), _nothing)

    def pause_queue(self, queue_name: str) -> Statement[None]:
        check_optional_text(queue_name, "queue_name", "", MAX_NAME_LENGTH)
        return Statement(self.sql.pause_queue, (queue_name,), _nothing)

    def resume_queue(self, queue_name: str) -> Statement[None]:
        check_optional_text(queue_name, "queue_name", "", MAX_NAME_LENGTH)
        return Statement(self.sql.resume_queue, (queue_name,), _nothing)

    def queue_known(self, queue_name: str) -> Statement[bool]:
        check_optional_text(queue_name, "queue_name", "", MAX_NAME_LENGTH)
        return Statement(self.sql.queue_known, {"name": queue_name}, _flag)

    def register_wait(self, job_id: int) -> Statement[int]:
        return Statement(self.sql.register_wait, (checked_ids([job_id])[0],), _scalar)

    def unregister_wait(self, wait_id: int) -> Statement[None]:
        return Statement(self.sql.unregister_wait, (wait_id,), _nothing)

    def add_workflow(self, workflow: Workflow) -> Statement[WorkflowRun]:
        document = json.dumps(workflow.document(), separators=(",", ":"), allow_nan=False)
        return Statement(self.sql.add_workflow, (document,), _workflow_run, tuple_row)

    def workflow_jobs(self, workflow_id: int) -> Statement[dict[str, Job]]:
        def jobs(rows: list[Any]) -> dict[str, Job]:
            return _workflow_run(rows).jobs if rows else {}

        return Statement(self.sql.workflow_jobs, (workflow_id,), jobs, tuple_row)

    def dependency_results(self, job_id: int) -> Statement[dict[str, Any]]:
        return Statement(self.sql.dependency_results, (job_id,), dict)

    def unhandled_tasks(self) -> Statement[list[dict[str, Any]]]:
        return Statement(self.sql.unhandled_tasks, None, _as_is, dict_row)


def _workflow_run(rows: list[Any]) -> WorkflowRun:
    """Rows of (workflow id, step, the job's columns...) as a WorkflowRun."""
    names = [column.name for column in fields(Job)]  # the view's columns, in order
    jobs = {row[1]: Job.from_values(names, row[2:]) for row in rows}
    return WorkflowRun(rows[0][0], jobs)


def _scalar(rows: list[Any]) -> Any:
    ((value,),) = rows
    return value


def _flag(rows: list[Any]) -> bool:
    ((known,),) = rows
    return bool(known)


def validated_specs(specs: Sequence[JobSpec], *, encode: bool) -> list[dict[str, Any]]:
    """Every spec checked; an error names the spec (`specs[3].priority`)."""
    try:
        return [spec.validated(encode=encode) for spec in specs]
    except (InvalidJobError, AttributeError):
        pass  # checked again one by one, to name the culprit (the rare path)
    for index, spec in enumerate(specs):
        if not isinstance(spec, JobSpec):
            raise TypeError(f"specs[{index}] must be a JobSpec, got {type(spec).__name__}")
        spec.validated(f"specs[{index}].", encode=encode)
    raise AssertionError("unreachable: a spec failed without a second failure")


def bulk_document(specs: Iterable[JobSpec]) -> str | None:
    """The specs, checked, as the JSON array `add_jobs` takes; None when there are none."""
    specs = list(specs)
    rows = validated_specs(specs, encode=False)
    if not rows:
        return None
    try:
        document = json.dumps(rows, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        for index, spec in enumerate(specs):  # name the culprit
            encode_payload(spec.payload, f"specs[{index}].")
        raise
    if may_hold_bad_text(document):  # the other fields were checked as they are
        for index, spec in enumerate(specs):
            check_payload_text(spec.payload, f"specs[{index}].")
    return document


def checked_ids(job_ids: Sequence[int]) -> list[int]:
    ids = list(job_ids)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TypeError(f"job ids must be integers, got {ids!r:.200}")
    return ids
