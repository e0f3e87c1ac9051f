"""Dependencies between jobs: finding a cycle, which would keep its jobs waiting forever.

Jobs name the jobs they wait for in `spec.dependsOn`. A job that depends, directly or
through others, on itself can never start: each job of the cycle waits for the next one to
succeed. `find_cycle` finds such a cycle through a given job, so that every job on it can be
failed with a message naming the whole cycle. Jobs that merely depend on a cycle are not on
it: they fail in turn once a job of the cycle has failed (DependencyFailed).

Pure: the graph is read through a function, one job at a time, and the walk is bounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

MAX_VISITED: Final = 10_000
"""Most jobs one search looks at; beyond it `find_cycle` gives up and reports no cycle."""


def find_cycle(
    start: str,
    depends_on: Callable[[str], Sequence[str]],
    *,
    max_visited: int = MAX_VISITED,
) -> tuple[str, ...] | None:
    """A shortest dependency cycle through `start`, or None when there is none.

    `depends_on(name)` gives the names job `name` depends on (its spec.dependsOn; empty for
    a job that does not exist). The cycle is returned starting with `start`, each job
    followed by the one it depends on, the last depending on `start` again:
    `("a", "b")` for a -> b -> a, `("a",)` for a job that depends on itself. Among cycles of
    the same length, the one found first in `depends_on`'s order wins (deterministic).

    The search is breadth-first and looks at no more than `max_visited` jobs (each of them
    asked for its dependencies once); past that, None.
    """
    parent: dict[str, str | None] = {start: None}
    frontier: deque[str] = deque([start])
    while frontier:
        name = frontier.popleft()
        for dependency in depends_on(name):
            if dependency == start:
                return _path_to(name, parent)
            if dependency in parent:
                continue
            if len(parent) >= max_visited:
                return None
            parent[dependency] = name
            frontier.append(dependency)
    return None


def _path_to(name: str, parent: dict[str, str | None]) -> tuple[str, ...]:
    path: list[str] = []
    current: str | None = name
    while current is not None:
        path.append(current)
        current = parent[current]
    return tuple(reversed(path))


def describe_cycle(cycle: Sequence[str], *, shown: int = 8) -> str:
    """`a -> b -> a` for the cycle ("a", "b"); of a longer cycle than `shown` jobs, the first
    `shown` and how many more: `a -> b -> ... (10 more) -> a`."""
    if not cycle:
        return ""
    names = list(cycle[:shown])
    if len(cycle) > shown:
        names.append(f"... ({len(cycle) - shown} more)")
    return " -> ".join([*names, cycle[0]])
