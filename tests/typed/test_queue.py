"""The typed worker queue: validation, precedence, transactions, and trigger.dev's catalog."""

from __future__ import annotations

from typing import Any, ClassVar

import psycopg
import pytest
from pydantic import BaseModel

from kongflow import Client, RunningJob
from kongflow.service.catalog import (
    QUEUE_LIMITS,
    TRIGGER_CATALOG,
    IdPayload,
    InvokeDispatcher,
    PerformRunExecution,
)
from kongflow.typed import (
    InvalidPayloadError,
    NoHandlerError,
    TaskDefinition,
    TaskPayload,
    UnknownTaskError,
    WorkerQueue,
)
from tests.support.helpers import count_jobs, wait_for_state


class Order(BaseModel):
    order_id: int
    email: str


class Ping(BaseModel):
    n: int


async def noop(payload: Any, job: RunningJob) -> None:
    return None


def by_order(payload: Order) -> str:
    return f"orders:{payload.order_id}"


CATALOG = {
    "charge": TaskDefinition(
        Order,
        handler=noop,
        queue_name=by_order,
        job_key=lambda p: f"charge:{p.order_id}",
        priority=5,
        max_attempts=4,
    ),
    "ping": TaskDefinition(Ping, handler=noop, queue_name="pings", job_key="the-ping"),
    "orphan": TaskDefinition(Ping),  # no handler in this process
}


@pytest.fixture
async def wq(client: Client) -> Any:
    queue = WorkerQueue(CATALOG, client=client, poll_interval=0.1)
    yield queue
    await queue.stop()


async def test_invalid_payload_names_the_task_and_each_field(
    wq: WorkerQueue, client: Client
) -> None:
    with pytest.raises(InvalidPayloadError) as info:
        await wq.enqueue("charge", {"order_id": "not a number"})
    message = str(info.value)
    assert "'charge'" in message
    assert "order_id" in message and "email" in message
    assert {e["field"] for e in info.value.errors} == {"order_id", "email"}
    assert await count_jobs(client) == 0


async def test_unknown_task_and_task_without_handler_are_refused(wq: WorkerQueue) -> None:
    with pytest.raises(UnknownTaskError, match="nope"):
        await wq.enqueue("nope", {})
    with pytest.raises(NoHandlerError, match="orphan"):
        await wq.enqueue("orphan", {"n": 1})


async def test_function_valued_options_beat_per_call_and_per_call_beats_defaults(
    wq: WorkerQueue,
) -> None:
    job = await wq.enqueue(
        "charge",
        Order(order_id=7, email="a@b.c"),
        queue_name="ignored",
        job_key="ignored",
        priority=1,
    )
    assert (job.queue_name, job.key) == ("orders:7", "charge:7")  # the task's functions win
    assert (job.priority, job.max_attempts) == (1, 4)  # per call beats the default
    default = await wq.enqueue("charge", {"order_id": 8, "email": "x@y.z"})
    assert default.priority == 5

    ping = await wq.enqueue("ping", {"n": 1})
    assert (ping.queue_name, ping.key) == ("pings", "the-ping")  # static key honoured
    ping = await wq.enqueue("ping", {"n": 2}, queue_name="other", job_key="mine")
    assert (ping.queue_name, ping.key) == ("other", "mine")  # per call beats static


async def test_dequeue(wq: WorkerQueue) -> None:
    await wq.enqueue("ping", {"n": 1})
    removed = await wq.dequeue("the-ping")
    assert removed is not None
    assert await wq.dequeue("the-ping") is None


async def test_transaction_commits_business_writes_and_jobs_together(
    wq: WorkerQueue, client: Client, database_url: str
) -> None:
    async with client.pool.connection() as conn:
        await conn.execute(f'create table "{client.schema}".orders (id int primary key)')  # type: ignore[arg-type]

    async with wq.transaction() as tx:
        await tx.conn.execute(f'insert into "{client.schema}".orders values (1)')  # type: ignore[arg-type]
        await tx.enqueue("charge", {"order_id": 1, "email": "a@b.c"})

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with wq.transaction() as tx:
            await tx.conn.execute(f'insert into "{client.schema}".orders values (2)')  # type: ignore[arg-type]
            await tx.enqueue("charge", {"order_id": 2, "email": "a@b.c"})
            raise Boom

    # with a connection the caller already holds
    async with (
        await psycopg.AsyncConnection.connect(database_url) as own,
        wq.transaction(own) as tx,
    ):
        await tx.conn.execute(f'insert into "{client.schema}".orders values (3)')  # type: ignore[arg-type]
        await tx.enqueue("charge", {"order_id": 3, "email": "a@b.c"})

    async with client.pool.connection() as conn:
        cur = await conn.execute(f'select array_agg(id order by id) from "{client.schema}".orders')  # type: ignore[arg-type]
        assert (await cur.fetchone()) == ([1, 3],)
    assert await count_jobs(client) == 2


async def test_payload_is_validated_again_at_execution(wq: WorkerQueue, client: Client) -> None:
    # a job written behind the catalog's back, e.g. by SQL or an older version
    bad = await client.add_job("charge", {"order_id": "x"}, max_attempts=5)
    good = await wq.enqueue("ping", {"n": 3})
    await wq.start()
    failed = await wait_for_state(client, bad.id, "failed")
    await wait_for_state(client, good.id, "completed")
    assert failed.attempts == 5  # failed for good after one try: retrying cannot fix it
    assert len(failed.errors) == 1
    assert "invalid payload for task 'charge'" in (failed.last_error or "")
    assert "order_id" in (failed.last_error or "")


async def test_handlers_receive_the_model(client: Client) -> None:
    seen: list[Any] = []

    async def handle(payload: Order, job: RunningJob) -> None:
        seen.append(payload)

    queue = WorkerQueue(
        {"charge": TaskDefinition(Order)}, client=client, handlers={"charge": handle}
    )
    try:
        await queue.enqueue("charge", {"order_id": 1, "email": "e"})
        await queue.start()
        assert queue.worker is not None
        await queue.worker.drain()
    finally:
        await queue.stop()
    assert seen == [Order(order_id=1, email="e")]


EXPECTED = {
    # identifier: (queue, priority, max_attempts)
    "organizationCreated": ("internal-queue", 50, 3),
    "indexEndpoint": ("internal-queue", 0, 25),
    "scheduleEmail": ("internal-queue", 100, 3),
    "githubPush": ("internal-queue", 50, 3),
    "githubAppInstallationDeleted": ("internal-queue", 50, 3),
    "stopVM": ("internal-queue", 50, 3),
    "startInitialProjectDeployment": ("internal-queue", 50, 3),
    "startRun": ("executions", 0, 13),
    "performRunExecution": ("runs:<id>", 0, 1),
    "performTaskOperation": ("tasks:<id>", 0, 3),
    "runFinished": (None, 0, 3),
    "deliverHttpSourceRequest": (None, 0, 5),
    "refreshOAuthToken": ("internal-queue", 0, 25),
    "registerJob": (None, 0, 3),
    "registerSource": (None, 0, 3),
    "registerDynamicTrigger": (None, 0, 3),
    "registerDynamicSchedule": (None, 0, 3),
    "activateSource": (None, 0, 3),
    "startQueuedRuns": ("queue:<id>", 0, 3),
    "deliverEvent": ("event-dispatcher", 0, 25),
    "events.invokeDispatcher": (None, 0, 3),
    "events.deliverScheduled": (None, 0, 5),
    "missingConnectionCreated": (None, 0, 3),
    "connectionCreated": (None, 0, 3),
    "resumeRun": (None, 0, 10),
    "resumeTask": (None, 0, 10),
    "deliverRunSubscriptions": (None, 0, 5),
    "deliverRunSubscription": (None, 0, 13),
}


def test_trigger_catalog_matches_trigger_dev() -> None:
    actual = {
        name: (d.describe_queue(), d.priority, d.max_attempts)
        for name, d in TRIGGER_CATALOG.items()
    }
    assert actual == EXPECTED
    assert QUEUE_LIMITS == {
        "executions": 10,
        "internal-queue": 3,
        "event-dispatcher": 8,
        "runs:*": 1,
        "tasks:*": 1,
        "queue:*": 1,
    }


async def test_trigger_catalog_dynamic_queues_and_camel_case_payloads(client: Client) -> None:
    handlers = {name: noop for name in TRIGGER_CATALOG}
    queue = WorkerQueue(TRIGGER_CATALOG, client=client, handlers=handlers)
    job = await queue.enqueue("performRunExecution", {"id": "run_1"})
    assert job.queue_name == "runs:run_1"
    job = await queue.enqueue("events.invokeDispatcher", {"id": "d", "eventRecordId": "e"})
    assert job.payload == {"id": "d", "eventRecordId": "e"}
    with pytest.raises(InvalidPayloadError, match="eventRecordId"):
        await queue.enqueue("events.invokeDispatcher", {"id": "d"})


async def test_a_task_payload_enqueues_itself_under_its_task(client: Client) -> None:
    handlers = {name: noop for name in TRIGGER_CATALOG}
    queue = WorkerQueue(TRIGGER_CATALOG, client=client, handlers=handlers)
    job = await queue.enqueue(PerformRunExecution(id="run_2"), job_key="exec:run_2")
    assert (job.task_identifier, job.queue_name, job.key) == (
        "performRunExecution",
        "runs:run_2",
        "exec:run_2",
    )
    async with queue.transaction() as tx:
        job = await tx.enqueue(InvokeDispatcher(id="d", event_record_id="e"))
    assert (job.task_identifier, job.payload) == (
        "events.invokeDispatcher",
        {"id": "d", "eventRecordId": "e"},
    )
    assert {name: d.payload.task for name, d in TRIGGER_CATALOG.items()} == {
        name: name for name in TRIGGER_CATALOG
    }
    with pytest.raises(TypeError, match="IdPayload names no task"):
        await queue.enqueue(IdPayload(id="x"))


async def test_a_task_payload_must_be_its_tasks_model(client: Client) -> None:
    class Renamed(TaskPayload):
        task: ClassVar[str] = "ping"
        n: int

    class Stranger(TaskPayload):
        task: ClassVar[str] = "nope"

    queue = WorkerQueue(CATALOG, client=client)
    with pytest.raises(TypeError, match="task 'ping' takes a Ping, not a Renamed"):
        await queue.enqueue(Renamed(n=1))
    with pytest.raises(UnknownTaskError, match="nope"):
        await queue.enqueue(Stranger())
    assert await count_jobs(client) == 0


def test_tasks_command_lists_the_catalog(tmp_path: Any) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "KONGFLOW_SMTP_URL"}
    out = subprocess.run(
        [sys.executable, "-m", "kongflow", "tasks", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {row["identifier"]: row for row in json.loads(out)}
    assert set(rows) == set(EXPECTED)
    for name, (queue, priority, attempts) in EXPECTED.items():
        assert (rows[name]["queue"], rows[name]["priority"], rows[name]["max_attempts"]) == (
            queue,
            priority,
            attempts,
        )
    assert rows["scheduleEmail"]["handler"] is False
    env["KONGFLOW_SMTP_URL"] = "smtp://127.0.0.1:2525"
    table = subprocess.run(
        [sys.executable, "-m", "kongflow", "tasks"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "performRunExecution" in table and "runs:<id>" in table
    email_row = next(line for line in table.splitlines() if "scheduleEmail" in line)
    assert "yes" in email_row


async def test_recurring_tasks_run_their_ticks(client: Client) -> None:
    from datetime import timedelta

    from kongflow.typed import CronPayload, RecurringTask

    seen: list[CronPayload] = []

    async def tick(payload: CronPayload, job: RunningJob) -> None:
        seen.append(payload)

    async with client.pool.connection() as conn:  # known for an hour, last ran 10 minutes ago
        await conn.execute(
            f'insert into "{client.schema}"._known_crontabs values'  # type: ignore[arg-type]
            " ('heartbeat', now() - interval '1 hour', now() - interval '10 minutes')"
        )
    queue = WorkerQueue(
        CATALOG,
        client=client,
        poll_interval=0.05,
        recurring={"heartbeat": RecurringTask("* * * * *", tick, fill=timedelta(minutes=3))},
    )
    await queue.start()
    try:
        assert queue.worker is not None
        await queue.worker.drain()
    finally:
        await queue.stop()
    assert len(seen) == 3  # the last three minutes, per fill
    assert all(p.backfilled for p in seen)
    assert len({p.ts for p in seen}) == 3
