"""What a job's run function receives besides its payload: the run's `Context` and its `IO`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from kongflow.protocol import (
    ApiEventLog,
    EnvironmentRef,
    OrganizationRef,
    ProjectRef,
    RunJobBody,
)

LOGGER_NAME = "kongflow.sdk"


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


class IO:
    """The run's toolbox. kongflow runs a job in one go, without trigger.dev's io tasks
    (runTask, wait, integrations): a job is retried as a whole, so there is nothing to resume
    and `io` only carries a logger.

    `io.logger` logs to `kongflow.sdk` with `run_id` and `job_id` on every record."""

    def __init__(self, ctx: Context) -> None:
        self.logger: logging.LoggerAdapter[logging.Logger] = logging.LoggerAdapter(
            logging.getLogger(LOGGER_NAME), {"run_id": ctx.run_id, "job_id": ctx.job_id}
        )
