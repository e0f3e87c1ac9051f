"""Dependency cycles (see videoqueue.scheduling.dependencies)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videoqueue.scheduling import describe_cycle, find_cycle

Graph = Mapping[str, Sequence[str]]


def edges(graph: Graph) -> Callable[[str], Sequence[str]]:
    """`depends_on` for `graph`; a name that is not in it is a job that does not exist."""
    return lambda name: graph.get(name, ())


@pytest.mark.parametrize(
    ("graph", "start", "expected"),
    [
        pytest.param({}, "a", None, id="no-such-job"),
        pytest.param({"a": []}, "a", None, id="no-dependencies"),
        pytest.param({"a": ["b"]}, "a", None, id="dependency-missing"),
        pytest.param({"a": ["b"], "b": ["c"], "c": []}, "a", None, id="chain"),
        pytest.param({"a": ["b", "c"], "b": ["d"], "c": ["d"]}, "a", None, id="diamond"),
        pytest.param({"a": ["a"]}, "a", ("a",), id="self"),
        pytest.param({"a": ["b"], "b": ["a"]}, "a", ("a", "b"), id="pair"),
        pytest.param({"a": ["b"], "b": ["a"]}, "b", ("b", "a"), id="pair-from-the-other-end"),
        pytest.param({"a": ["b"], "b": ["c"], "c": ["a"]}, "a", ("a", "b", "c"), id="triangle"),
        pytest.param(
            {"a": ["b"], "b": ["c"], "c": ["b"]},
            "a",
            None,
            id="depends-on-a-cycle-but-not-on-it",
        ),
        pytest.param(
            {"a": ["b"], "b": ["c"], "c": ["b"]}, "b", ("b", "c"), id="on-the-cycle-below"
        ),
        pytest.param(
            {"a": ["long", "short"], "long": ["x"], "x": ["a"], "short": ["a"]},
            "a",
            ("a", "short"),
            id="shortest-cycle-wins",
        ),
        pytest.param(
            {"a": ["b", "c"], "b": ["a"], "c": ["a"]},
            "a",
            ("a", "b"),
            id="first-in-order-among-equals",
        ),
    ],
)
def test_find_cycle(graph: Graph, start: str, expected: tuple[str, ...] | None) -> None:
    assert find_cycle(start, edges(graph)) == expected


def test_search_is_bounded() -> None:
    # a -> 1 -> 2 -> ... -> 99 -> a: a cycle, but further than the search may look.
    chain = {"a": ["1"], **{str(i): [str(i + 1)] for i in range(1, 99)}, "99": ["a"]}
    asked: list[str] = []

    def depends_on(name: str) -> Sequence[str]:
        asked.append(name)
        return chain.get(name, ())

    assert find_cycle("a", depends_on, max_visited=10) is None
    assert len(asked) <= 10
    assert find_cycle("a", edges(chain), max_visited=100) == ("a", *map(str, range(1, 100)))


def test_each_job_is_asked_once() -> None:
    graph = {"a": ["b", "c"], "b": ["c", "d"], "c": ["d"], "d": ["b"]}
    asked: list[str] = []

    def depends_on(name: str) -> Sequence[str]:
        asked.append(name)
        return graph.get(name, ())

    assert find_cycle("a", depends_on) is None
    assert sorted(asked) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("cycle", "text"),
    [
        pytest.param(("a",), "a -> a", id="self"),
        pytest.param(("a", "b"), "a -> b -> a", id="pair"),
        pytest.param(
            tuple("abcdefghij"),
            "a -> b -> c -> d -> e -> f -> g -> h -> ... (2 more) -> a",
            id="long-cycle-shortened",
        ),
    ],
)
def test_describe_cycle(cycle: tuple[str, ...], text: str) -> None:
    assert describe_cycle(cycle) == text


# -- property: agrees with a brute force on random graphs ---------------------------------

NODES = "abcdef"
graphs = st.dictionaries(
    st.sampled_from(NODES), st.lists(st.sampled_from(NODES + "xy"), max_size=4, unique=True)
)


def shortest_cycle_length(graph: Graph, start: str) -> int | None:
    """Length of the shortest cycle through `start`, by trying every simple path."""
    best: int | None = None

    def walk(path: list[str]) -> None:
        nonlocal best
        for nxt in graph.get(path[-1], ()):
            if nxt == start:
                best = len(path) if best is None else min(best, len(path))
            elif nxt not in path:
                walk([*path, nxt])

    walk([start])
    return best


@settings(max_examples=500, deadline=None)
@given(graph=graphs, start=st.sampled_from(NODES))
def test_finder_agrees_with_brute_force(graph: Graph, start: str) -> None:
    cycle = find_cycle(start, edges(graph))

    expected = shortest_cycle_length(graph, start)
    if expected is None:
        assert cycle is None
        return
    assert cycle is not None
    assert len(cycle) == expected
    assert cycle[0] == start
    assert len(set(cycle)) == len(cycle)  # a simple cycle
    for job, dependency in zip(cycle, (*cycle[1:], start), strict=True):
        assert dependency in graph.get(job, ())
