"""What `Client` (async) and `SyncClient` share: their settings, the statements of their schema,
and how a statement's rows become its answer (counted in metrics when it enqueued)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from kongflow.engine.migrate import ENGINE_COMPONENT
from kongflow.engine.models import JobKeyMode
from kongflow.engine.statements import Statement, Statements
from kongflow.settings import env_schema, validate_schema

if TYPE_CHECKING:  # prometheus_client loads only where metrics are used
    from kongflow.engine.metrics import Metrics

P = TypeVar("P")
T = TypeVar("T")


class ClientBase(Generic[P]):
    """A handle on one kongflow schema (by default KONGFLOW_SCHEMA, else "kongflow") over a
    pool of type P (given, or opened by the client). Behind a transaction-mode pooler
    (PgBouncer), open it with `prepared_statements=False`."""

    _how_to_open = "open it first"

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str | None = None,
        pool: P | None = None,
        max_connections: int = 10,
        migrate: bool = True,
        metrics: Metrics | None = None,
        components: Sequence[tuple[str, str]] = (ENGINE_COMPONENT,),
        prepared_statements: bool = True,
    ) -> None:
        self.schema = env_schema() if schema is None else validate_schema(schema)
        self._database_url = database_url
        self._pool = pool
        self._owns_pool = pool is None
        self._max_connections = max_connections
        self._migrate = migrate
        self._components = list(components)
        self._metrics = metrics
        self._statements = Statements(self.schema)
        self._prepared_statements = prepared_statements

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    @property
    def pool(self) -> P:
        if self._pool is None:
            raise RuntimeError(f"the client is not open: {self._how_to_open}")
        return self._pool

    def add_job_call(
        self,
        identifier: str,
        payload: Any = None,
        *,
        queue_name: str | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        job_key: str | None = None,
        job_key_mode: JobKeyMode = "replace",
        priority: int | None = None,
        flags: Sequence[str] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """`add_job` as an SQL expression and its parameters, checked as `add_job` checks
        them, to enqueue inside a statement of one's own (`select <call> from <the rows it is
        for>`, so that it runs only if they are there): one round trip where a transaction
        would take four. The parameters are named as add_job's arguments (identifier,
        payload, queue_name, ...): keep the statement's own apart. Such jobs are not counted
        by the client's enqueue metrics, nor traced."""
        params = self._statements.add_job_params(
            identifier,
            payload,
            queue_name,
            run_at,
            max_attempts,
            job_key,
            job_key_mode,
            priority,
            flags,
            None,
        )
        return self._statements.sql.add_job_call, params

    def _answer(self, statement: Statement[T], rows: list[Any]) -> T:
        if self._metrics is not None and statement.enqueued is not None:
            self._metrics.record_enqueued_counts(statement.enqueued(rows))
        return statement.answer(rows)
