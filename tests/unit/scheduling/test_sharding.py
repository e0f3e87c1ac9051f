"""Shard assignment: rendezvous hashing of queue keys over shard names."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videoqueue.scheduling.sharding import Shard, owner, queue_key, shard_name, shard_of

PROPERTIES = settings(max_examples=200, deadline=None)
NAMES = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
KEYS = st.builds(queue_key, NAMES, NAMES)
# Laid out like the benchmark's (benchmarks/scale/shards.py): 40 queues in 40 namespaces.
FORTY = [queue_key(f"shards-{i:02d}", "bench") for i in range(40)]


def names(count: int) -> list[str]:
    return [shard_name(i) for i in range(count)]


# -- Shard ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "index", "count"),
    [
        pytest.param("0/1", 0, 1, id="the-only-shard"),
        pytest.param("1/2", 1, 2, id="second-of-two"),
        pytest.param("3/4", 3, 4, id="last-of-four"),
        pytest.param(" 2 / 4 ", 2, 4, id="spaces-around"),
    ],
)
def test_a_shard_is_parsed_from_index_slash_count(text: str, index: int, count: int) -> None:
    assert Shard.parse(text) == Shard(index, count)
    assert str(Shard.parse(text)) == f"{index}/{count}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("2", "expected INDEX/COUNT, such as 0/2", id="no-count"),
        pytest.param("a/b", "expected INDEX/COUNT", id="not-numbers"),
        pytest.param("-1/2", "expected INDEX/COUNT", id="negative"),
        pytest.param("", "expected INDEX/COUNT", id="empty"),
        pytest.param("2/2", "shard index 2 is out of range for 2 shards", id="index-too-high"),
        pytest.param("0/0", "the shard count must be at least 1, not 0", id="no-shards"),
    ],
)
def test_a_malformed_shard_says_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Shard.parse(text)


def test_the_only_shard_owns_everything() -> None:
    assert all(Shard(0, 1).owns(key) for key in FORTY)


@given(KEYS, st.integers(min_value=1, max_value=8))
@PROPERTIES
def test_exactly_one_shard_owns_each_queue(key: str, count: int) -> None:
    owners = [i for i in range(count) if Shard(i, count).owns(key)]
    assert owners == [shard_of(key, count)]


# -- stability --------------------------------------------------------------------------------


def test_the_owner_does_not_depend_on_the_process() -> None:
    """Python's str hash is salted per process; the owner must not be."""
    code = (
        "from videoqueue.scheduling.sharding import shard_of; "
        "print([shard_of(f'shards-{i:02d}/bench', 4) for i in range(40)])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": ":".join(sys.path)},
    )
    assert other.stdout.strip() == str([shard_of(key, 4) for key in FORTY])


def test_known_owners_are_pinned() -> None:
    """A change of hash would move every queue of a running deployment at upgrade."""
    assert [shard_of(key, 4) for key in FORTY[:8]] == PINNED_OWNERS


PINNED_OWNERS = [1, 1, 3, 2, 0, 2, 0, 0]


@given(KEYS, st.permutations(names(5)))
@PROPERTIES
def test_the_owner_does_not_depend_on_the_order_of_the_shards(key: str, order: list[str]) -> None:
    assert owner(key, order) == owner(key, names(5))


def test_no_live_shard_is_an_error() -> None:
    with pytest.raises(ValueError, match="no shard to own 'ns/q'"):
        owner("ns/q", [])


# -- balance ----------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3, 4])
def test_forty_queues_spread_over_every_shard(count: int) -> None:
    """The benchmark's 40 queues: no shard idle, none with more than twice its share."""
    load = Counter(shard_of(key, count) for key in FORTY)
    assert set(load) == set(range(count))
    assert max(load.values()) <= 2 * len(FORTY) / count


@pytest.mark.parametrize("count", [2, 4, 8])
def test_many_queues_spread_evenly(count: int) -> None:
    keys = [queue_key(f"team-{i % 97}", f"queue-{i}") for i in range(20_000)]
    load = Counter(shard_of(key, count) for key in keys)
    share = len(keys) / count
    assert all(abs(n - share) < 0.05 * share for n in load.values()), load


# -- movement ---------------------------------------------------------------------------------


@given(st.lists(KEYS, min_size=1, max_size=60, unique=True), st.integers(2, 6), st.data())
@PROPERTIES
def test_when_a_shard_goes_only_its_queues_move(
    keys: list[str], count: int, data: st.DataObject
) -> None:
    live = names(count)
    gone = data.draw(st.sampled_from(live))
    after = [name for name in live if name != gone]
    for key in keys:
        before = owner(key, live)
        if before != gone:
            assert owner(key, after) == before  # stays where it was
        else:
            assert owner(key, after) != gone


@given(st.lists(KEYS, min_size=1, max_size=60, unique=True), st.integers(1, 6))
@PROPERTIES
def test_a_new_shard_takes_queues_only_for_itself(keys: list[str], count: int) -> None:
    live = names(count)
    grown = names(count + 1)
    for key in keys:
        now = owner(key, grown)
        assert now in (owner(key, live), grown[-1])


def test_removing_one_of_four_shards_moves_a_quarter_of_many_queues() -> None:
    keys = [queue_key(f"team-{i % 97}", f"queue-{i}") for i in range(8_000)]
    live = names(4)
    after = live[:1] + live[2:]  # shard-1 dies
    moved = sum(owner(key, live) != owner(key, after) for key in keys)
    assert moved == sum(owner(key, live) == "shard-1" for key in keys)
    assert abs(moved - len(keys) / 4) < 0.05 * len(keys) / 4
