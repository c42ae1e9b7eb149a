"""The pytest plugin as an application's suite uses it: a test file of a user's own, run by
pytest in a subprocess with nothing but kongflow installed, gets a migrated schema and the
helpers; and the helpers say what is wrong when an expectation fails."""

from __future__ import annotations

import pytest

from kongflow import Client, RunningJob
from kongflow.testing import assert_enqueued, enqueued, run_until_idle

pytest_plugins = ["pytester"]

USERS_TEST = """
import pytest
from kongflow import Client
from kongflow.testing import assert_enqueued, run_until_idle

sent = []

async def send_email(payload, job):
    sent.append(payload["to"])

def test_the_schema_is_migrated(kongflow_schema):
    assert kongflow_schema.startswith("kf_test_")

@pytest.mark.asyncio
async def test_signup_sends_the_welcome_mail(kongflow_database_url, kongflow_schema):
    async with Client(kongflow_database_url, schema=kongflow_schema) as client:
        await client.add_job("email.send", {"to": "a@example.com", "lang": "en"})
        job = await assert_enqueued(client, "email.send", {"to": "a@example.com"})
        await run_until_idle(client, {"email.send": send_email})
        assert sent == ["a@example.com"]
        assert (await client.get_job(job.id)).state == "completed"
"""


def test_a_users_suite_gets_the_fixtures(
    pytester: pytest.Pytester, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)  # this run's server, not a second one
    pytester.makepyfile(test_users=USERS_TEST)
    pytester.makeini("[pytest]\nasyncio_mode = strict\n")
    result = pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", f"--rootdir={pytester.path}"
    )
    result.assert_outcomes(passed=2)


async def test_the_helpers_say_what_is_waiting(kongflow_client: Client) -> None:
    await kongflow_client.add_job("report.build", {"month": 11}, queue_name="reports")
    assert [j.task_identifier for j in await enqueued(kongflow_client)] == ["report.build"]
    with pytest.raises(AssertionError, match=r"waiting: \[\('report.build', 'reports'"):
        await assert_enqueued(kongflow_client, "report.build", {"month": 12})
    found = await assert_enqueued(kongflow_client, "report.build", {"month": 11}, queue="reports")
    ran: list[int] = []

    async def build(payload: dict[str, int], job: RunningJob) -> None:
        ran.append(payload["month"])
        if payload["month"] == 11:  # one job enqueues another: it runs too
            await kongflow_client.add_job("report.build", {"month": 12})

    await run_until_idle(kongflow_client, {"report.build": build})
    assert ran == [11, 12]
    assert await enqueued(kongflow_client) == []
    assert found.id
