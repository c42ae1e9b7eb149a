"""LISTEN on a dedicated connection, reconnecting with backoff when the connection drops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql


async def listen(
    conninfo: str,
    connect_kwargs: Mapping[str, Any],
    channels: Sequence[str],
    on_notify: Callable[[str, str], None],
    on_connected: Callable[[], None],
    on_error: Callable[[BaseException, str], None],
) -> None:
    """Runs until cancelled. `on_connected` fires after every (re)connection, since
    notifications sent while disconnected are lost and the caller should look for work."""
    delay = 0.1
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo, **connect_kwargs, autocommit=True
            ) as conn:
                for channel in channels:
                    await conn.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
                delay = 0.1
                on_connected()
                async for notify in conn.notifies():
                    on_notify(notify.channel, notify.payload)
        except psycopg.OperationalError as exc:
            on_error(exc, "listening for notifications (reconnecting)")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
