"""Reading the container's peak memory from a fake cgroup tree: where each layout keeps the
file, which one wins, and what is not a number."""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.worker.harness  # noqa: F401  # puts worker-image on sys.path
from videoqueue_worker.cgroup import peak_memory_bytes

# As /proc/self/cgroup reads in each case (the pod paths as a kubelet with cgroupfs makes them).
V1_POD = "/videoqueue-k1/kubepods/burstable/pod1234/c0ffee"
V1_LINES = f"5:devices:{V1_POD}\n4:memory:{V1_POD}\n1:cpu,cpuacct:{V1_POD}\n0::/\n"
V2_POD = "/kubepods.slice/kubepods-pod1234.slice/cri-containerd-c0ffee.scope"


def fake_root(tmp_path: Path, self_cgroup: str | None, files: dict[str, str]) -> Path:
    """A directory standing for /: /proc/self/cgroup and files under /sys/fs/cgroup."""
    if self_cgroup is not None:
        (tmp_path / "proc/self").mkdir(parents=True)
        (tmp_path / "proc/self/cgroup").write_text(self_cgroup)
    for path, text in files.items():
        file = tmp_path / "sys/fs/cgroup" / path.lstrip("/")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("self_cgroup", "files", "expected"),
    [
        pytest.param(
            V1_LINES,
            {f"memory{V1_POD}/memory.max_usage_in_bytes": "104857600\n"},
            104857600,
            id="v1-listed-path",
        ),
        pytest.param(
            V1_LINES,
            {
                f"memory{V1_POD}/memory.max_usage_in_bytes": "104857600\n",
                "memory/memory.max_usage_in_bytes": "999999999\n",
            },
            104857600,
            id="v1-listed-path-before-mount-root",
        ),
        pytest.param(
            V1_LINES,
            {"memory/memory.max_usage_in_bytes": "73400320\n"},
            73400320,
            id="v1-container-sees-its-cgroup-at-the-mount-root",
        ),
        pytest.param(
            "4:memory:/\n0::/\n",
            {"memory/memory.max_usage_in_bytes": "73400320\n"},
            73400320,
            id="v1-cgroup-namespace",
        ),
        pytest.param(
            f"0::{V2_POD}\n",
            {f"{V2_POD}/memory.peak": "52428800\n", "memory.peak": "1\n"},
            52428800,
            id="v2-listed-path",
        ),
        pytest.param(
            "0::/\n",
            {"memory.peak": "52428800\n"},
            52428800,
            id="v2-cgroup-namespace",
        ),
        pytest.param(
            "0::/../../kubepods/other\n",
            # What joining the listed path to the mount point would wrongly reach.
            {"memory.peak": "52428800\n", "../../kubepods/other/memory.peak": "1\n"},
            52428800,
            id="v2-cgroup-outside-the-namespace",
        ),
        pytest.param(
            V1_LINES,
            {
                "memory/memory.max_usage_in_bytes": "73400320\n",
                "memory.peak": "52428800\n",
            },
            73400320,
            id="hybrid-v1-memory-controller-wins",
        ),
        pytest.param(
            V1_LINES,
            {
                f"memory{V1_POD}/memory.max_usage_in_bytes": "not a number\n",
                "memory/memory.max_usage_in_bytes": "73400320\n",
            },
            73400320,
            id="garbage-falls-through-to-the-next-file",
        ),
    ],
)
def test_peak_is_read_from_the_containers_memory_cgroup(
    tmp_path: Path, self_cgroup: str, files: dict[str, str], expected: int
) -> None:
    assert peak_memory_bytes(fake_root(tmp_path, self_cgroup, files)) == expected


@pytest.mark.parametrize(
    ("self_cgroup", "files"),
    [
        pytest.param(None, {"memory/memory.max_usage_in_bytes": "1048576"}, id="no-proc"),
        pytest.param(V1_LINES, {}, id="v1-no-files"),
        pytest.param("0::/\n", {}, id="v2-no-files"),
        pytest.param(
            "1:cpu:/x\n", {"memory/memory.max_usage_in_bytes": "1048576"}, id="no-memory-line"
        ),
        pytest.param(
            V1_LINES, {"memory/memory.max_usage_in_bytes": "12.5e6\n"}, id="v1-not-an-integer"
        ),
        pytest.param("0::/\n", {"memory.peak": ""}, id="v2-empty"),
        pytest.param("0::/\n", {"memory.peak": "-4096\n"}, id="v2-negative"),
        pytest.param("0::/\n", {"memory.peak": "0\n"}, id="v2-zero"),
        pytest.param(
            "0::/\n", {"memory.max_usage_in_bytes": "1048576"}, id="v2-has-no-v1-file-name"
        ),
        pytest.param("garbage\n\n:::\n", {"memory.peak": "1048576"}, id="garbage-proc"),
    ],
)
def test_no_peak_when_no_cgroup_file_says(
    tmp_path: Path, self_cgroup: str | None, files: dict[str, str]
) -> None:
    assert peak_memory_bytes(fake_root(tmp_path, self_cgroup, files)) is None


def test_peak_on_this_machine() -> None:
    """The real files: this machine (and CI) has a v1 memory cgroup for its processes."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    if not any(line.split(":")[1:2] == ["memory"] for line in lines):
        pytest.skip("no cgroup v1 memory controller here")
    peak = peak_memory_bytes()
    assert peak is not None
    assert peak > 1024 * 1024  # at least this Python process
