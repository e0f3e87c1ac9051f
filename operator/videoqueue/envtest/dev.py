"""`python -m videoqueue.envtest.dev`: the sample queue and jobs of `make dev`.

On a cluster with a real node, the samples do real work: short inputs generated with
ffmpeg's lavfi under `<media>/in`, the queue of `examples/dev/` with its workers on the real
node (the checkout's worker image, `<media>` mounted at /media), and its jobs, whose outputs
land in `<media>/out`. Without a real node (`make dev` not run as root) the samples are those
of `examples/local/`, whose pods KWOK plays with scripted results.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from videoqueue.envtest.binaries import find_binaries
from videoqueue.envtest.images import WORKER, image_tag
from videoqueue.envtest.realnode import REAL_NODE_LABEL, REAL_NODE_LABEL_VALUE

WORKER_UID = 10001  # the worker image's USER, who writes the outputs

# name -> (seconds, size): long enough to show progress, short enough for a first output
# within seconds of the worker starting.
SAMPLE_INPUTS = {"news.mp4": (8, "1280x720"), "promo.mp4": (12, "640x360")}


def make_samples(media: Path) -> list[Path]:
    """The inputs under `media/in` (kept when present), and `media/out` for the outputs,
    writable by the worker's user."""
    (media / "in").mkdir(parents=True, exist_ok=True)
    (media / "out").mkdir(parents=True, exist_ok=True)
    for directory in (media, media / "in", media / "out"):
        directory.chmod(0o755)
    subprocess.run(["chown", f"{WORKER_UID}:{WORKER_UID}", str(media / "out")], check=True)
    made = []
    for name, (seconds, size) in SAMPLE_INPUTS.items():
        path = media / "in" / name
        if not path.exists():
            partial = path.with_suffix(".partial.mp4")
            subprocess.run(
                [
                    "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
                    "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-b:a", "96k", "-t", str(seconds), str(partial),
                ],
                check=True,
            )  # fmt: skip
            partial.rename(path)
        made.append(path)
    return made


def real_node_queue(queue: dict[str, Any], media: Path, image: str) -> dict[str, Any]:
    """`queue` (examples/dev/queue.yaml) with `media` as its /media volume and `image` as its
    worker's image."""
    spec = queue["spec"]["template"]["spec"]
    (volume,) = (v for v in spec["volumes"] if v["name"] == "media")
    volume["hostPath"]["path"] = str(media.resolve())
    (worker,) = (c for c in spec["containers"] if c["name"] == "worker")
    worker["image"] = image
    return queue


def apply(kubeconfig: Path, documents: list[dict[str, Any]]) -> None:
    kubectl = find_binaries()["kubectl"]
    subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), "apply", "--server-side", "-f", "-"],
        input=yaml.safe_dump_all(documents).encode(),
        check=True,
    )


def has_real_node(kubeconfig: Path) -> bool:
    kubectl = find_binaries()["kubectl"]
    selector = f"{REAL_NODE_LABEL}={REAL_NODE_LABEL_VALUE}"
    done = subprocess.run(
        [
            str(kubectl),
            "--kubeconfig",
            str(kubeconfig),
            "get",
            "nodes",
            "-l",
            selector,
            "-o",
            "name",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return bool(done.stdout.strip())


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m videoqueue.envtest.dev", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the checkout")
    parser.add_argument("--media", type=Path, help="real node: inputs and outputs here")
    args = parser.parse_args(argv)
    repo: Path = args.repo.resolve()
    if args.media is not None and not has_real_node(args.kubeconfig):
        print("make dev: the cluster has no real node: KWOK plays the pods", file=sys.stderr)
        args.media = None
    if args.media is None:
        apply(args.kubeconfig, load(repo / "examples/local/queue.yaml"))
        apply(args.kubeconfig, load(repo / "examples/local/jobs.yaml"))
        return 0
    media: Path = args.media.resolve()
    make_samples(media)
    (queue,) = load(repo / "examples/dev/queue.yaml")
    apply(args.kubeconfig, [real_node_queue(queue, media, image_tag(repo, WORKER))])
    apply(args.kubeconfig, load(repo / "examples/dev/jobs.yaml"))
    print(f"sample inputs in {media / 'in'}; the jobs write to {media / 'out'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
