"""A FastAPI app with kongflow: a sign-up and its welcome email commit in one transaction, and a
worker in the app's process sends the email.

    DATABASE_URL=postgresql://... uvicorn app:app    # without DATABASE_URL: the embedded server
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from kongflow import RunningJob, Task
from kongflow.integrations.fastapi import KongflowClient, kongflow_lifespan


class SignUp(BaseModel):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)


async def send_welcome(payload: dict[str, Any], job: RunningJob) -> dict[str, str]:
    # A real app would call its mail provider here; a failure is retried with backoff.
    return {"sent_to": payload["email"]}


tasks = {"email.welcome": Task(send_welcome, timeout=30)}
app = FastAPI(title="sign-ups", lifespan=kongflow_lifespan(tasks=tasks))


@app.post("/signups", status_code=201)
async def sign_up(body: SignUp, client: KongflowClient) -> dict[str, int]:
    async with client.pool.connection() as conn, conn.transaction():
        await conn.execute("create table if not exists signups (id serial primary key, email text)")
        cur = await conn.execute(
            "insert into signups (email) values (%s) returning id", (body.email,)
        )
        row = await cur.fetchone()
        assert row is not None
        job = await client.add_job("email.welcome", {"email": body.email}, conn=conn)
    return {"signup": row[0], "job": job.id}


@app.get("/jobs/{job_id}")
async def job_state(job_id: int, client: KongflowClient) -> dict[str, Any]:
    job = await client.get_job(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return {"state": job.state, "result": job.result, "attempts": job.attempts}
