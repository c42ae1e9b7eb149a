"""The one place pools are built: the client's and the worker's differ only where they mean to."""

from __future__ import annotations

from psycopg.conninfo import make_conninfo

from kongflow.engine.pool import connect_kwargs, open_pool


async def test_worker_sessions_read_times_in_utc_and_client_sessions_keep_the_server_zone(
    database_url: str,
) -> None:
    tokyo = make_conninfo(database_url, options="-c TimeZone=Asia/Tokyo")
    worker = await open_pool(tokyo, purpose="worker", min_size=1, max_size=1, utc_sessions=True)
    client = await open_pool(tokyo, purpose="client", min_size=1, max_size=1)
    try:
        for pool, zone in ((worker, "UTC"), (client, "Asia/Tokyo")):
            async with pool.connection() as conn:
                cur = await conn.execute("show timezone")
                assert await cur.fetchone() == (zone,)
                assert conn.autocommit
        assert (worker.name, client.name) == ("kongflow-worker", "kongflow-client")
        assert worker.timeout == client.timeout == 30.0
    finally:
        await worker.close()
        await client.close()


async def test_a_listening_connection_gets_the_pools_arguments_but_autocommit(
    database_url: str,
) -> None:
    pool = await open_pool(database_url, purpose="t", min_size=1, max_size=1, timeout=5)
    try:
        assert pool.timeout == 5
        assert connect_kwargs(pool) == {}
    finally:
        await pool.close()
