"""The dashboard behind a login (as `kongflow serve` runs it): no session goes to the login page
(in the browser too), the admin token sees everything, an environment's API key sees that
environment's runs only, every action needs its CSRF token, a read-only dashboard takes none,
and bad input is a page saying what is wrong, never a 500."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import expect

from kongflow.dashboard import DashboardOptions
from tests.support.browser import chromium
from tests.support.jobs_stack import Stack, jobs_stack

TOKEN = "an-admin-token-long-enough"


@pytest.fixture
async def stack(database_url: str, schema: str) -> AsyncIterator[Stack]:
    options = DashboardOptions(login=True, admin_token=TOKEN)
    async with jobs_stack(database_url, schema, dashboard=options) as stack:
        yield stack


def browser_like(stack: Stack) -> httpx.AsyncClient:
    """A client without the API's key, keeping the session cookie, not following redirects."""
    return httpx.AsyncClient(base_url=f"{stack.api.base_url}".rstrip("/") + "/dashboard")


async def csrf_of(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None, page.text[:500]
    return match.group(1)


async def log_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    csrf = await csrf_of(client, "/login")
    return await client.post("/login", data={"csrf": csrf, "token": token})


async def test_without_a_session_the_browser_is_sent_to_log_in(stack: Stack) -> None:
    async with chromium() as browser:
        page = await browser.new_page(base_url=f"{stack.api.base_url}".rstrip("/"))
        await page.goto("/dashboard/jobs")
        await expect(page).to_have_url(re.compile(r"/dashboard/login$"))
        await page.fill("input[name=token]", "wrong")
        await page.click("button:text('Log in')")
        await expect(page.locator("[role=alert]")).to_contain_text("neither")
        await page.fill("input[name=token]", TOKEN)
        await page.click("button:text('Log in')")
        await expect(page.locator("h1")).to_have_text("Overview")
        await page.goto("/dashboard/jobs")
        await expect(page.locator("h1")).to_have_text("Jobs")


async def test_an_environment_key_sees_its_environments_runs_only(stack: Stack) -> None:
    run_id = await stack.test("echo")
    other = await stack.jobs.environments.ensure("other", "web")
    async with browser_like(stack) as client:
        assert (await client.get("/runs")).status_code == 303
        assert (await log_in(client, other.api_key)).headers["location"].endswith("/runs")
        assert (await client.get("/jobs")).status_code == 403  # the engine's pages: admin only
        assert run_id not in (await client.get("/runs")).text
        assert (await client.get(f"/runs/{run_id}")).status_code == 404
    async with browser_like(stack) as client:
        await log_in(client, stack.env.api_key)
        assert run_id in (await client.get("/runs")).text
        assert (await client.get(f"/runs/{run_id}")).status_code == 200


async def test_every_action_needs_its_csrf_token(stack: Stack) -> None:
    job = await stack.jobs.client.add_job("nobody.handles", {}, queue_name="held")
    async with browser_like(stack) as client:
        await log_in(client, TOKEN)
        for path, data in [
            (f"/jobs/{job.id}/delete", {}),
            ("/queues/pause", {"queue": "held"}),
            ("/jobs/bulk?queue=held", {"action": "delete"}),
        ]:
            refused = await client.post(path, data=data | {"csrf": "forged"})
            assert refused.status_code == 403, path
            assert (await client.post(path, data=data)).status_code == 403, path
        assert await stack.jobs.client.get_job(job.id) is not None
        csrf = await csrf_of(client, f"/jobs/{job.id}")
        confirm = await client.get("/jobs/bulk?queue=held&action=delete")
        assert "delete 1 job?" in confirm.text
        done = await client.post("/jobs/bulk?queue=held", data={"csrf": csrf, "action": "delete"})
        assert done.status_code == 303 and "delete%3A+1" in done.headers["location"]
        assert await stack.jobs.client.get_job(job.id) is None


async def test_bad_input_is_a_page_not_a_500(stack: Stack) -> None:
    async with browser_like(stack) as client:
        await log_in(client, TOKEN)
        cases = {
            "/jobs?state=exploded": 400,
            "/jobs?before=abc": 400,
            "/jobs?q=" + "x" * 600: 400,
            "/jobs/12345678901234567890123": 404,
            "/jobs/nope": 404,
            "/jobs/999999": 404,
            "/runs/nope": 404,
            "/runs?status=MAYBE": 400,
            "/jobs/bulk?action=explode": 400,
        }
        for path, status in cases.items():
            response = await client.get(path)
            assert response.status_code == status, (path, response.text[:300])
            assert "<h1>" in response.text
        csrf = await csrf_of(client, "/jobs")
        bad_limit = await client.post(
            "/queues/limit", data={"csrf": csrf, "queue": "x", "limit": "1"}
        )
        assert bad_limit.status_code == 404  # no such queue
        not_utf8 = await client.post(
            "/queues/pause",
            content=b"csrf=" + csrf.encode() + b"&queue=\xff",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert not_utf8.status_code == 400


async def test_a_read_only_dashboard_takes_no_action(database_url: str, schema: str) -> None:
    options = DashboardOptions(login=True, admin_token=TOKEN, read_only=True)
    async with jobs_stack(database_url, schema, dashboard=options) as stack:
        job = await stack.jobs.client.add_job("nobody.handles", {})
        async with browser_like(stack) as client:
            await log_in(client, TOKEN)
            page = await client.get(f"/jobs/{job.id}")
            assert page.status_code == 200 and "<button" not in page.text.split("</header>")[1]
            csrf = await csrf_of(client, "/login")
            refused = await client.post(f"/jobs/{job.id}/delete", data={"csrf": csrf})
            assert refused.status_code == 403 and "read-only" in refused.text
        assert await stack.jobs.client.get_job(job.id) is not None


async def test_a_job_is_rescheduled_to_a_chosen_time(stack: Stack) -> None:
    job = await stack.jobs.client.add_job("nobody.handles", {})
    async with browser_like(stack) as client:
        await log_in(client, TOKEN)
        csrf = await csrf_of(client, f"/jobs/{job.id}")
        moved = await client.post(
            f"/jobs/{job.id}/reschedule", data={"csrf": csrf, "run_at": "2031-05-04T03:02"}
        )
        assert moved.status_code == 303
        bad = await client.post(f"/jobs/{job.id}/reschedule", data={"csrf": csrf, "run_at": "soon"})
        assert bad.status_code == 400 and "not a date and time" in bad.text
    rescheduled = await stack.jobs.client.get_job(job.id)
    assert rescheduled is not None and rescheduled.state == "scheduled"
    assert rescheduled.run_at.isoformat() == "2031-05-04T03:02:00+00:00"
