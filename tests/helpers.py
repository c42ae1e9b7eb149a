"""Helpers shared by the tests."""

from __future__ import annotations

from kongflow import Client


async def mark_running(client: Client, job_id: int, worker: str = "test-worker") -> None:
    """Puts a job in the state a worker's claim leaves it in (locked, attempt counted)."""
    async with client.pool.connection() as conn:
        await conn.execute(
            f'update "{client.schema}"._jobs set locked_at = now(), locked_by = %s,'  # type: ignore[arg-type]
            " attempts = attempts + 1 where id = %s",
            (worker, job_id),
        )


async def count_jobs(client: Client, where: str = "true") -> int:
    async with client.pool.connection() as conn:
        cur = await conn.execute(f'select count(*) from "{client.schema}".jobs where {where}')  # type: ignore[arg-type]
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])
