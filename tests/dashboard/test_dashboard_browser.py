"""The dashboard in real Chromium: the overview's counts, a failed job found by filter, read and
retried, a paused queue, a job tested from the dashboard to SUCCESS, a cancelled run, and a
hostile payload shown as text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Page, expect

from kongflow import RunningJob, Worker
from kongflow.dashboard import DashboardOptions
from tests.support.browser import chromium
from tests.support.jobs_stack import Stack, jobs_stack, wait_until


@pytest.fixture
async def stack(database_url: str, schema: str) -> AsyncIterator[Stack]:
    async with jobs_stack(database_url, schema, dashboard=DashboardOptions()) as stack:
        yield stack


@pytest.fixture
async def page(stack: Stack) -> AsyncIterator[Page]:
    async with chromium() as browser:
        page = await browser.new_page(base_url=f"{stack.api.base_url}".rstrip("/"))
        page.set_default_timeout(15_000)
        yield page


class Flaky:
    """A handler that fails until `healed`, with a traceback worth reading."""

    def __init__(self) -> None:
        self.healed = False
        self.ran: list[int] = []

    async def __call__(self, payload: Any, job: RunningJob) -> None:
        self.ran.append(job.id)
        if not self.healed:
            raise RuntimeError("the ledger is locked by another batch")


async def job_state(stack: Stack, job_id: int) -> str:
    job = await stack.jobs.client.get_job(job_id)
    return job.state if job is not None else "gone"


async def test_the_overview_counts_a_queues_jobs(stack: Stack, page: Page) -> None:
    for n in range(3):
        await stack.jobs.client.add_job("nobody.handles", {"n": n}, queue_name="reports")
    await page.goto("/dashboard/")
    row = page.locator('#queues tr[data-queue="reports"]')
    await expect(row.locator(".available")).to_have_text("3")
    await expect(page.locator("#workers")).to_contain_text("alive")
    await stack.jobs.client.add_job("nobody.handles", {"n": 3}, queue_name="reports")
    await expect(row.locator(".available")).to_have_text("4")  # live, without a reload


async def test_a_failed_job_is_found_read_and_retried(stack: Stack, page: Page) -> None:
    flaky = Flaky()
    async with Worker(
        stack.jobs.client.pool,
        {"ledger.close": flaky},
        schema=stack.jobs.client.schema,
        poll_interval=0.05,
    ):
        job = await stack.jobs.client.add_job("ledger.close", {"day": 1}, max_attempts=1)

        async def failed() -> bool:
            return await job_state(stack, job.id) == "failed"

        await wait_until(failed)
        await page.goto("/dashboard/jobs")
        await page.select_option("select[name=state]", "failed")
        await page.fill("input[name=task]", "ledger.close")
        await page.click("text=Filter")
        await page.click(f'#jobs tr[data-id="{job.id}"] a')
        await expect(page.locator(".traceback").first).to_contain_text(
            "RuntimeError: the ledger is locked by another batch"
        )
        await expect(page.locator(".traceback").first).to_contain_text("Traceback")
        flaky.healed = True
        await page.click("button:text('retry')")
        await expect(page.locator("[role=status]")).to_contain_text("retry: done")

        async def completed() -> bool:
            return await job_state(stack, job.id) == "completed"

        await wait_until(completed)
        await expect(page.locator("#state")).to_have_text("completed")  # live, no reload
    assert flaky.ran == [job.id, job.id]


async def test_a_paused_queue_is_not_served_until_resumed(stack: Stack, page: Page) -> None:
    flaky = Flaky()
    flaky.healed = True
    async with Worker(
        stack.jobs.client.pool,
        {"ledger.close": flaky},
        schema=stack.jobs.client.schema,
        poll_interval=0.05,
    ):
        first = await stack.jobs.client.add_job("ledger.close", {}, queue_name="ledger")
        await wait_until(lambda: job_state_is(stack, first.id, "completed"))
        await page.goto("/dashboard/queues")
        row = page.locator('#queues tr[data-queue="ledger"]')
        await row.locator("button:text('pause')").click()
        await expect(row.locator(".paused")).to_have_text("paused")
        held = await stack.jobs.client.add_job("ledger.close", {}, queue_name="ledger")
        await asyncio.sleep(1)
        assert await job_state(stack, held.id) == "available"
        await row.locator("button:text('resume')").click()
        await expect(row.locator(".paused")).to_have_text("")
        await wait_until(lambda: job_state_is(stack, held.id, "completed"))


async def job_state_is(stack: Stack, job_id: int, state: str) -> bool:
    return await job_state(stack, job_id) == state


async def test_a_job_is_tested_from_the_dashboard_to_success(stack: Stack, page: Page) -> None:
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    await page.goto("/dashboard/test?job=boom")
    await page.fill("#payload", "edited")
    echo = await page.locator("#job option", has_text="echo (").get_attribute("value")
    assert echo is not None and echo.endswith("|echo")  # the environment, then the job
    await page.select_option("#job", echo)  # the job's example (none: {}) replaces it
    await expect(page.locator("#payload")).to_have_value("{}")
    await page.fill("#payload", '{"greeting": "hi from the dashboard"}')
    await page.click("#run")
    await expect(page.locator("#status")).to_have_text("SUCCESS")  # live on the run's page
    await expect(page.locator("#output")).to_contain_text("hi from the dashboard")
    bad = await page.goto("/dashboard/test")
    assert bad is not None
    await page.fill("#payload", "{not json")
    await page.click("#run")
    await expect(page.locator("[role=alert]")).to_contain_text("not JSON")
    assert refused == []  # the page's scripts all run under its Content-Security-Policy


async def test_a_run_is_cancelled_from_its_page(stack: Stack, page: Page) -> None:
    run_id = await stack.test("gate")
    await stack.executing(run_id)
    await page.goto(f"/dashboard/runs/{run_id}")
    await page.click("text=Cancel the run")
    await expect(page.locator("#status")).to_have_text("CANCELED")
    await page.goto("/dashboard/runs?status=CANCELED")
    await expect(page.locator(f'#runs tr[data-id="{run_id}"]')).to_be_visible()


async def test_a_hostile_payload_is_shown_as_text(stack: Stack, page: Page) -> None:
    hostile = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
    job = await stack.jobs.client.add_job(
        "nobody.handles", {"note": hostile}, queue_name="<b>q</b>"
    )
    answer = await page.goto(f"/dashboard/jobs/{job.id}")
    assert answer is not None
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    await expect(page.locator("#payload")).to_contain_text("<script>window.pwned = 1</script>")
    await page.goto("/dashboard/")
    await expect(page.locator("#queues")).to_contain_text("<b>q</b>")
    assert await page.evaluate("window.pwned") is None
