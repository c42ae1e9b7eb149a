"""The synchronous client: the operations of `Client`, with the same signatures, checks and
answers, in the caller's own transaction; its jobs run on the same workers."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from kongflow import Client, InvalidJobError, JobSpec, SyncClient, Worker
from kongflow.engine.metrics import Metrics


@pytest.fixture
def sync_client(database_url: str, schema: str) -> Iterator[SyncClient]:
    with SyncClient(database_url, schema=schema) as client:
        yield client


def _operations(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in ("open", "close")
    }


def test_it_has_every_operation_of_the_async_client_with_the_same_parameters() -> None:
    async_ops, sync_ops = _operations(Client), _operations(SyncClient)
    assert set(async_ops) == set(sync_ops)
    for name, signature in async_ops.items():
        expected = [(p.name, p.kind, p.default) for p in signature.parameters.values()]
        found = [(p.name, p.kind, p.default) for p in sync_ops[name].parameters.values()]
        assert found == expected, name
    assert inspect.iscoroutinefunction(Client.add_job)
    assert not inspect.iscoroutinefunction(SyncClient.add_job)


def test_enqueue_and_administer(sync_client: SyncClient) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    job = sync_client.add_job("mail", {"to": "ada"}, queue_name="q", run_at=later, priority=-1)
    assert (job.task_identifier, job.payload, job.queue_name, job.state) == (
        "mail",
        {"to": "ada"},
        "q",
        "scheduled",
    )
    again = sync_client.add_job("mail", {"n": 2}, job_key="k")
    assert sync_client.add_job("mail", {"n": 3}, job_key="k").id == again.id  # debounced
    assert sync_client.get_job(again.id).payload == {"n": 3}  # type: ignore[union-attr]
    many = sync_client.add_jobs(JobSpec("resize", {"n": n}) for n in range(5))
    assert [j.payload["n"] for j in many] == list(range(5))
    assert sync_client.add_jobs([]) == []
    assert sync_client.add_jobs_fast(JobSpec("resize", {"n": n}) for n in range(7)) == 7
    assert sync_client.add_jobs_fast([]) == 0
    assert len(sync_client.list_jobs(task="resize", limit=100)) == 12
    moved = sync_client.reschedule_jobs([job.id], run_at=datetime.now(UTC), priority=3)
    assert (moved[0].priority, moved[0].state) == (3, "available")
    assert sync_client.cancel_job(job.id).state == "cancelled"  # type: ignore[union-attr]
    assert sync_client.retry_job(job.id) is None  # a cancelled job stays cancelled
    assert [j.id for j in sync_client.complete_jobs([many[2].id])] == [many[2].id]
    assert sync_client.remove_job("k").id == again.id  # type: ignore[union-attr]
    assert sync_client.remove_job("k") is None
    failed = sync_client.permanently_fail_jobs([many[0].id], "no")
    assert failed[0].last_error == "no"
    assert sync_client.retry_job(many[0].id).state == "available"  # type: ignore[union-attr]
    assert sync_client.delete_jobs([many[1].id, 10**12]) == [many[1].id]
    sync_client.set_queue_limits({"runs:*": 2})
    sync_client.pause_queue("q")
    assert sync_client.queue_known("q") and sync_client.queue_known("runs:7")
    assert not sync_client.queue_known("nowhere")
    paused = {row["queue_name"]: row["paused"] for row in sync_client.queue_stats()}
    assert paused["q"] is True
    sync_client.resume_queue("q")
    assert {row["task_identifier"] for row in sync_client.unhandled_tasks()} >= {"resize"}
    assert sync_client.force_unlock_workers(["nobody"]) == []
    assert len(sync_client.list_jobs(limit=1000)) == 12  # 14 added, one removed, one deleted


def test_bad_input_is_refused_as_the_async_client_refuses_it(sync_client: SyncClient) -> None:
    with pytest.raises(InvalidJobError, match="max_attempts"):
        sync_client.add_job("t", max_attempts=0)
    with pytest.raises(InvalidJobError, match=r"specs\[1\]\.priority"):
        sync_client.add_jobs([JobSpec("t"), JobSpec("t", priority=2**40)])
    with pytest.raises(TypeError, match="job ids must be integers"):
        sync_client.complete_jobs(["1"])  # type: ignore[list-item]
    with pytest.raises(InvalidJobError, match="limits"):
        sync_client.set_queue_limits({"q": 0})
    with pytest.raises(TypeError, match="synchronous"):
        sync_client.add_job("t", conn=object())  # type: ignore[arg-type]


def test_a_job_commits_or_rolls_back_with_the_callers_transaction(
    sync_client: SyncClient, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        with conn.transaction():
            kept = sync_client.add_job("kept", conn=conn)
        with pytest.raises(RuntimeError, match="abort"), conn.transaction():
            sync_client.add_job("lost", conn=conn)
            raise RuntimeError("abort")
    assert sync_client.get_job(kept.id) is not None
    assert [j.task_identifier for j in sync_client.list_jobs()] == ["kept"]


def test_enqueued_jobs_are_counted_in_metrics(database_url: str, schema: str) -> None:
    metrics = Metrics()
    with SyncClient(database_url, schema=schema, metrics=metrics) as client:
        client.add_job("a", queue_name="q")
        client.add_jobs([JobSpec("b"), JobSpec("b")])
        client.add_jobs_fast([JobSpec("c")] * 3)
    counted = {
        (s.labels["task"], s.labels["queue"]): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "kongflow_jobs_enqueued_total"
    }
    assert counted == {("a", "q"): 1, ("b", ""): 2, ("c", ""): 3}


async def test_migrating_works_inside_a_running_event_loop(database_url: str, schema: str) -> None:
    """An async caller (a notebook, an async view) that opens the sync client anyway."""
    with SyncClient(database_url, schema=schema) as client:
        assert client.migrate() == []  # already applied when it opened
        assert client.add_job("t").state == "available"


async def test_its_jobs_run_on_the_async_worker(database_url: str, schema: str) -> None:
    done: list[Any] = []

    async def handle(payload: Any, job: Any) -> None:
        done.append(payload)

    def enqueue() -> None:
        with SyncClient(database_url, schema=schema) as client:
            client.add_jobs(JobSpec("work", {"n": n}) for n in range(3))

    async with (
        Client(database_url, schema=schema) as client,
        Worker(client.pool, {"work": handle}, schema=schema) as worker,
    ):
        thread = threading.Thread(target=enqueue)
        thread.start()
        await asyncio.to_thread(thread.join)
        await worker.drain()
    assert sorted(p["n"] for p in done) == [0, 1, 2]
