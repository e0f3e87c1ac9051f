"""The sharding simulation's harness: how each round's processes are started and reported."""

from __future__ import annotations

from benchmarks.scale.shards import Round, shard_args, table


def test_one_process_runs_unsharded_and_several_each_get_their_shard() -> None:
    assert shard_args(0, 1) == ["--standalone", "--no-fencing"]
    assert [shard_args(i, 2)[-2:] for i in range(2)] == [["--shard", "0/2"], ["--shard", "1/2"]]


def test_the_table_has_a_row_per_round_and_shows_missing_figures_as_dashes() -> None:
    done = Round(2, 400, 40, done=400, wall_seconds=10.0, jobs_per_second=40.0)
    done.component_cpu_seconds = {"kube-apiserver": 12.5, "etcd": 3.0, "harness": 2.0}
    unfinished = Round(4, 400, 40)
    lines = table([done, unfinished]).splitlines()
    assert lines[2].split()[:5] == ["2", "400", "400", "10.0", "40.0"]
    assert "12.5" in lines[2]
    assert lines[3].split()[:4] == ["4", "400", "0", "-"]
