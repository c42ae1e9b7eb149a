"""The environment's key-value store (trigger.dev's io.store / client.store), as its SDK
calls it: `/api/v1/store/{key}` with GET, HEAD, PUT (the value as text) and DELETE."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from kongflow.api.deps import Env, Jobs
from kongflow.api.errors import AUTHED, documented
from kongflow.api.inputs import MAX_ID_LENGTH
from kongflow.api.responses import DeletedValue, StoredValue
from kongflow.service.store import MAX_VALUE_BYTES

router = APIRouter(prefix="/api/v1/store", tags=["store"])


def _checked(key: str) -> str:
    if not key or len(key) > MAX_ID_LENGTH or "\x00" in key:
        raise HTTPException(400, f"a store key has 1 to {MAX_ID_LENGTH} characters, none NUL")
    return key


@router.get("/{key:path}", responses=documented(*AUTHED))
async def get_value(key: str, env: Env, jobs: Jobs) -> StoredValue:
    return StoredValue(action="GET", key=key, value=await jobs.store.get(env, _checked(key)))


@router.head(
    "/{key:path}",
    responses=documented(*AUTHED, 404) | {200: {"description": "the key is stored"}},
)
async def has_value(key: str, env: Env, jobs: Jobs) -> Response:
    found = await jobs.store.get(env, _checked(key)) is not None
    return Response(status_code=200 if found else 404)


@router.put("/{key:path}", responses=documented(*AUTHED, 413))
async def set_value(key: str, request: Request, env: Env, jobs: Jobs) -> StoredValue:
    """The body is the value, as text (the SDK sends its JSON)."""
    raw = await request.body()
    if len(raw) > MAX_VALUE_BYTES:
        raise HTTPException(413, f"a stored value is at most {MAX_VALUE_BYTES // 1024} KiB")
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "a stored value is UTF-8 text") from None
    if "\x00" in value:
        raise HTTPException(400, "a stored value cannot contain NUL characters")
    await jobs.store.set(env, _checked(key), value)
    return StoredValue(action="SET", key=key, value=value)


@router.delete("/{key:path}", responses=documented(*AUTHED))
async def delete_value(key: str, env: Env, jobs: Jobs) -> DeletedValue:
    return DeletedValue(key=key, deleted=await jobs.store.delete(env, _checked(key)))
