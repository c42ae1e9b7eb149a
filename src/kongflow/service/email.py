"""The scheduleEmail handler: delivers the email over SMTP (a failure is retried by the queue)."""

from __future__ import annotations

import asyncio
import os
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

from kongflow.engine.tasks import RunningJob
from kongflow.service.catalog import ScheduleEmail
from kongflow.typed.task import TypedHandler


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 25
    sender: str = "kongflow@localhost"
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 10.0

    @classmethod
    def from_url(cls, url: str) -> SmtpSettings:
        """`smtp://user:password@host:port?from=me@example.com&starttls=true`."""
        parts = urlsplit(url)
        if parts.scheme != "smtp" or not parts.hostname:
            raise ValueError(
                f"an SMTP URL looks like smtp://user:pass@host:587?from=..., got {url!r}"
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(
            host=parts.hostname,
            port=parts.port or 25,
            sender=query.get("from", cls.sender),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            starttls=query.get("starttls", "").lower() in ("1", "true", "yes"),
        )

    @classmethod
    def from_env(cls) -> SmtpSettings:
        url = os.environ.get("KONGFLOW_SMTP_URL")
        if not url:
            raise RuntimeError("set KONGFLOW_SMTP_URL (smtp://host:port?from=...) to send email")
        return cls.from_url(url)


def build_message(settings: SmtpSettings, payload: ScheduleEmail) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = payload.to
    message["Subject"] = payload.subject
    message.set_content(payload.text or "")
    if payload.html:
        message.add_alternative(payload.html, subtype="html")
    return message


def send_email(settings: SmtpSettings, payload: ScheduleEmail) -> None:
    with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout) as smtp:
        if settings.starttls:
            smtp.starttls()
        if settings.username:
            smtp.login(settings.username, settings.password or "")
        smtp.send_message(build_message(settings, payload))


def email_handler(settings: SmtpSettings) -> TypedHandler:
    """A scheduleEmail handler sending through `settings` (the network call runs in a thread)."""

    async def schedule_email(payload: ScheduleEmail, job: RunningJob) -> dict[str, str]:
        await asyncio.to_thread(send_email, settings, payload)
        return {"to": payload.to}

    return schedule_email
