"""Events: stored as sent (one by one or in bulk), then delivered (at `deliverAt`, or now) by
`deliverEvent` unless cancelled first; it starts `events.invokeDispatcher` for every job whose
event specification matches, which creates the job's run. A retried delivery or dispatch never
starts a run twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.rows import class_row

from kongflow.engine.tasks import RunningJob
from kongflow.service.catalog import DeliverEvent, InvokeDispatcher
from kongflow.service.database import Connection, Database
from kongflow.service.environments import Environment
from kongflow.service.rows import EventRecord, JobVersion, Json
from kongflow.service.runs import NewEvent, RunService
from kongflow.typed import WorkerQueue
from kongflow.typed.queue import Transaction
from kongflow.typed.task import TypedHandler


class EventService:
    def __init__(self, queue: WorkerQueue, database: Database, runs: RunService) -> None:
        self.queue = queue
        self.runs = runs
        self._sql = database.sql

    def handlers(self) -> dict[str, TypedHandler]:
        return {
            DeliverEvent.task: self.deliver_event,
            InvokeDispatcher.task: self.invoke_dispatcher,
        }

    async def send_event(self, environment: Environment, event: NewEvent) -> EventRecord:
        """Store the event and schedule its delivery. Sending an event id again returns the
        event stored first and schedules nothing (trigger.dev's rule)."""
        async with self.queue.transaction() as tx:
            return await self._store(tx, environment, event)

    async def send_events(
        self, environment: Environment, events: Sequence[NewEvent]
    ) -> list[EventRecord]:
        """`send_event` for each, all or none (trigger.dev's sendEvents)."""
        async with self.queue.transaction() as tx:
            return [await self._store(tx, environment, event) for event in events]

    async def cancel_event(self, environment: Environment, event_id: str) -> EventRecord | None:
        """Stop an event that is not delivered yet (its delivery is removed); a delivered or
        cancelled one is returned as it is. None if this environment has no such event."""
        async with (
            self.queue.transaction() as tx,
            tx.conn.cursor(row_factory=class_row(EventRecord)) as cur,
        ):
            await cur.execute(self._sql.lock_event_by_event_id, (environment.id, event_id))
            event = await cur.fetchone()
            if event is None or event.delivered_at is not None or event.cancelled_at is not None:
                return event
            await cur.execute(self._sql.cancel_event, (event.id,))
            cancelled = await cur.fetchone()
            await tx.dequeue(delivery_key(event.id))
        return cancelled

    async def _store(
        self, tx: Transaction, environment: Environment, event: NewEvent
    ) -> EventRecord:
        stored = await self.runs.store_event(tx.conn, environment, event)
        if stored is None:
            async with tx.conn.cursor(row_factory=class_row(EventRecord)) as cur:
                await cur.execute(self._sql.event_by_event_id, (environment.id, event.id))
                existing = await cur.fetchone()
            assert existing is not None
            return existing
        await tx.enqueue(
            DeliverEvent(id=stored.id), run_at=stored.deliver_at, job_key=delivery_key(stored.id)
        )
        return stored

    async def deliver_event(self, payload: DeliverEvent, job: RunningJob) -> None:
        async with self.queue.transaction() as tx:
            event = await self._lock_event(tx.conn, payload.id)
            if event is None or event.delivered_at is not None or event.cancelled_at is not None:
                return
            async with tx.conn.cursor(row_factory=class_row(JobVersion)) as cur:
                await cur.execute(
                    self._sql.matching_versions, (event.environment_id, event.source, event.name)
                )
                versions = await cur.fetchall()
            for version in versions:
                if version.event_filter is None or filter_matches(
                    event.payload, version.event_filter
                ):
                    await tx.enqueue(
                        InvokeDispatcher(id=version.version_id, event_record_id=event.id)
                    )
            await tx.conn.execute(self._sql.mark_event_delivered, (payload.id,))

    async def invoke_dispatcher(self, payload: InvokeDispatcher, job: RunningJob) -> None:
        """Start a run of job version `payload.id` for the event, unless one exists."""
        async with self.queue.transaction() as tx:
            event = await self._lock_event(tx.conn, payload.event_record_id)
            async with tx.conn.cursor(row_factory=class_row(JobVersion)) as cur:
                await cur.execute(self._sql.version_by_id, (payload.id,))
                version = await cur.fetchone()
            if event is None or version is None:
                return
            cur = await tx.conn.execute(self._sql.run_for_event, (event.id, version.version_id))
            if await cur.fetchone() is not None:
                return
            async with tx.conn.cursor(row_factory=class_row(Environment)) as environments:
                await environments.execute(self._sql.environment_by_id, (event.environment_id,))
                environment = await environments.fetchone()
            assert environment is not None
            await self.runs.create_run(tx, environment, version, event.id, is_test=event.is_test)

    async def _lock_event(self, conn: Connection, event_record_id: str) -> EventRecord | None:
        async with conn.cursor(row_factory=class_row(EventRecord)) as cur:
            await cur.execute(self._sql.lock_event, (event_record_id,))
            return await cur.fetchone()


def filter_matches(payload: Json, pattern: dict[str, Any]) -> bool:
    """trigger.dev's EventFilter: every key of the pattern must match. A list lists what is
    accepted (values, or content filters such as `{"$startsWith": "a"}`; empty: anything); a
    nested object matches a nested object, or any item of a list of them."""
    if not isinstance(payload, dict):
        return not pattern
    for key, expected in pattern.items():
        actual = payload.get(key)
        if isinstance(expected, list):
            if expected and not any(_accepts(item, key in payload, actual) for item in expected):
                return False
        elif isinstance(expected, dict):
            items = actual if isinstance(actual, list) else [actual]
            if not any(filter_matches(item, expected) for item in items):
                return False
    return True


def _accepts(item: Any, present: bool, actual: Any) -> bool:
    try:
        return _content_matches(item, present, actual)
    except (TypeError, IndexError, AttributeError):  # a malformed operand matches nothing
        return False


def _content_matches(item: Any, present: bool, actual: Any) -> bool:
    if not isinstance(item, dict):
        return type(item) is type(actual) and item == actual  # True is not 1
    if len(item) != 1:
        return False
    ((operator, operand),) = item.items()
    text = isinstance(actual, str)
    number = isinstance(actual, int | float) and not isinstance(actual, bool)
    match operator:
        case "$startsWith":
            return text and actual.startswith(operand)
        case "$endsWith":
            return text and actual.endswith(operand)
        case "$ignoreCaseEquals":
            return text and isinstance(operand, str) and actual.casefold() == operand.casefold()
        case "$exists":
            return present is bool(operand)
        case "$isNull":
            return (present and actual is None) is bool(operand)
        case "$anythingBut":
            excluded = operand if isinstance(operand, list) else [operand]
            return present and actual not in excluded
        case "$gt":
            return number and actual > operand
        case "$gte":
            return number and actual >= operand
        case "$lt":
            return number and actual < operand
        case "$lte":
            return number and actual <= operand
        case "$between":
            return number and operand[0] <= actual <= operand[1]
        case "$includes":
            return isinstance(actual, list) and operand in actual
        case "$not":
            return bool(actual != operand)
    return False  # an operator this version does not know never matches


def delivery_key(event_record_id: str) -> str:
    """The job key of an event's delivery: one per event."""
    return f"deliverEvent:{event_record_id}"
