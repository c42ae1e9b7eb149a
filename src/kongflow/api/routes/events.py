"""Events sent: stored, and delivered to the jobs they trigger, now or later."""

from __future__ import annotations

from fastapi import APIRouter

from kongflow.api.deps import Env, Jobs
from kongflow.api.errors import AUTHED, documented
from kongflow.api.inputs import SendEventBody
from kongflow.api.responses import EventAnswer
from kongflow.service.runs import NewEvent

router = APIRouter(tags=["events"])


@router.post("/api/v1/events", responses=documented(*AUTHED))
async def send_event(body: SendEventBody, env: Env, jobs: Jobs) -> EventAnswer:
    """Store an event and deliver it to the jobs it triggers, now or later. 200, as
    trigger.dev's SDK retries any other status (each retry would store another event)."""
    event = await jobs.events.send_event(
        env,
        NewEvent(
            id=body.event.id,
            name=body.event.name,
            payload=body.event.payload,
            context=body.event.context,
            source=body.event.source,
            timestamp=body.event.timestamp,
            deliver_at=body.options.deliver_at,
            deliver_after=body.options.deliver_after,
        ),
    )
    return EventAnswer.of(event)
