"""SQLAlchemy: a job enqueued through a session's psycopg connection commits or rolls back with
the session's rows, sync (SyncClient, Session) and async (Client, AsyncSession)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import Engine, Integer, MetaData, create_engine, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from kongflow import Client, SyncClient
from kongflow.integrations.sqlalchemy import async_psycopg_connection, psycopg_connection

ORDERS = "kf_sqlalchemy_orders"


class Base(DeclarativeBase):
    metadata = MetaData()


class Order(Base):
    __tablename__ = ORDERS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)


def _url(database_url: str) -> str:
    return database_url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def engine(database_url: str, schema: str) -> Iterator[Engine]:
    engine = create_engine(_url(database_url), connect_args={"options": f"-c search_path={schema}"})
    with engine.begin() as conn:
        conn.execute(text(f"create schema if not exists {schema}"))
        Base.metadata.create_all(conn)
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(
    engine: Engine, database_url: str, schema: str
) -> AsyncIterator[AsyncEngine]:
    async_engine = create_async_engine(
        _url(database_url), connect_args={"options": f"-c search_path={schema}"}
    )
    yield async_engine
    await async_engine.dispose()


def test_a_sessions_job_commits_or_rolls_back_with_its_rows(
    engine: Engine, database_url: str, schema: str
) -> None:
    with SyncClient(database_url, schema=schema) as client:
        with Session(engine) as session, session.begin():
            session.add(Order(id=1))
            kept = client.add_job("orders.charge", {"order": 1}, conn=psycopg_connection(session))
        with (
            pytest.raises(RuntimeError, match="declined"),
            Session(engine) as session,
            session.begin(),
        ):
            session.add(Order(id=2))
            client.add_job("orders.charge", {"order": 2}, conn=psycopg_connection(session))
            raise RuntimeError("card declined")
        with engine.connect() as conn:  # a Connection works as well
            client.add_job("orders.audit", conn=psycopg_connection(conn))
            conn.rollback()
        with engine.connect() as conn:
            client.add_job("orders.audit", conn=psycopg_connection(conn))
            conn.commit()
        assert [j.task_identifier for j in client.list_jobs()] == ["orders.audit", "orders.charge"]
        assert client.get_job(kept.id) is not None
    with Session(engine) as session:
        assert session.scalars(select(Order.id)).all() == [1]


async def test_an_async_sessions_job_commits_or_rolls_back_with_its_rows(
    async_engine: AsyncEngine, database_url: str, schema: str
) -> None:
    async with Client(database_url, schema=schema) as client:
        async with AsyncSession(async_engine) as session, session.begin():
            session.add(Order(id=3))
            conn = await async_psycopg_connection(session)
            await client.add_job("orders.charge", {"order": 3}, conn=conn)
        with pytest.raises(RuntimeError, match="declined"):
            async with AsyncSession(async_engine) as session, session.begin():
                session.add(Order(id=4))
                conn = await async_psycopg_connection(session)
                await client.add_job("orders.charge", {"order": 4}, conn=conn)
                raise RuntimeError("card declined")
        async with async_engine.connect() as connection:
            await client.add_job("orders.audit", conn=await async_psycopg_connection(connection))
            await connection.commit()
        assert sorted(j.task_identifier for j in await client.list_jobs()) == [
            "orders.audit",
            "orders.charge",
        ]
        async with AsyncSession(async_engine) as session:
            assert (await session.scalars(select(Order.id))).all() == [3]


def test_another_driver_is_refused_with_what_to_use() -> None:
    sqlite = create_engine("sqlite://")  # in memory: sqlite3, not psycopg
    with (
        sqlite.connect() as conn,
        pytest.raises(TypeError, match=r"postgresql\+psycopg://.*sqlite\+pysqlite"),
    ):
        psycopg_connection(conn)
    with pytest.raises(TypeError, match="Session or Connection"):
        psycopg_connection(object())  # type: ignore[arg-type]
