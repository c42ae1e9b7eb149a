"""Guarantees of the jobs service that hold only if one precise line of code holds: each test
here fails when that line is broken."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.jobs_stack import Stack, jobs_stack


@pytest.fixture
async def stack(database_url: str, schema: str) -> AsyncIterator[Stack]:
    async with jobs_stack(database_url, schema) as stack:
        yield stack


async def test_a_run_cancelled_while_its_request_is_in_flight_stays_canceled(
    stack: Stack,
) -> None:
    """The cancel reaches the database while the endpoint still works on the run, and its
    signal to the worker is late (another API process cancelled it): the endpoint's answer,
    when it comes, must not overwrite CANCELED."""
    run_id = await stack.test("gate")
    await stack.executing(run_id)
    async with stack.jobs.client.pool.connection() as conn, conn.transaction():
        await conn.execute(
            f'update "{stack.jobs.client.schema}".job_runs'  # type: ignore[arg-type]
            " set status = 'CANCELED', completed_at = now() where id = %s",
            (run_id,),
        )
        await stack.jobs.runs.record_status(conn, run_id, "CANCELED")
    stack.release.set()  # the endpoint answers SUCCESS now
    assert stack.jobs.queue.worker is not None
    await stack.jobs.queue.worker.drain()
    assert stack.endpoint.executions == 1
    run = await stack.run(run_id)
    assert (run["status"], run["output"]) == ("CANCELED", None)
    assert await stack.statuses(run_id) == ["PENDING", "QUEUED", "EXECUTING", "CANCELED"]


async def test_another_environment_cannot_cancel_a_run_while_it_executes(stack: Stack) -> None:
    run_id = await stack.test("gate")
    await stack.executing(run_id)
    other = await stack.jobs.environments.ensure("other-org", "web")
    response = await stack.api.post(
        f"/api/v1/runs/{run_id}/cancel", headers={"Authorization": f"Bearer {other.api_key}"}
    )
    assert response.status_code == 404
    assert (await stack.api.get(f"/api/v1/runs/{run_id}")).json()["status"] == "EXECUTING"
    stack.release.set()
    run = await stack.run(run_id)
    assert (run["status"], run["output"]) == ("SUCCESS", {"released": True})
