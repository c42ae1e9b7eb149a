"""Enqueue from Python: defaults, validation, transactions and wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from kongflow import Client, InvalidJobError, JobSpec
from kongflow.engine.metrics import Metrics
from kongflow.engine.migrate import channels
from tests.support.helpers import count_jobs


async def test_defaults(client: Client) -> None:
    before = datetime.now(UTC)
    job = await client.add_job("send_email")
    assert job.task_identifier == "send_email"
    assert job.payload == {}
    assert (job.priority, job.attempts, job.max_attempts) == (0, 0, 25)
    assert job.queue_name is None and job.key is None and job.flags == []
    assert job.state == "available"
    assert before - timedelta(seconds=5) < job.run_at < datetime.now(UTC) + timedelta(seconds=5)


async def test_all_options_are_stored(client: Client) -> None:
    run_at = datetime.now(UTC) + timedelta(hours=1)
    job = await client.add_job(
        "t",
        {"nested": {"list": [1, "two", None]}},
        queue_name="mail",
        run_at=run_at,
        max_attempts=3,
        priority=-5,
        flags=["slow", "gpu"],
    )
    assert job.payload == {"nested": {"list": [1, "two", None]}}
    assert (job.queue_name, job.run_at, job.max_attempts, job.priority) == ("mail", run_at, 3, -5)
    assert job.flags == ["gpu", "slow"]
    assert job.state == "scheduled"


BAD_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("identifier", {"identifier": ""}),
    ("identifier", {"identifier": 42}),
    ("payload", {"payload": {"when": object()}}),
    ("payload", {"payload": float("nan")}),
    ("queue_name", {"queue_name": ""}),
    ("run_at", {"run_at": datetime(2030, 1, 1)}),
    ("run_at", {"run_at": "tomorrow"}),
    ("max_attempts", {"max_attempts": 0}),
    ("max_attempts", {"max_attempts": 40000}),
    ("max_attempts", {"max_attempts": True}),
    ("job_key", {"job_key": ""}),
    ("job_key", {"job_key": "k" * 513}),
    ("job_key_mode", {"job_key": "k", "job_key_mode": "merge"}),
    ("job_key_mode", {"job_key_mode": None}),
    ("priority", {"priority": 2**31}),
    ("flags", {"flags": "single-string"}),
    ("flags", {"flags": ["ok", ""]}),
]


@pytest.mark.parametrize(("argument", "kwargs"), BAD_CALLS)
async def test_bad_input_names_the_argument_and_writes_nothing(
    client: Client, argument: str, kwargs: dict[str, Any]
) -> None:
    call = {"identifier": "t", **kwargs}
    identifier = call.pop("identifier")
    with pytest.raises(InvalidJobError) as info:
        await client.add_job(identifier, **call)
    assert info.value.argument == argument
    assert argument in str(info.value)
    assert await count_jobs(client) == 0


async def test_bad_input_leaves_the_callers_transaction_usable(
    client: Client, aconn: psycopg.AsyncConnection[Any]
) -> None:
    async with aconn.transaction():
        await client.add_job("t", {"n": 1}, conn=aconn)
        with pytest.raises(InvalidJobError):
            await client.add_job("t", max_attempts=0, conn=aconn)
        await client.add_job("t", {"n": 2}, conn=aconn)
    assert await count_jobs(client) == 2


async def _listen(database_url: str, channel: str) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    await conn.execute(f'listen "{channel}"')  # type: ignore[arg-type]
    return conn


async def _notifications(conn: psycopg.AsyncConnection[Any], wait: float) -> list[str]:
    received: list[str] = []

    async def collect() -> None:
        async for notify in conn.notifies():
            received.append(notify.payload)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(collect(), wait)
    return received


async def test_async_transaction_commit_and_rollback(
    client: Client, aconn: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    listener = await _listen(database_url, channels(client.schema)["jobs"])
    try:
        async with aconn.transaction():
            kept = await client.add_job("t", {"kept": True}, conn=aconn)
            assert await client.get_job(kept.id) is None  # not visible outside before commit
            assert await _notifications(listener, 0.3) == []  # nobody woken before commit
        assert await client.get_job(kept.id) is not None
        assert len(await _notifications(listener, 1.0)) == 1

        class Abort(Exception):
            pass

        async def add_then_abort() -> int:
            async with aconn.transaction():
                job = await client.add_job("t", {"kept": False}, conn=aconn)
                raise Abort(job.id)

        with pytest.raises(Abort) as aborted:
            await add_then_abort()
        (dropped_id,) = aborted.value.args
        assert await client.get_job(dropped_id) is None
        assert await _notifications(listener, 0.3) == []
    finally:
        await listener.close()


async def test_sync_connection_commit_and_rollback(client: Client, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        kept = await client.add_job("t", {"sync": 1}, conn=conn)
        conn.commit()
        dropped = await client.add_job("t", {"sync": 2}, conn=conn)
        conn.rollback()
    assert await client.get_job(kept.id) is not None
    assert await client.get_job(dropped.id) is None


async def test_one_notification_per_transaction_and_none_for_future_jobs(
    client: Client, aconn: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    listener = await _listen(database_url, channels(client.schema)["jobs"])
    try:
        async with aconn.transaction():
            for n in range(20):
                await client.add_job("t", {"n": n}, conn=aconn)
        assert len(await _notifications(listener, 0.5)) == 1

        await client.add_job("t", run_at=datetime.now(UTC) + timedelta(hours=1))
        assert await _notifications(listener, 0.3) == []
    finally:
        await listener.close()


async def test_add_jobs_inserts_in_order_with_one_notification(
    client: Client, database_url: str
) -> None:
    listener = await _listen(database_url, channels(client.schema)["jobs"])
    try:
        jobs = await client.add_jobs(
            [JobSpec("t", {"n": n}, queue_name=f"q{n % 3}", priority=n % 2) for n in range(500)]
        )
        assert [j.payload["n"] for j in jobs] == list(range(500))
        assert {j.queue_name for j in jobs} == {"q0", "q1", "q2"}
        assert len(await _notifications(listener, 0.5)) == 1
    finally:
        await listener.close()


async def test_add_jobs_with_keys(client: Client) -> None:
    existing = await client.add_job("t", [0], job_key="a", run_at=datetime(2030, 1, 1, tzinfo=UTC))
    jobs = await client.add_jobs(
        [
            JobSpec("t", [1], job_key="a"),
            JobSpec("t", {"x": 1}, job_key="b"),
            JobSpec("t", [2], job_key="a"),
            JobSpec("t", {"x": 2}, job_key="b"),
            JobSpec("t", {"plain": True}),
        ],
        job_key_preserve_run_at=True,
    )
    by_key = {j.key: j for j in jobs}
    assert len(jobs) == 3
    assert by_key["a"].id == existing.id
    assert by_key["a"].payload == [0, 1, 2]  # arrays concatenated in call order
    assert by_key["a"].run_at == existing.run_at  # preserved: attempts was 0
    assert by_key["b"].payload == {"x": 2}  # last spec for a key wins
    assert await count_jobs(client) == 3


async def test_add_jobs_fast_counts_what_add_jobs_would_return(
    client: Client, database_url: str
) -> None:
    metrics = Metrics()
    async with Client(database_url, schema=client.schema, metrics=metrics) as counted:
        added = await counted.add_jobs_fast(
            [JobSpec("t", [1], job_key="k"), JobSpec("t", [2], job_key="k")]
            + [JobSpec("u", {"n": n}, queue_name="q") for n in range(10)]
        )
        assert added == 11  # the two keyed specs are one job
        assert await counted.add_jobs_fast([]) == 0
    assert await count_jobs(client) == 11
    job = await client.get_job((await client.list_jobs(task="t"))[0].id)
    assert job is not None and job.payload == [1, 2]
    assert (
        metrics.registry.get_sample_value(
            "kongflow_jobs_enqueued_total", {"task": "u", "queue": "q"}
        )
        == 10
    )
    with pytest.raises(InvalidJobError, match=r"specs\[0\]\.identifier"):
        await client.add_jobs_fast([JobSpec("")])


async def test_add_jobs_fast_copies_a_batch_without_keys(
    client: Client, database_url: str, aconn: psycopg.AsyncConnection[object]
) -> None:
    listener = await _listen(database_url, channels(client.schema)["jobs"])
    later = datetime(2031, 1, 1, tzinfo=UTC)
    try:
        added = await client.add_jobs_fast(
            [
                JobSpec("t", {"n": 1}, queue_name="q1", priority=-1, flags=["a", "b"]),
                JobSpec("t", None, queue_name="q2", run_at=later, max_attempts=2),
                JobSpec("u", [1, 2]),
            ]
        )
        assert added == 3
        assert len(await _notifications(listener, 0.5)) == 1
    finally:
        await listener.close()
    jobs = {j.task_identifier + str(j.queue_name): j for j in await client.list_jobs()}
    q1, q2, u = jobs["tq1"], jobs["tq2"], jobs["uNone"]
    assert (q1.payload, q1.priority, q1.flags, q1.max_attempts) == ({"n": 1}, -1, ["a", "b"], 25)
    assert (q2.payload, q2.run_at, q2.max_attempts, q2.state) == ({}, later, 2, "scheduled")
    assert (u.payload, u.queue_name, u.state) == ([1, 2], None, "available")
    async with aconn.transaction(force_rollback=True):  # joins the caller's transaction
        await client.add_jobs_fast([JobSpec("v", {})], conn=aconn)
        assert await client.add_jobs_fast([JobSpec("v", {})], conn=aconn) == 1
    assert await count_jobs(client) == 3
    with pytest.raises(InvalidJobError, match=r"specs\[1\]\.payload"):
        await client.add_jobs_fast([JobSpec("t"), JobSpec("t", {"x": float("nan")})])
    with pytest.raises(InvalidJobError, match=r"specs\[2\]\.max_attempts"):
        await client.add_jobs_fast([JobSpec("t"), JobSpec("t"), JobSpec("t", max_attempts=0)])
    with pytest.raises(TypeError, match=r"specs\[1\] must be a JobSpec"):
        await client.add_jobs_fast([JobSpec("t"), {"identifier": "t"}])  # type: ignore[list-item]
    assert await count_jobs(client) == 3


async def test_add_jobs_replaces_a_running_holder(client: Client) -> None:
    from tests.support.helpers import mark_running

    holder = await client.add_job("t", job_key="k")
    await mark_running(client, holder.id)
    (fresh,) = await client.add_jobs([JobSpec("t", job_key="k")])
    assert fresh.id != holder.id
    old = await client.get_job(holder.id)
    assert old is not None and old.key is None and old.attempts == old.max_attempts


async def test_add_jobs_bad_spec_names_its_index(client: Client) -> None:
    specs = [JobSpec("t"), JobSpec("t"), JobSpec("t", max_attempts=0)]
    with pytest.raises(InvalidJobError, match=r"specs\[2\]\.max_attempts"):
        await client.add_jobs(specs)
    with pytest.raises(InvalidJobError, match=r"specs\[1\]\.payload"):
        await client.add_jobs([JobSpec("t"), JobSpec("t", {"bad": {1, 2}})])
    with pytest.raises(TypeError, match=r"specs\[0\]"):
        await client.add_jobs([{"identifier": "t"}])  # type: ignore[list-item]
    assert await count_jobs(client) == 0


async def test_add_jobs_joins_the_callers_transaction(
    client: Client, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await aconn.execute("begin")
    await client.add_jobs([JobSpec("t") for _ in range(10)], conn=aconn)
    await aconn.rollback()
    assert await count_jobs(client) == 0


async def test_bulk_enqueue_of_100k_jobs_in_one_call(client: Client) -> None:
    jobs = await client.add_jobs(JobSpec("bulk", {"i": i}) for i in range(100_000))
    assert len(jobs) == 100_000
    assert await count_jobs(client, "task_identifier = 'bulk'") == 100_000
    assert jobs[-1].payload == {"i": 99_999}


async def test_copied_text_keeps_backslashes_tabs_and_line_breaks(client: Client) -> None:
    payload = {"s": 'a\\b\n\tc "q" é', "k\\": ["\r"]}
    assert await client.add_jobs_fast([JobSpec("t\tx\\y", payload), JobSpec("plain", {})]) == 2
    jobs = {j.task_identifier: j for j in await client.list_jobs()}
    assert jobs["t\tx\\y"].payload == payload
    assert jobs["plain"].payload == {}


async def test_a_payload_that_contains_itself_is_refused_by_name(client: Client) -> None:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(InvalidJobError, match="payload") as info:
        await client.add_job("t", looped)
    assert "refers to itself" in str(info.value)
    with pytest.raises(InvalidJobError, match=r"specs\[1\]\.payload"):
        await client.add_jobs_fast([JobSpec("t"), JobSpec("t", [looped])])
    assert await count_jobs(client) == 0


# Text PostgreSQL cannot store (NUL, lone surrogates), and names beyond what it can index.
UNSTORABLE: list[tuple[str, dict[str, Any]]] = [
    ("identifier", {"identifier": "send\x00mail"}),
    ("identifier", {"identifier": "t" * 513}),
    ("identifier", {"identifier": "t\ud800"}),
    ("payload", {"payload": {"to": "ada\x00@example.com"}}),
    ("payload", {"payload": {"nested": [{"k\x00": 1}]}}),
    ("payload", {"payload": ["\udfff"]}),
    ("queue_name", {"queue_name": "mail\x00"}),
    ("queue_name", {"queue_name": "q" * 513}),
    ("job_key", {"job_key": "key\x00"}),
    ("job_key", {"job_key": "k" * 513}),
    ("flags", {"flags": ["ok", "fl\x00ag"]}),
]
ENQUEUE_CALLS = ["add_job", "add_jobs", "add_jobs_fast"]


async def _enqueue(client: Client, call: str, spec: dict[str, Any], conn: Any = None) -> None:
    options = dict(spec)
    identifier = options.pop("identifier", "t")
    if call == "add_job":
        await client.add_job(identifier, conn=conn, **options)
    elif call == "add_jobs":
        await client.add_jobs([JobSpec("t"), JobSpec(identifier, **options)], conn=conn)
    else:
        await client.add_jobs_fast([JobSpec("t"), JobSpec(identifier, **options)], conn=conn)


@pytest.mark.parametrize("call", ENQUEUE_CALLS)
@pytest.mark.parametrize(("argument", "spec"), UNSTORABLE)
async def test_unstorable_text_and_overlong_names_are_refused_before_sending(
    client: Client,
    aconn: psycopg.AsyncConnection[Any],
    call: str,
    argument: str,
    spec: dict[str, Any],
) -> None:
    """The same error from every enqueue call, naming the argument (and the spec in a batch),
    raised before anything is sent: nothing is written and the caller's transaction lives on."""
    async with aconn.transaction():
        await client.add_job("t", {"n": 1}, conn=aconn)
        with pytest.raises(InvalidJobError) as info:
            await _enqueue(client, call, spec, conn=aconn)
        where = "" if call == "add_job" else "specs[1]."
        assert info.value.argument == where + argument
        await client.add_job("t", {"n": 2}, conn=aconn)
    assert await count_jobs(client) == 2
    with pytest.raises(InvalidJobError) as info:  # and on the client's own connections
        await _enqueue(client, call, spec)
    assert info.value.argument.endswith(argument)
    assert await count_jobs(client) == 2


@pytest.mark.parametrize("call", ENQUEUE_CALLS)
async def test_text_that_only_looks_like_an_escape_is_stored(client: Client, call: str) -> None:
    """An escaped backslash before `u0000`, and a surrogate pair (an emoji), are fine text."""
    payload = {"path": "C:\\u0000\\x", "emoji": "\U0001f600", "k\\ud800": "\\udfff"}
    longest = "q" * 512
    await _enqueue(client, call, {"payload": payload, "queue_name": longest, "job_key": "k" * 512})
    (job,) = [j for j in await client.list_jobs() if j.queue_name == longest]
    assert job.payload == payload


async def test_queue_control_refuses_unstorable_names(client: Client) -> None:
    for name in ("q\x00", "q" * 513):
        with pytest.raises(InvalidJobError, match="queue_name"):
            await client.pause_queue(name)
        with pytest.raises(InvalidJobError, match="queue_name"):
            await client.resume_queue(name)
    with pytest.raises(InvalidJobError, match="job_key"):
        await client.remove_job("k\x00")


async def test_add_job_call_enqueues_in_a_statement_of_ones_own_only_for_its_rows(
    client: Client,
) -> None:
    s = f'"{client.schema}"'
    call, params = client.add_job_call("welcome", {"user": 1}, queue_name="mail", priority=3)
    statement = (
        f"with signup as (insert into {s}.signups (email) values (%(email)s)"
        f" on conflict do nothing returning email) select {call} from signup"
    )
    async with client.pool.connection() as conn:
        await conn.execute(f"create table {s}.signups (email text primary key)")  # type: ignore[arg-type]
        await conn.execute(statement, params | {"email": "ada@example.com"})  # type: ignore[arg-type]
        await conn.execute(statement, params | {"email": "ada@example.com"})  # type: ignore[arg-type]
    jobs = await client.list_jobs()
    assert [(j.task_identifier, j.payload, j.queue_name, j.priority) for j in jobs] == [
        ("welcome", {"user": 1}, "mail", 3)
    ]
    with pytest.raises(InvalidJobError, match="priority"):
        client.add_job_call("welcome", priority=2**40)
