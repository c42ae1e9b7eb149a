"""Telling subscribers how a run ended: `runFinished` -> `deliverRunSubscriptions` -> one
`deliverRunSubscription` per subscription, retried by the queue until it is delivered: a
webhook POST of the run notification signed with the environment's API key for a callback,
a RUN_NOTIFICATION request to the run's endpoint for its onSuccess / onFailure hooks.

Delivery is at least once, and in practice once: each subscription has one keyed delivery
job, and is marked delivered as soon as the subscriber takes it (only a failure to record that
after the subscriber answered would send it again)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Sequence

from psycopg.rows import class_row, scalar_row

from kongflow.engine.errors import KongflowError, PermanentFailure
from kongflow.engine.tasks import RunningJob
from kongflow.protocol import SIGNATURE_HEADER, iso_time
from kongflow.service.catalog import DeliverRunSubscription, DeliverRunSubscriptions, RunFinished
from kongflow.service.database import Connection, Database
from kongflow.service.endpoint_api import EndpointApi
from kongflow.service.outbound import KiB, Outbound, OutboundError, UrlRefused
from kongflow.service.rows import IoStatus, Json, RunContext, Subscription, Task
from kongflow.service.runs import TERMINAL
from kongflow.typed import WorkerQueue
from kongflow.typed.task import TypedHandler


class DeliveryFailed(KongflowError):
    """The subscriber did not take the notification; the queue retries it."""


def sign(api_key: str, body: bytes) -> str:
    """`X-Trigger-Signature-256`: hex HMAC-SHA256 of the body, keyed by the API key."""
    return hmac.new(api_key.encode(), body, hashlib.sha256).hexdigest()


_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def verify(api_key: str, body: bytes, signature: str | bytes | None) -> bool:
    """For receivers: does `signature` (the header's value) match this body? False, never an
    exception, for a missing, empty, non-ASCII or malformed one, so a receiver can pass the
    header straight from the request."""
    if isinstance(signature, bytes):
        try:
            signature = signature.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(signature, str) or not _HEX_SHA256.fullmatch(signature.strip()):
        return False
    return hmac.compare_digest(sign(api_key, body), signature.strip().lower())


def subscription_event(status: str) -> str:
    return "SUCCESS" if status == "SUCCESS" else "FAILURE"


class RunNotifications:
    def __init__(
        self,
        queue: WorkerQueue,
        database: Database,
        outbound: Outbound,
        timeout: float,
        *,
        answer_limit: int = 64 * KiB,
    ) -> None:
        self.queue = queue
        self.database = database
        self.outbound = outbound
        self.timeout = timeout
        self.answer_limit = answer_limit
        self._sql = database.sql

    def handlers(self) -> dict[str, TypedHandler]:
        return {
            RunFinished.task: self.run_finished,
            DeliverRunSubscriptions.task: self.deliver_subscriptions,
            DeliverRunSubscription.task: self.deliver_subscription,
        }

    async def run_finished(self, payload: RunFinished, job: RunningJob) -> None:
        """A run reached a terminal status: hand its subscribers, if any, to delivery."""
        async with self.queue.transaction() as tx:
            if await self._pending(tx.conn, payload.id):
                await tx.enqueue(DeliverRunSubscriptions(id=payload.id))

    async def deliver_subscriptions(
        self, payload: DeliverRunSubscriptions, job: RunningJob
    ) -> None:
        """One delivery job per pending subscription, each retried on its own."""
        async with self.queue.transaction() as tx:
            for subscription_id in await self._pending(tx.conn, payload.id):
                await tx.enqueue(
                    DeliverRunSubscription(id=subscription_id),
                    job_key=f"deliverRunSubscription:{subscription_id}",
                    job_key_mode="unsafe_dedupe",
                )

    async def _pending(self, conn: Connection, run_id: str) -> list[str]:
        """Undelivered subscriptions to the outcome of a finished run."""
        async with conn.cursor(row_factory=scalar_row) as cur:
            await cur.execute(self._sql.run_status, (run_id,))
            status: str | None = await cur.fetchone()
            if status is None or status not in TERMINAL:
                return []
            await cur.execute(self._sql.pending_subscriptions, (run_id, subscription_event(status)))
            pending: list[str] = await cur.fetchall()
        return pending

    async def deliver_subscription(self, payload: DeliverRunSubscription, job: RunningJob) -> None:
        """POST the notification, with no connection held while the subscriber answers."""
        async with self.database.connection() as conn:
            async with conn.cursor(row_factory=class_row(Subscription)) as cur:
                await cur.execute(self._sql.subscription, (payload.id,))
                subscription = await cur.fetchone()
            if subscription is None or subscription.delivered_at is not None:
                return
            async with conn.cursor(row_factory=class_row(RunContext)) as runs:
                await runs.execute(self._sql.run_context, (subscription.run_id,))
                run = await runs.fetchone()
            async with conn.cursor(row_factory=class_row(IoStatus)) as io:
                await io.execute(self._sql.run_io_statuses, (subscription.run_id,))
                statuses = await io.fetchall()
            async with conn.cursor(row_factory=class_row(Task)) as tasks:
                await tasks.execute(self._sql.failed_task_of_run, (subscription.run_id,))
                failed_task = await tasks.fetchone()
        if run is None:
            return
        notification = run_notification(run, statuses, failed_task)
        body = json.dumps(notification, separators=(",", ":")).encode()
        try:
            # Only the status matters; the answer is read (up to a small cap) to keep the
            # connection reusable.
            if subscription.recipient_method == "ENDPOINT":  # onSuccess / onFailure hooks
                api = EndpointApi(
                    self.outbound, subscription.url, run.api_key, limit=self.answer_limit
                )
                response = await api.notify(body, self.timeout)
            else:
                response = await self.outbound.post(
                    subscription.url,
                    content=body,
                    headers={
                        "content-type": "application/json",
                        SIGNATURE_HEADER: sign(run.api_key, body),
                    },
                    timeout=self.timeout,
                    limit=self.answer_limit,
                    target="subscriber",
                )
        except UrlRefused as exc:
            # Checked at invoke, so its host now leads somewhere refused: not retried.
            raise PermanentFailure(str(exc)) from None
        except OutboundError as exc:
            raise DeliveryFailed(str(exc)) from None
        if not response.is_success:
            raise DeliveryFailed(
                f"the subscriber at {subscription.url} answered HTTP {response.status_code}"
            )
        async with self.database.connection() as conn:
            await conn.execute(self._sql.mark_subscription_delivered, (payload.id,))


def run_notification(
    run: RunContext, statuses: Sequence[IoStatus] = (), failed_task: Task | None = None
) -> dict[str, Json]:
    """The run as a subscriber sees it (trigger.dev's RunNotification): with its io statuses
    and, for a failed run, the task that failed."""
    ok = run.status == "SUCCESS"
    notification: dict[str, Json] = {
        "id": run.id,
        "ok": ok,
        "status": run.status,
        "isTest": run.is_test,
        "statuses": [io_status(s) for s in statuses],
        "startedAt": iso_time(run.started_at),
        "updatedAt": iso_time(run.updated_at),
        "completedAt": iso_time(run.completed_at),
        "executionCount": run.execution_count,
        "executionDurationInMs": run.execution_duration_ms,
        "job": {"id": run.job_slug, "version": run.version},
        "environment": {
            "id": run.environment_id,
            "slug": run.environment_slug,
            "type": run.environment_type,
        },
        "organization": {
            "id": run.organization_id,
            "slug": run.organization_slug,
            "title": run.organization_title,
        },
        "project": {
            "id": run.project_id,
            "slug": run.project_slug,
            "name": run.project_name,
        },
        "invocation": {
            "id": run.event_id,
            "context": run.event_context,
            "timestamp": iso_time(run.event_timestamp),
            "payload": run.event_payload,
        },
    }
    notification["output" if ok else "error"] = run.output
    if not ok and failed_task is not None:
        notification["task"] = {
            "id": failed_task.idempotency_key,  # as trigger.dev identifies it
            "cacheKey": failed_task.display_key,
            "status": failed_task.status,
            "name": failed_task.name,
            "icon": failed_task.icon,
            "startedAt": iso_time(failed_task.started_at),
            "error": failed_task.output,
            "params": failed_task.params,
        }
    return notification


def io_status(status: IoStatus) -> dict[str, Json]:
    """An io status as trigger.dev's JobRunStatusRecord: `state` and `data` only when set."""
    record: dict[str, Json] = {"key": status.key, "label": status.label}
    if status.state is not None:
        record["state"] = status.state
    if status.data is not None:
        record["data"] = status.data
    record["history"] = status.history if isinstance(status.history, list) else []
    return record
