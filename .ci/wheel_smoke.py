"""The wheel as a user gets it, core only, in a virtualenv of its own: import kongflow, enqueue one
job on DATABASE_URL (a schema of its own, dropped after), run it with a worker, and check that a
part left out of the core says which extra to install. Run by .ci/run with that virtualenv's
Python, outside the source tree."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import psycopg

import kongflow
from kongflow import Client, Worker

SCHEMA = "wheel_smoke"
done = asyncio.Event()


async def handle(payload: dict[str, int], job: kongflow.RunningJob) -> None:
    assert payload == {"n": 1}
    done.set()


async def main(url: str) -> None:
    assert "site-packages" in kongflow.__file__, kongflow.__file__  # the wheel, not the tree
    try:
        async with Client(url, schema=SCHEMA) as client:
            await client.migrate()
            job = await client.add_job("smoke.test", {"n": 1})
            async with Worker(client.pool, {"smoke.test": handle}, schema=SCHEMA):
                await asyncio.wait_for(done.wait(), 30)
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f"drop schema if exists {SCHEMA} cascade")
    print(f"kongflow {kongflow.__version__} from the wheel: job {job.id} enqueued and run")


def extras_are_named() -> None:
    kongflow_cli = Path(sys.executable).with_name("kongflow")
    serve = subprocess.run([kongflow_cli, "serve"], capture_output=True, text=True, timeout=60)
    assert serve.returncode == 1 and "pip install 'kongflow[service]'" in serve.stderr, serve
    print("kongflow serve without the service extra: says `pip install 'kongflow[service]'`")


if __name__ == "__main__":
    asyncio.run(main(os.environ["DATABASE_URL"]))
    extras_are_named()
    sys.exit(0)
