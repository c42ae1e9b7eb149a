"""What the dashboard reads, in one place: the engine's queues, jobs, workers and cron, and the
jobs service's environments, endpoints and runs. Lists are keyset-paged (newest first, by id)
and never counted in full; a count that could be large is capped (`COUNT_CAP`, shown as
"10,000+")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from croniter import croniter
from psycopg.rows import dict_row

from kongflow.engine.client import Client
from kongflow.engine.models import Job
from kongflow.settings import validate_schema

PAGE_SIZE = 50
COUNT_CAP = 10_000
JOB_STATES = ("available", "scheduled", "blocked", "running", "failed", "completed", "cancelled")
RUN_STATUSES = (
    "PENDING",
    "QUEUED",
    "EXECUTING",
    "WAITING_TO_CONTINUE",
    "WAITING_TO_EXECUTE",
    "SUCCESS",
    "FAILURE",
    "TIMED_OUT",
    "ABORTED",
    "CANCELED",
    "UNRESOLVED_AUTH",
    "INVALID_PAYLOAD",
)


@dataclass(frozen=True)
class JobFilter:
    """The jobs list's filter (each part optional) and its page (ids below `before`)."""

    state: str | None = None
    task: str | None = None
    queue: str | None = None
    search: str | None = None  # a job id, or a job key
    before: int | None = None

    def params(self, limit: int) -> dict[str, Any]:
        job_id = int(self.search) if self.search and self.search.isdigit() else None
        return {
            "state": self.state,
            "task": self.task,
            "queue": self.queue,
            "id": job_id,
            "key": self.search if job_id is None else None,
            "before": self.before,
            "limit": limit,
        }

    def query(self, **changes: Any) -> dict[str, str]:
        """The filter as query parameters (for links), with `changes` applied."""
        values = {
            "state": self.state,
            "task": self.task,
            "queue": self.queue,
            "q": self.search,
            "before": self.before,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in (None, "")}


@cache
def _sql(schema: str) -> dict[str, str]:
    s = f'"{validate_schema(schema)}"'
    where = (
        " (%(task)s::text is null or task_identifier = %(task)s)"
        " and (%(id)s::bigint is null or id = %(id)s)"
        " and (%(key)s::text is null or key = %(key)s)"
    )
    # The hot jobs (waiting, scheduled, running, failed) and the finished ones, each read
    # newest first by its primary key and merged: no full scan, whatever the table's size.
    hot = (
        f"select * from {s}.jobs where{where}"
        " and (%(state)s::text is null or state = %(state)s)"
        " and (%(queue)s::text is null or queue_name = %(queue)s)"
        " and (%(before)s::bigint is null or id < %(before)s)"
        " and (%(state)s::text is null or %(state)s not in ('completed', 'cancelled'))"
        " order by id desc limit %(limit)s"
    )
    finished = (
        "select f.id, f.queue_name, f.task_identifier, f.payload, f.priority, f.run_at,"
        " f.attempts, f.max_attempts, f.last_error, f.created_at, f.finished_at, f.key,"
        " null::timestamptz, null::text, f.revision, f.flags, f.state, f.errors,"
        " null::timestamptz, f.finished_at, f.result, null::jsonb"
        f" from {s}._finished_jobs f where{where}"
        " and (%(state)s::text is null or f.state = %(state)s)"
        " and (%(queue)s::text is null or f.queue_name = %(queue)s)"
        " and (%(before)s::bigint is null or f.id < %(before)s)"
        " and (%(state)s::text is null or %(state)s in ('completed', 'cancelled'))"
        " order by f.id desc limit %(limit)s"
    )
    capped = f"limit {COUNT_CAP}"
    return {
        # Per queue, counts read from the claim indexes and capped at COUNT_CAP (the page says
        # "10,000+"): the overview stays fast with millions of jobs waiting.
        "queues": (
            "select q.queue_name, q.max_running, q.paused,"
            " w.available, w.scheduled, w.oldest_available_at,"
            " coalesce(r.running, 0) as running, coalesce(f.failed, 0) as failed"
            f" from {s}._job_queues q cross join lateral ("
            "  select count(*) filter (where run_at <= now()) as available,"
            "  count(*) filter (where run_at > now()) as scheduled,"
            "  min(run_at) filter (where run_at <= now()) as oldest_available_at from ("
            f"   select run_at from {s}._jobs j where j.queue_id = q.id and j.is_available"
            # in the claim index's order, so that it is read rather than the table
            f"   and j.queue_id is not null order by j.priority, j.run_at {capped}) ready) w"
            f" left join (select queue_id, count(*) as running from {s}._jobs"
            "  where locked_at is not null group by queue_id) r on r.queue_id = q.id"
            f" left join (select queue_id, count(*) as failed from {s}._jobs"
            "  where locked_at is null and attempts >= max_attempts group by queue_id) f"
            " on f.queue_id = q.id"
            " order by w.available + w.scheduled + coalesce(r.running, 0) desc, q.queue_name"
            " limit 200"
        ),
        # Jobs with no queue: the same figures, from the unqueued claim index.
        "unqueued": (
            "select null::text as queue_name, null::int as max_running, false as paused,"
            " count(*) filter (where run_at <= now()) as available,"
            " count(*) filter (where run_at > now()) as scheduled,"
            " min(run_at) filter (where run_at <= now()) as oldest_available_at,"
            f" (select count(*) from {s}._jobs where queue_id is null"
            "  and locked_at is not null) as running,"
            f" (select count(*) from {s}._jobs where queue_id is null and locked_at is null"
            "  and attempts >= max_attempts) as failed"
            f" from (select run_at from {s}._jobs where queue_id is null and is_available"
            f" order by priority, run_at {capped}) ready"
        ),
        # One row a minute over the last hour, empty minutes included.
        "throughput": (
            "select m.minute, coalesce(t.completed, 0) as completed,"
            " coalesce(t.failed, 0) as failed from generate_series("
            " date_trunc('minute', now()) - interval '59 minutes', date_trunc('minute', now()),"
            " interval '1 minute') as m(minute) left join ("
            " select date_trunc('minute', at) as minute, count(*) filter (where ok) as completed,"
            " count(*) filter (where not ok) as failed from ("
            f"  select finished_at as at, true as ok from {s}._finished_jobs"
            "   where finished_at > now() - interval '1 hour' and state = 'completed'"
            f"  union all select updated_at, false from {s}._jobs"
            "   where locked_at is null and attempts >= max_attempts"
            "   and updated_at > now() - interval '1 hour'"
            " ) f group by 1) t on t.minute = m.minute order by m.minute"
        ),
        "workers": (
            "select w.id, w.hostname, w.pid, w.concurrency, w.started_at, w.heartbeat_at,"
            " extract(epoch from w.lease)::float8 as lease_seconds,"
            " w.heartbeat_at + w.lease > now() as alive, l.holder is not null as leader,"
            " cardinality(w.tasks) as tasks"
            f" from {s}._workers w left join {s}._leases l"
            " on l.name = 'maintenance' and l.holder = w.id and l.expires_at > now()"
            " order by w.started_at"
        ),
        "jobs": f"({hot}) union all ({finished}) order by id desc limit %(limit)s",
        "job_ids": (
            f"select id from (({hot}) union all ({finished})) matching"
            " order by id desc limit %(limit)s"
        ),
        "job": f"select * from {s}._all_jobs where id = %s",
        # The tasks to suggest in the filter: what workers serve, and the commonest ones
        # the planner's statistics know of (no scan of the table).
        "tasks": (
            f"select distinct unnest(tasks) as task_identifier from {s}._workers"
            " union select unnest(most_common_vals::text::text[]) from pg_stats"
            f" where schemaname = '{validate_schema(schema)}' and tablename = '_jobs'"
            " and attname = 'task_identifier' order by 1 limit 200"
        ),
        "cron": (
            "select identifier, pattern, task, known_since, last_execution"
            f" from {s}._known_crontabs order by identifier"
        ),
    }


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_before: int | None


class EngineReads:
    """The engine's side of the dashboard (works without the jobs service's tables)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._q = _sql(client.schema)

    async def _dicts(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        return await _dicts(self.client, query, params)

    async def queues(self) -> list[dict[str, Any]]:
        """Named queues by how busy they are, then the jobs with no queue (if any)."""
        unqueued = await self._dicts(self._q["unqueued"])
        busy = [
            row
            for row in unqueued
            if any(row[k] for k in ("available", "scheduled", "running", "failed"))
        ]
        return await self._dicts(self._q["queues"]) + busy

    async def throughput(self) -> list[dict[str, Any]]:
        return await self._dicts(self._q["throughput"])

    async def workers(self) -> list[dict[str, Any]]:
        return await self._dicts(self._q["workers"])

    async def cron(self) -> list[dict[str, Any]]:
        """Each cron item, with its next tick (UTC) when its pattern is known."""
        now = datetime.now(UTC)
        items = await self._dicts(self._q["cron"])
        for item in items:
            pattern = item["pattern"]
            item["next_tick"] = croniter(pattern, now).get_next(datetime) if pattern else None
        return items

    async def task_names(self) -> list[str]:
        return [row["task_identifier"] for row in await self._dicts(self._q["tasks"])]

    async def jobs(self, where: JobFilter) -> Page:
        async with self.client.pool.connection() as conn:
            cur = await conn.cursor(row_factory=Job.row_factory).execute(
                self._q["jobs"],
                where.params(PAGE_SIZE + 1),
            )
            jobs: list[Job] = await cur.fetchall()
        more = len(jobs) > PAGE_SIZE
        return Page(jobs[:PAGE_SIZE], jobs[PAGE_SIZE - 1].id if more else None)

    async def matching_ids(self, where: JobFilter) -> list[int]:
        """Every job the filter matches, up to COUNT_CAP (what a bulk action acts on)."""
        rows = await self._dicts(self._q["job_ids"], where.params(COUNT_CAP))
        return [int(row["id"]) for row in rows]

    async def job(self, job_id: int) -> Job | None:
        async with self.client.pool.connection() as conn:
            cur = await conn.cursor(row_factory=Job.row_factory).execute(
                self._q["job"],
                (job_id,),
            )
            job: Job | None = await cur.fetchone()
        return job


async def _dicts(client: Client, query: str, params: Any) -> list[dict[str, Any]]:
    async with client.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows: list[dict[str, Any]] = await cur.fetchall()
    return rows


def age(since: datetime | None, now: datetime) -> str:
    """How long ago, briefly: 4s, 3m, 2h, 5d."""
    if since is None:
        return ""
    seconds = max(int((now - since).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class RunFilter:
    environment_id: str | None = None
    job: str | None = None
    status: str | None = None
    before: str | None = None  # a run id: runs created before it

    def query(self, **changes: Any) -> dict[str, str]:
        values = {"job": self.job, "status": self.status, "before": self.before}
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in (None, "")}


@cache
def _service_sql(schema: str) -> dict[str, str]:
    s = f'"{validate_schema(schema)}"'
    env = "(%(env)s::text is null or {col} = %(env)s)"
    return {
        "environments": (
            "select e.id, e.slug, e.type, p.slug as project, o.slug as organization"
            f" from {s}.runtime_environments e join {s}.projects p on p.id = e.project_id"
            f" join {s}.organizations o on o.id = e.organization_id"
            f" where {env.format(col='e.id')} order by o.slug, p.slug, e.slug"
        ),
        "endpoints": (
            "select en.id, en.environment_id, en.slug, en.url, en.indexed_at"
            f" from {s}.endpoints en where {env.format(col='en.environment_id')}"
            " order by en.slug"
        ),
        "versions": (
            "select v.endpoint_id, j.slug as job, v.version, v.event_names, v.enabled,"
            " v.registered_at, v.environment_id,"
            " coalesce(v.metadata->'trigger'->>'type', 'static') as trigger"
            f" from {s}.job_versions v join {s}.job_definitions j on j.id = v.job_id"
            f" where {env.format(col='v.environment_id')} order by j.slug, v.registered_at desc"
        ),
        "runs": (
            "select r.id, j.slug as job, r.number, r.status, r.is_test, r.created_at,"
            " r.completed_at, r.execution_count, r.environment_id"
            f" from {s}.job_runs r join {s}.job_definitions j on j.id = r.job_id"
            f" where {env.format(col='r.environment_id')}"
            " and (%(job)s::text is null or j.slug = %(job)s)"
            " and (%(status)s::text is null or r.status = %(status)s)"
            " and (%(before)s::text is null or (r.created_at, r.id) < ("
            f"  select c.created_at, c.id from {s}.job_runs c where c.id = %(before)s))"
            " order by r.created_at desc, r.id desc limit %(limit)s"
        ),
        "run_environment": f"select environment_id from {s}.job_runs where id = %s",
        # Scheduled jobs, with their next tick (the run_at of their pending tick job).
        "schedules": (
            "select j.slug as job, v.version, sc.kind, sc.expression, sc.active, sc.last_tick,"
            " (select t.run_at from " + s + "._jobs t where t.key = 'schedule:' || sc.id)"
            " as next_tick"
            f" from {s}.schedules sc join {s}.job_versions v on v.id = sc.version_id"
            f" join {s}.job_definitions j on j.id = v.job_id"
            f" where sc.active and {env.format(col='v.environment_id')} order by j.slug"
        ),
        "subscriptions": (
            "select url, event, recipient_method, delivered_at, created_at"
            f" from {s}.run_subscriptions where run_id = %s order by created_at"
        ),
        "tasks": (
            "select id, parent_id, display_key, name, status, attempts, started_at,"
            f" completed_at, noop from {s}.tasks where run_id = %s order by position limit 2000"
        ),
        "testable": (
            "select distinct on (v.environment_id, j.slug) j.slug as job, v.environment_id,"
            " o.slug || '/' || p.slug || '/' || e.slug as environment, v.version,"
            " v.metadata->'event'->'examples'->0->'payload' as example"
            f" from {s}.job_versions v join {s}.job_definitions j on j.id = v.job_id"
            f" join {s}.runtime_environments e on e.id = v.environment_id"
            f" join {s}.projects p on p.id = e.project_id"
            f" join {s}.organizations o on o.id = e.organization_id"
            f" where v.enabled and {env.format(col='v.environment_id')}"
            " and coalesce(v.metadata->'trigger'->>'type', 'static') <> 'scheduled'"
            " order by v.environment_id, j.slug, v.registered_at desc"
        ),
    }


class ServiceReads:
    """The jobs service's side of the dashboard, scoped to one environment (`env`) or all."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._q = _service_sql(client.schema)

    async def _dicts(self, name: str, params: Any) -> list[dict[str, Any]]:
        return await _dicts(self.client, self._q[name], params)

    async def environments(self, env: str | None) -> list[dict[str, Any]]:
        return await self._dicts("environments", {"env": env})

    async def endpoints(self, env: str | None) -> list[dict[str, Any]]:
        return await self._dicts("endpoints", {"env": env})

    async def versions(self, env: str | None) -> list[dict[str, Any]]:
        return await self._dicts("versions", {"env": env})

    async def testable(self, env: str | None) -> list[dict[str, Any]]:
        return await self._dicts("testable", {"env": env})

    async def runs(self, where: RunFilter) -> tuple[list[dict[str, Any]], str | None]:
        params = {
            "env": where.environment_id,
            "job": where.job,
            "status": where.status,
            "before": where.before,
            "limit": PAGE_SIZE + 1,
        }
        runs = await self._dicts("runs", params)
        more = len(runs) > PAGE_SIZE
        return runs[:PAGE_SIZE], runs[PAGE_SIZE - 1]["id"] if more else None

    async def schedules(self, env: str | None) -> list[dict[str, Any]]:
        return await self._dicts("schedules", {"env": env})

    async def run_environment(self, run_id: str) -> str | None:
        rows = await self._dicts("run_environment", (run_id,))
        return str(rows[0]["environment_id"]) if rows else None

    async def subscriptions(self, run_id: str) -> list[dict[str, Any]]:
        return await self._dicts("subscriptions", (run_id,))

    async def tasks(self, run_id: str) -> list[dict[str, Any]]:
        return await self._dicts("tasks", (run_id,))
