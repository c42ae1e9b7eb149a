"""Dashboard pages read without a browser: the cron page lists the jobs service's schedules with
their next tick."""

from __future__ import annotations

import re

import httpx

from kongflow.dashboard import DashboardOptions
from tests.service.test_schedules import every_minute, index
from tests.support.jobs_stack import jobs_stack


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
