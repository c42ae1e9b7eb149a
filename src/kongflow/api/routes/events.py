"""Events sent (one or in bulk), delivered to the jobs they trigger now or later, or cancelled
before."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from kongflow.api.deps import Env, Jobs
from kongflow.api.errors import AUTHED, documented
from kongflow.api.inputs import (
    EventBody,
    PathId,
    SendEventBody,
    SendEventOptions,
    SendEventsBody,
)
from kongflow.api.responses import EventAnswer
from kongflow.service.runs import NewEvent

router = APIRouter(tags=["events"])


@router.post("/api/v1/events", responses=documented(*AUTHED))
async def send_event(body: SendEventBody, env: Env, jobs: Jobs) -> EventAnswer:
    """Store an event and deliver it to the jobs it triggers, now or later. 200, as
    trigger.dev's SDK retries any other status (each retry would store another event)."""
    return EventAnswer.of(await jobs.events.send_event(env, new_event(body.event, body.options)))


@router.post("/api/v1/events/bulk", responses=documented(*AUTHED))
async def send_events(body: SendEventsBody, env: Env, jobs: Jobs) -> list[EventAnswer]:
    """Store several events at once, all or none, each delivered as `send_event` would."""
    events = [new_event(event, body.options) for event in body.events]
    return [EventAnswer.of(e) for e in await jobs.events.send_events(env, events)]


@router.post("/api/v1/events/{event_id}/cancel", responses=documented(*AUTHED, 404))
async def cancel_event(event_id: PathId, env: Env, jobs: Jobs) -> EventAnswer:
    """Stop an event before its delivery (`cancelledAt` set); a delivered one is unchanged."""
    event = await jobs.events.cancel_event(env, event_id)
    if event is None:
        raise HTTPException(404, f"no event {event_id!r} in this environment")
    return EventAnswer.of(event)


def new_event(event: EventBody, options: SendEventOptions) -> NewEvent:
    return NewEvent(
        id=event.id,
        name=event.name,
        payload=event.payload,
        context=event.context,
        source=event.source,
        timestamp=event.timestamp,
        deliver_at=options.deliver_at,
        deliver_after=options.deliver_after,
    )
