"""The benchmark's endpoint, in a process of its own: `bench-plain` (no io) and `bench-steps`
(three io.run_task steps), served on 127.0.0.1.

    KONGFLOW_API_KEY=... KONGFLOW_API_URL=http://127.0.0.1:8030 python benchmarks/endpoint.py PORT
"""

from __future__ import annotations

import os
import sys
from typing import Any

import uvicorn

from kongflow.sdk import IO, Context, Endpoint, event_trigger

ENDPOINT_ID = "bench-app"


def bench_endpoint(api_key: str, api_url: str) -> Endpoint:
    endpoint = Endpoint(id=ENDPOINT_ID, api_key=api_key, api_url=api_url)

    @endpoint.job(id="bench-plain", name="Plain", version="1", trigger=event_trigger("bench.plain"))
    async def plain(payload: Any, io: IO, ctx: Context) -> dict[str, Any]:
        return {"ok": True}

    @endpoint.job(id="bench-steps", name="Steps", version="1", trigger=event_trigger("bench.steps"))
    async def steps(payload: Any, io: IO, ctx: Context) -> dict[str, Any]:
        total = 0
        for n in (1, 2, 3):

            async def step(task: Any, n: int = n) -> int:
                return n

            total += await io.run_task(f"step-{n}", step)
        return {"total": total}

    return endpoint


if __name__ == "__main__":
    app = bench_endpoint(os.environ["KONGFLOW_API_KEY"], os.environ["KONGFLOW_API_URL"]).app
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
