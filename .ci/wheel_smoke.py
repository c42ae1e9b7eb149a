"""The wheel as a user gets it, in a virtualenv of its own: import kongflow, enqueue one job on a
throwaway embedded PostgreSQL, run it with a worker. Run by .ci/run with that virtualenv's
Python, outside the source tree."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import kongflow
from kongflow import Client, Worker, embedded

done = asyncio.Event()


async def handle(payload: dict[str, int], job: kongflow.RunningJob) -> None:
    assert payload == {"n": 1}
    done.set()


async def main() -> None:
    assert "site-packages" in kongflow.__file__, kongflow.__file__  # the wheel, not the tree
    with tempfile.TemporaryDirectory() as home:
        url = embedded.start_temporary(Path(home) / "pgdata")
        async with Client(url, schema="wheel_smoke") as client:
            await client.migrate()
            job = await client.add_job("smoke.test", {"n": 1})
            async with Worker(client.pool, {"smoke.test": handle}, schema="wheel_smoke"):
                await asyncio.wait_for(done.wait(), 30)
    print(f"kongflow {kongflow.__version__} from the wheel: job {job.id} enqueued and run")


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
