"""The set of no-op tasks a run has already recorded, as the jobs service sends it with each
execution (`noopTasksSet`) and the SDK reads it: trigger.dev's one-hash bloom filter of 32768
bits over the tasks' idempotency keys, base64-encoded, with trigger.dev's 53-bit murmurHash3
variant. A false positive skips a no-op task (a log line), never real work."""

from __future__ import annotations

import base64
from collections.abc import Iterable

#: The filter's size in bits (trigger.dev's BloomFilter.NOOP_TASK_SET_SIZE).
NOOP_TASK_SET_SIZE = 32768

_MASK = 0xFFFFFFFF


def _imul(a: int, b: int) -> int:
    """32-bit multiplication, as JavaScript's Math.imul (kept unsigned here)."""
    return (a * b) & _MASK


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (32 - bits))) & _MASK


def murmur_hash3(text: str, seed: int = 0) -> int:
    """trigger.dev's murmurHash3: two 32-bit lanes over the string's UTF-16 code units,
    combined into a 53-bit integer."""
    units = text.encode("utf-16-le", "surrogatepass")
    h1 = (0xDEADBEEF ^ seed) & _MASK
    h2 = (0x41C6CE57 ^ seed) & _MASK
    for i in range(0, len(units), 2):
        ch = units[i] | (units[i + 1] << 8)
        h1 = _imul(_rotl(_imul(h1 ^ ch, 0xCC9E2D51), 15), 0x1B873593)
        h2 = _imul(_rotl(_imul(h2 ^ ch, 0x85EBCA6B), 13), 0xC2B2AE35)
    length = len(units) // 2
    h1 ^= length
    h2 ^= length
    h1 = _imul(h1 ^ (h1 >> 16), 0x85EBCA6B)
    h1 = _imul(h1 ^ (h1 >> 13), 0xC2B2AE35)
    h1 ^= h1 >> 16
    h2 = _imul(h2 ^ (h2 >> 16), 0x85EBCA6B)
    h2 = _imul(h2 ^ (h2 >> 13), 0xC2B2AE35)
    h2 ^= h2 >> 16
    return 4294967296 * (0x1FFFFF & h2) + h1


class BloomFilter:
    """A set that may answer "present" for an absent item, never "absent" for a present one."""

    def __init__(self, size: int = NOOP_TASK_SET_SIZE) -> None:
        self.size = size
        self.bits = bytearray((size + 7) // 8)

    def _position(self, item: str) -> tuple[int, int]:
        index = murmur_hash3(item) % self.size
        return index // 8, 1 << (index % 8)

    def add(self, item: str) -> None:
        byte, mask = self._position(item)
        self.bits[byte] |= mask

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, str):
            return False
        byte, mask = self._position(item)
        return byte < len(self.bits) and bool(self.bits[byte] & mask)

    def serialize(self) -> str:
        return base64.b64encode(bytes(self.bits)).decode("ascii")

    @classmethod
    def of(cls, items: Iterable[str], size: int = NOOP_TASK_SET_SIZE) -> BloomFilter:
        bloom = cls(size)
        for item in items:
            bloom.add(item)
        return bloom

    @classmethod
    def deserialize(cls, text: str, size: int = NOOP_TASK_SET_SIZE) -> BloomFilter:
        bloom = cls(size)
        bloom.bits = bytearray(base64.b64decode(text))
        return bloom
