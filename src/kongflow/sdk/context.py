"""What a job's run function receives besides its payload: the run's `Context` and its `IO`
(defined in `kongflow.sdk.io`, re-exported here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kongflow.protocol import (
    ApiEventLog,
    EnvironmentRef,
    OrganizationRef,
    ProjectRef,
    RunJobBody,
)
from kongflow.sdk.io import IO, LOGGER_NAME


@dataclass(frozen=True)
class Context:
    """The run as EXECUTE_JOB describes it (trigger.dev's TriggerContext), flattened to
    snake_case: `ctx.run_id`, `ctx.event.payload`, `ctx.environment.slug`, ..."""

    run_id: str
    is_test: bool
    is_retry: bool
    started_at: datetime
    job_id: str
    job_version: str
    event: ApiEventLog
    environment: EnvironmentRef
    organization: OrganizationRef
    project: ProjectRef | None = None

    @classmethod
    def from_body(cls, body: RunJobBody) -> Context:
        return cls(
            run_id=body.run.id,
            is_test=body.run.is_test,
            is_retry=body.run.is_retry,
            started_at=body.run.started_at,
            job_id=body.job.id,
            job_version=body.job.version,
            event=body.event,
            environment=body.environment,
            organization=body.organization,
            project=body.project,
        )


__all__ = ["IO", "LOGGER_NAME", "Context"]
