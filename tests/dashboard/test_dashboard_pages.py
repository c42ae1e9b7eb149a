"""Dashboard pages read without a browser: the cron page lists cron items and the jobs
service's schedules, each with its next tick."""

from __future__ import annotations

import re

import httpx

from kongflow import Worker
from kongflow.dashboard import DashboardOptions
from kongflow.engine.cron import CronItem
from tests.service.test_schedules import every_minute, index
from tests.support.jobs_stack import jobs_stack, wait_until


async def test_the_cron_page_shows_scheduled_jobs(database_url: str, schema: str) -> None:
    async with jobs_stack(database_url, schema, dashboard=DashboardOptions()) as stack:
        await index(stack, every_minute())
        base = f"{stack.api.base_url}".rstrip("/")
        async with httpx.AsyncClient(base_url=base) as http:
            page = await http.get("/dashboard/cron")
    assert page.status_code == 200
    row = page.text.split('id="schedules"')[1]
    assert "<td>tick</td>" in row and "60 s" in row
    # no tick yet, and the next one a minute from now
    assert len(re.findall(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td>", row)) == 1


async def test_the_cron_page_shows_each_items_pattern_and_next_tick(
    database_url: str, schema: str
) -> None:
    async with jobs_stack(database_url, schema, dashboard=DashboardOptions()) as stack:
        item = CronItem("*/5 * * * *", "reports.build", identifier="five-minutely")
        client = stack.jobs.client
        async with Worker(
            client.pool, {"reports.build": noop}, schema=client.schema, crontab=[item]
        ):
            base = f"{stack.api.base_url}".rstrip("/")
            async with httpx.AsyncClient(base_url=base) as http:

                async def described() -> bool:
                    return "*/5 * * * *" in (await http.get("/dashboard/cron")).text

                await wait_until(described)
                page = await http.get("/dashboard/cron")
    row = page.text.split('data-item="five-minutely"')[1].split("</tr>")[0]
    assert "reports.build" in row
    next_tick = re.search(r'class="next">(\d{4}-\d\d-\d\d \d\d:(\d\d):00)<', row)
    assert next_tick is not None and int(next_tick.group(2)) % 5 == 0


async def noop(payload: object, job: object) -> None:
    pass
