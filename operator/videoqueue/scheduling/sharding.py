"""Which shard owns a queue: rendezvous hashing of "namespace/name" over shard names.

Sharding splits the queues between operator processes, each owning a disjoint set
(docs/sharding.md). Everything about one queue (its jobs, its worker pods) goes with the
queue, so a queue's key decides the owner of all of them.

Rendezvous (highest-random-weight) hashing: every shard gives each key a weight, a hash of
the shard's name and the key, and the shard with the highest weight owns the key. Every
process computes the same owner without talking to the others; when a shard goes away only
its own keys move (each to the shard with its next-highest weight), and when one is added
it takes about 1/COUNT of the keys, from every other shard alike. The hash is BLAKE2b of
the UTF-8 text: stable across processes and Python versions (Python's `hash()` of a str is
salted per process, so two processes would disagree).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

SHARD_NAME_PREFIX: Final = "shard-"
_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def queue_key(namespace: str, name: str) -> str:
    """The key a queue is sharded by: "namespace/name" (the index's key of the queue)."""
    return f"{namespace}/{name}"


def shard_name(index: int) -> str:
    """The name of shard `index` that the hash weighs: "shard-0", "shard-1", ..."""
    return f"{SHARD_NAME_PREFIX}{index}"


def weight(shard: str, key: str) -> int:
    """Shard `shard`'s weight for `key`: 64 bits of BLAKE2b over both (a NUL between them, so
    ("a", "b/c") and ("a/b", "c") differ)."""
    digest = hashlib.blake2b(f"{shard}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, shards: Sequence[str]) -> str:
    """The shard of `shards` (names) that owns `key`: the highest weight, the greater name on
    a tie (as good as never, but deterministic). Raises ValueError when `shards` is empty."""
    if not shards:
        raise ValueError(f"no shard to own {key!r}: the list of live shards is empty")
    return max(shards, key=lambda shard: (weight(shard, key), shard))


@lru_cache(maxsize=4096)
def shard_of(key: str, count: int) -> int:
    """The index of the shard that owns `key` among shards 0 .. count-1 (cached: the watch
    streams ask it for every event, and a cluster has few queues)."""
    names = [shard_name(i) for i in range(count)]
    return names.index(owner(key, names))


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (`--shard INDEX/COUNT`): owns the queues whose key's
    `shard_of` is `index`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"the shard count must be at least 1, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard index {self.index} is out of range for {self.count} shards: "
                f"indexes run from 0 to {self.count - 1}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """From "INDEX/COUNT", such as "0/2" (the first of two shards)."""
        match = _SHARD.fullmatch(text)
        if match is None:
            raise ValueError(
                f"expected INDEX/COUNT, such as 0/2 for the first of two shards, not {text!r}"
            )
        return cls(int(match[1]), int(match[2]))

    @property
    def name(self) -> str:
        return shard_name(self.index)

    def owns(self, key: str) -> bool:
        """Whether this shard owns the queue `key` ("namespace/name")."""
        return self.count == 1 or shard_of(key, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
