"""Task identity, as trigger.dev's Node SDK computes it, so that a Python job and a Node job
agree: a task's idempotency key is the SHA-256 (hex) of its run, its parent task and its cache
key joined with ":", the parts that are not strings written as JSON with sorted keys
(stableStringify), exactly as JavaScript writes it."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from pydantic_core import to_jsonable_python

#: A task's cache key: a string, or a list of parts (strings, or anything JSON can write).
CacheKey = str | Sequence[Any]


def _js_number(value: float) -> str:
    """A number as JavaScript writes it (Number::toString: shortest round-trip digits; the
    exponent form only below 1e-6 and from 1e21)."""
    if math.isnan(value) or math.isinf(value):
        return "null"  # as JSON.stringify writes them
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + exponent  # where the decimal point goes, from the first digit
    digits = digits.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        text = digits + "0" * (point - count)
    elif 0 < point <= 21:
        text = f"{digits[:point]}.{digits[point:]}"
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        power = point - 1
        mantissa = digits[0] + (f".{digits[1:]}" if count > 1 else "")
        text = f"{mantissa}e{'+' if power >= 0 else '-'}{abs(power)}"
    return f"-{text}" if sign else text


def _is_array_index(key: str) -> bool:
    return key.isascii() and key.isdigit() and str(int(key)) == key and int(key) < 2**32 - 1


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _js_key_order(keys: Iterable[str]) -> list[str]:
    """stableStringify's order: JavaScript lists integer-like keys first, ascending, then the
    others as sorted (by UTF-16 code units)."""
    keys = list(keys)
    indexes = sorted((k for k in keys if _is_array_index(k)), key=int)
    names = sorted((k for k in keys if not _is_array_index(k)), key=_utf16)
    return indexes + names


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_js_number(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, dict):
        items = {js_string(k): v for k, v in value.items()}
        out.append("{")
        for i, key in enumerate(_js_key_order(items)):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _write(items[key], out)
        out.append("}")
    else:
        _write(to_jsonable_python(value, by_alias=True), out)


def stable_stringify(value: Any) -> str:
    """trigger.dev's stableStringify: JSON with every object's keys sorted."""
    out: list[str] = []
    _write(value, out)
    return "".join(out)


def js_string(value: Any) -> str:
    """String(value) for what a cache key holds (Array.join's view of its parts)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else _js_number(value)
    if isinstance(value, list | tuple):
        return ",".join(js_string(item) for item in value)
    return "[object Object]"


def key_parts(cache_key: CacheKey) -> list[Any]:
    if isinstance(cache_key, str):
        return [cache_key]
    if isinstance(cache_key, bytes | bytearray) or not isinstance(cache_key, Sequence):
        raise TypeError(f"a cache key is a str or a list, not {type(cache_key).__name__}")
    return list(cache_key)


def display_key(cache_key: CacheKey) -> str:
    """The cache key as a name (parts joined with "-", as trigger.dev names them)."""
    if isinstance(cache_key, str):
        return cache_key
    return "-".join(js_string(part) for part in key_parts(cache_key))


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: U+FFFD, as Node's Buffer.from writes it
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def idempotency_key(run_id: str, parent_id: str | None, cache_key: CacheKey) -> str:
    """trigger.dev's generateIdempotencyKey([runId, parentId ?? "", cacheKey].flat())."""
    parts = [run_id, parent_id or "", *key_parts(cache_key)]
    material = ":".join(p if isinstance(p, str) else stable_stringify(p) for p in parts)
    return hashlib.sha256(_utf8(material)).hexdigest()
