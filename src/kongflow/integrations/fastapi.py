"""kongflow in a FastAPI app: a lifespan that opens the client with the app (migrating the schema,
and running a worker in the same process if given tasks), and a dependency that hands routes the
client.

    from kongflow.integrations.fastapi import KongflowClient, kongflow_lifespan

    app = FastAPI(lifespan=kongflow_lifespan(tasks={"email.send": send_email}))

    @app.post("/signup")
    async def signup(client: KongflowClient) -> dict[str, int]:
        job = await client.add_job("email.send", {"to": "a@b.c"})
        return {"job": job.id}
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from kongflow.engine.client import Client
from kongflow.engine.tasks import Handler, Task
from kongflow.engine.worker import Worker

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def kongflow_lifespan(
    database: str | None = None,
    *,
    schema: str | None = None,
    tasks: Mapping[str, Handler | Task] | None = None,
    migrate: bool = True,
    **worker_options: Any,
) -> Lifespan:
    """The app's lifespan: a `Client` on `database` (DATABASE_URL, or the embedded server, by
    default) open while the app runs, as `app.state.kongflow`; with `tasks`, a `Worker` for
    them too (`worker_options` as Worker takes them), stopped gracefully with the app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Client(database, schema=schema) as client:
            if migrate:
                await client.migrate()
            app.state.kongflow = client
            if not tasks:
                yield
                return
            async with Worker(client.pool, tasks, schema=client.schema, **worker_options) as worker:
                app.state.kongflow_worker = worker
                yield

    return lifespan


def _client(request: Request) -> Client:
    client: Client | None = getattr(request.app.state, "kongflow", None)
    if client is None:
        raise RuntimeError("kongflow's client is not open: give the app kongflow_lifespan(...)")
    return client


#: A route parameter that receives the app's open client.
KongflowClient = Annotated[Client, Depends(_client)]
