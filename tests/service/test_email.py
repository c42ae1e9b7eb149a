"""scheduleEmail delivers to a real (local) SMTP server, and retries while it is down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from typer.testing import CliRunner

from kongflow import Client
from kongflow.cli import app
from kongflow.service.catalog import TRIGGER_CATALOG
from kongflow.service.email import SmtpSettings, email_handler
from kongflow.service.service import JobsOptions, JobsService
from kongflow.typed import WorkerQueue
from tests.support.helpers import free_port, wait_for_state


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_port() -> int:
    return free_port()


def start_smtp(port: int) -> tuple[Controller, Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, inbox


@pytest.fixture
def inbox(smtp_port: int) -> Iterator[Inbox]:
    controller, box = start_smtp(smtp_port)
    yield box
    controller.stop()


def email_queue(client: Client, port: int) -> WorkerQueue:
    settings = SmtpSettings.from_url(f"smtp://127.0.0.1:{port}?from=noreply@kongflow.test")
    return WorkerQueue(
        TRIGGER_CATALOG,
        client=client,
        handlers={"scheduleEmail": email_handler(settings)},
        poll_interval=0.1,
    )


async def test_schedule_email_delivers(client: Client, inbox: Inbox, smtp_port: int) -> None:
    queue = email_queue(client, smtp_port)
    job = await queue.enqueue(
        "scheduleEmail",
        {"to": "ada@example.com", "subject": "Welcome", "text": "hi", "html": "<b>hi</b>"},
    )
    await queue.start()
    try:
        done = await wait_for_state(client, job.id, "completed")
    finally:
        await queue.stop()
    assert done.result == {"to": "ada@example.com"}
    (message,) = inbox.messages
    assert message["To"] == "ada@example.com"
    assert message["From"] == "noreply@kongflow.test"
    assert message["Subject"] == "Welcome"
    assert [part.get_content_type() for part in message.walk()][-2:] == ["text/plain", "text/html"]


async def test_schedule_email_retries_while_the_server_is_down(
    client: Client, smtp_port: int
) -> None:
    queue = email_queue(client, smtp_port)  # nothing listens on the port yet
    job = await queue.enqueue("scheduleEmail", {"to": "bob@example.com", "subject": "s"})
    await queue.start()
    try:
        retrying = await wait_for_state(client, job.id, "scheduled")
        assert retrying.attempts == 1
        assert "ConnectionRefusedError" in (retrying.last_error or "")
        controller, inbox = start_smtp(smtp_port)
        try:
            await client.reschedule_jobs([job.id], run_at=retrying.created_at)  # skip the backoff
            await wait_for_state(client, job.id, "completed")
        finally:
            controller.stop()
    finally:
        await queue.stop()
    assert [m["To"] for m in inbox.messages] == ["bob@example.com"]


def test_smtp_url_is_checked() -> None:
    with pytest.raises(ValueError, match="smtp://"):
        SmtpSettings.from_url("http://example.com")
    settings = SmtpSettings.from_url("smtp://u%40x:p@mail:587?from=a@b&starttls=true")
    assert (settings.host, settings.port, settings.username, settings.starttls) == (
        "mail",
        587,
        "u@x",
        True,
    )


async def test_the_jobs_service_delivers_schedule_email_when_given_a_server(
    database_url: str, schema: str, inbox: Inbox, smtp_port: int
) -> None:
    smtp = SmtpSettings.from_url(f"smtp://127.0.0.1:{smtp_port}?from=noreply@kongflow.test")
    assert "scheduleEmail" not in JobsService(schema=schema).queue.handlers
    jobs = JobsService(
        database_url, schema=schema, options=JobsOptions(smtp=smtp), poll_interval=0.1
    )
    await jobs.start()
    try:
        job = await jobs.queue.enqueue("scheduleEmail", {"to": "ada@example.com", "subject": "Hi"})
        await wait_for_state(jobs.client, job.id, "completed")
    finally:
        await jobs.close()
    assert [message["Subject"] for message in inbox.messages] == ["Hi"]


def test_kongflow_tasks_says_which_tasks_the_service_handles() -> None:
    def handled(**env: str) -> dict[str, bool]:
        out = CliRunner().invoke(app, ["tasks", "--json"], env=env)
        assert out.exit_code == 0, out.output
        return {row["identifier"]: row["handler"] for row in json.loads(out.output)}

    without = handled(KONGFLOW_SMTP_URL="")
    assert without["performRunExecution"] and without["deliverEvent"]
    assert not without["scheduleEmail"] and not without["githubPush"]
    assert handled(KONGFLOW_SMTP_URL="smtp://127.0.0.1:2525")["scheduleEmail"]


def test_serve_refuses_a_bad_smtp_url_without_printing_its_password() -> None:
    out = CliRunner().invoke(app, ["serve", "--smtp-url", "http://me:hunter2@mail.test"])
    assert out.exit_code == 1
    assert "an SMTP URL looks like" in out.output and "hunter2" not in out.output
