"""kongflow in the shared peer harness (../shared/bench/peers, `common.py`'s adapter shape), so
it is measured in the same run, on the same PostgreSQL, as the peer queues:

    EXTRA_PEERS="kongflow=$PWD/.venv/bin/python=$PWD/benchmarks/peers/bench_kongflow.py" \\
        bash /work/shared/bench/peers/run_all.sh

Durability is the engine's default: logged tables, synchronous commit, leases and fencing on.
The worker runs in the harness's process, set up as `kongflow worker` sets up its own (the
startup heap frozen out of the garbage collector's full passes once the worker has started).
"""

from __future__ import annotations

import gc
import os
import sys
from importlib.metadata import version
from typing import Any, ClassVar

sys.path.insert(0, os.environ.get("PEER_HARNESS_DIR", "/work/shared/bench/peers"))
import common  # type: ignore[import-not-found]
import psycopg

from kongflow import Client, JobSpec, RunningJob, Worker
from kongflow.cli.common import freeze_startup_heap


async def noop(payload: Any, job: RunningJob) -> None:
    common.on_job(payload)


class Peer:
    name = "kongflow"
    version = version("kongflow")
    # concurrency = jobs in flight in one worker process (claims are batched to free slots)
    configs: ClassVar[list[dict[str, int]]] = [
        {"concurrency": 10},
        {"concurrency": 1000},
        {"concurrency": 2000},
    ]
    latency_cfg: ClassVar[dict[str, int]] = {"concurrency": 10}

    async def open(self, url: str, install: bool = True, cfg: Any = None) -> dict[str, Any]:
        client = Client(url, migrate=install, max_connections=4)
        await client.open()
        # One connection for single enqueues, as the other adapters use (autocommit: each
        # add_job is its own transaction).
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        return {"url": url, "client": client, "conn": conn}

    async def close(self, ctx: dict[str, Any]) -> None:
        await ctx["conn"].close()
        await ctx["client"].close()

    async def enqueue_one(self, ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        await ctx["client"].add_job("noop", payload, conn=ctx["conn"])

    async def enqueue_batch(self, ctx: dict[str, Any], payloads: list[dict[str, Any]]) -> None:
        await ctx["client"].add_jobs_fast([JobSpec("noop", p) for p in payloads])

    async def pending(self, ctx: dict[str, Any]) -> int:
        return await self._count(ctx, "select count(*) from kongflow._jobs")

    async def finished(self, ctx: dict[str, Any]) -> int:
        return await self._count(
            ctx, "select count(*) from kongflow._finished_jobs where state = 'completed'"
        )

    async def start_worker(self, ctx: dict[str, Any], cfg: dict[str, Any]) -> Worker:
        worker = Worker(ctx["url"], {"noop": noop}, concurrency=cfg["concurrency"], migrate=False)
        await worker.start()
        freeze_startup_heap()
        return worker

    async def stop_worker(self, ctx: dict[str, Any], handle: Worker) -> None:
        await handle.stop()
        gc.unfreeze()  # this process runs many workers in turn: let the stopped one be collected

    async def _count(self, ctx: dict[str, Any], sql: str) -> int:
        async with ctx["client"].pool.connection() as conn:
            cur = await conn.execute(sql)
            row = await cur.fetchone()
        return int(row[0])


if __name__ == "__main__":
    common.main(Peer(), os.path.abspath(__file__))
