"""Workflows: steps run after the steps and jobs they depend on, a failure cancels what comes
after it (unless a step runs anyway), a step reads its dependencies' results, a workflow is
enqueued in one transaction, cycles are refused, and a 10,000-job fan-in releases its dependent
once. (Across processes and a killed worker: test_worker_processes.py.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from kongflow import (
    Client,
    InvalidJobError,
    JobCancelled,
    PermanentFailure,
    RunningJob,
    Worker,
    Workflow,
)


def worker(client: Client, tasks: dict[str, Any], **options: Any) -> Worker:
    return Worker(client.pool, tasks, schema=client.schema, poll_interval=0.05, **options)


async def test_a_failure_cancels_what_comes_after_it_unless_a_step_runs_anyway(
    client: Client,
) -> None:
    ran: list[str] = []

    async def step(payload: dict[str, Any], job: RunningJob) -> dict[str, str]:
        if payload.get("fail"):
            raise PermanentFailure("the card was declined")
        ran.append(payload["name"])
        return {"from": payload["name"]}

    flow = Workflow("order")
    a = flow.step("a", "step", {"name": "a"})
    b = flow.step("b", "step", {"name": "b", "fail": True}, after=[a])
    c = flow.step("c", "step", {"name": "c"}, after=[a])
    d = flow.step("d", "step", {"name": "d"}, after=[b, c])
    flow.step("e", "step", {"name": "e"}, after=[d])  # cancelled in turn
    flow.step("report", "step", {"name": "report"}, after=[b, c], run_if_failed=True)
    run = await client.add_workflow(flow)
    async with worker(client, {"step": step}) as w:
        await w.drain()
    states = {name: job.state for name, job in (await client.workflow_jobs(run.id)).items()}
    assert states == {
        "a": "completed",
        "b": "failed",
        "c": "completed",
        "d": "cancelled",
        "e": "cancelled",
        "report": "completed",
    }
    assert sorted(ran) == ["a", "c", "report"]
    steps = await client.workflow_jobs(run.id)
    assert steps["d"].last_error == "a job it depends on failed or was cancelled"
    with pytest.raises(JobCancelled):
        await client.wait_for(steps["e"], timeout=5)
    # what the step that ran anyway could read: the dependency that completed
    assert await client.dependency_results(steps["report"]) == {"c": {"from": "c"}}


async def test_a_step_reads_what_its_dependencies_returned(client: Client) -> None:
    seen: dict[str, Any] = {}

    async def leaf(payload: dict[str, int], job: RunningJob) -> int:
        return payload["n"] * 10

    async def total(payload: Any, job: RunningJob) -> int:
        results = await client.dependency_results(job)
        seen.update(results)
        return sum(results.values())

    flow = Workflow()
    leaves = [flow.step(f"leaf{n}", "leaf", {"n": n}) for n in range(3)]
    flow.step("total", "total", after=leaves)
    run = await client.add_workflow(flow)
    assert run.jobs["total"].state == "blocked"
    async with worker(client, {"leaf": leaf, "total": total}) as w:
        assert await client.wait_for(run.jobs["total"], timeout=30) == 30
        await w.drain()
    assert seen == {"leaf0": 0, "leaf1": 10, "leaf2": 20}


async def test_a_workflow_commits_or_rolls_back_with_the_callers_transaction(
    client: Client, aconn: psycopg.AsyncConnection[Any]
) -> None:
    flow = Workflow()
    flow.step("b", "t", after=[flow.step("a", "t")])
    with pytest.raises(RuntimeError, match="abort"):
        async with aconn.transaction():
            await client.add_workflow(flow, conn=aconn)
            raise RuntimeError("abort")
    assert await client.list_jobs() == []
    async with aconn.transaction():
        run = await client.add_workflow(flow, conn=aconn)
    assert {job.state for job in (await client.workflow_jobs(run.id)).values()} == {
        "available",
        "blocked",
    }


async def test_bad_workflows_are_refused_and_nothing_is_written(client: Client) -> None:
    cycle = Workflow()
    cycle.step("x", "t", after=["z"])
    cycle.step("y", "t", after=["x"])
    cycle.step("z", "t", after=["y"])
    cycle.step("free", "t")
    with pytest.raises(InvalidJobError, match="the steps x, y, z depend on each other in a cycle"):
        await client.add_workflow(cycle)
    unknown = Workflow()
    unknown.step("a", "t", after=["nope"])
    with pytest.raises(InvalidJobError, match=r"a\.after: no step named 'nope'"):
        await client.add_workflow(unknown)
    named = Workflow()
    named.step("a", "t")
    with pytest.raises(InvalidJobError, match="has a step 'a' already"):
        named.step("a", "t")
    with pytest.raises(InvalidJobError, match="at least one step"):
        await client.add_workflow(Workflow())
    bad_job = Workflow()
    bad_job.step("a", "", {})
    with pytest.raises(InvalidJobError, match=r"a\.identifier"):
        await client.add_workflow(bad_job)
    async with client.pool.connection() as conn:  # from SQL, steps out of order or keyed
        for steps, message in [
            (
                '[{"step": "b", "spec": {"identifier": "t"}, "after": ["a"]},'
                ' {"step": "a", "spec": {"identifier": "t"}}]',
                "not a step listed before it",
            ),
            ('[{"step": "a", "spec": {"identifier": "t", "job_key": "k"}}]', "job key"),
            (
                '[{"step": "a", "spec": {"identifier": "t"}},'
                ' {"step": "a", "spec": {"identifier": "t"}}]',
                "named twice",
            ),
        ]:
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
                await conn.execute(
                    f'select * from "{client.schema}".add_workflow(%s::jsonb)',  # type: ignore[arg-type]
                    ('{"steps": ' + steps + "}",),
                )
    assert await client.list_jobs() == []


async def test_steps_after_jobs_enqueued_before(client: Client) -> None:
    async def ok(payload: Any, job: RunningJob) -> str:
        return "ok"

    done = await client.add_job("ok")
    async with worker(client, {"ok": ok}) as w:
        await w.drain()
    pending = await client.add_job("ok", run_at=datetime.now(UTC) + timedelta(hours=1))
    failed = await client.add_job("ok")
    await client.permanently_fail_jobs([failed.id])
    flow = Workflow()
    flow.step("after_done", "ok", after=[done])
    flow.step("after_pending", "ok", after=[pending])
    flow.step("after_failed", "ok", after=[failed.id])
    run = await client.add_workflow(flow)
    states = {name: job.state for name, job in (await client.workflow_jobs(run.id)).items()}
    assert states == {
        "after_done": "available",
        "after_pending": "blocked",
        "after_failed": "cancelled",
    }
    # a blocked job is not run early by retry or reschedule
    retried = await client.retry_job(run.jobs["after_pending"].id)
    assert retried is not None and retried.state == "blocked"
    await client.reschedule_jobs([run.jobs["after_pending"].id], run_at=datetime.now(UTC))
    assert (await client.get_job(run.jobs["after_pending"].id)).state == "blocked"  # type: ignore[union-attr]
    await client.reschedule_jobs([pending.id], run_at=datetime.now(UTC))
    async with worker(client, {"ok": ok}) as w:
        await w.drain()
    assert (await client.get_job(run.jobs["after_pending"].id)).state == "completed"  # type: ignore[union-attr]


async def test_ten_thousand_fan_in_release_their_dependent_once(client: Client) -> None:
    sink_runs: list[int] = []

    async def leaf(payload: Any, job: RunningJob) -> None:
        return None

    async def sink(payload: Any, job: RunningJob) -> int:
        sink_runs.append(job.id)
        return len(await client.dependency_results(job))

    flow = Workflow("fan-in")
    leaves = [flow.step(f"leaf-{n}", "leaf", {"n": n}) for n in range(10_000)]
    flow.step("sink", "sink", after=leaves)
    run = await client.add_workflow(flow)
    assert len(run.jobs) == 10_001
    async with worker(client, {"leaf": leaf, "sink": sink}, concurrency=200) as w:
        counted = await asyncio.wait_for(client.wait_for(run.jobs["sink"]), 300)
        await w.drain()
    assert sink_runs == [run.jobs["sink"].id]
    assert counted == 10_000  # it read every leaf's result (None)
    (sink_job,) = [
        job for name, job in (await client.workflow_jobs(run.id)).items() if name == "sink"
    ]
    assert (sink_job.state, sink_job.attempts) == ("completed", 1)
