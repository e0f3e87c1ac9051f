"""The project's images (worker, operator) in a real node's containerd, without a registry.

Images are built by the hack scripts with a local Docker engine (`docker.docker_engine`),
saved once per content tag as an archive under $VIDEOQUEUE_CACHE/images, and imported with
`ctr -n k8s.io images import`. A warm run asks the build script for the content tag (no
Docker involved) and finds the image already in the node's cached image store
(`realnode.claim_image_store`), or the archive to import.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from videoqueue.envtest.binaries import default_cache_dir
from videoqueue.envtest.docker import docker_engine
from videoqueue.envtest.realnode import Ctr


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class ImportedImage:
    tag: str
    archive: Path
    seconds: dict[str, float]  # build (0 when cached), import


def _script(repo: Path, name: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(repo / "hack" / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise ImageError(f"hack/{name} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class ImageRecipe:
    """A hack script that builds an image and, with --print-tag, names its content tag."""

    script: str
    name: str  # the content tag's repository: videoqueue-worker, videoqueue-operator


WORKER = ImageRecipe("docker-build-worker.sh", "videoqueue-worker")
OPERATOR = ImageRecipe("docker-build-operator.sh", "videoqueue-operator")


def image_tag(repo: Path, recipe: ImageRecipe) -> str:
    """`<name>:<content key>` of the checkout `repo`, without building it."""
    return _script(repo, recipe.script, "--print-tag")


def image_archive(
    repo: Path, recipe: ImageRecipe, cache: Path | None = None
) -> tuple[str, Path, float]:
    """The image of `repo` as a docker-archive file: (tag, path, seconds spent building, 0
    when the archive was cached)."""
    cache = cache or default_cache_dir()
    tag = image_tag(repo, recipe)
    directory = cache / "images"
    archive = directory / f"{tag.replace(':', '-')}.tar"
    if archive.exists():
        return tag, archive, 0.0
    begin = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    with docker_engine(cache) as env:
        _script(repo, recipe.script, env=env)
        partial = archive.with_suffix(".partial")
        done = subprocess.run(
            ["docker", "save", "-o", str(partial), tag],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise ImageError(f"docker save {tag}: {done.stderr.strip()}")
        partial.rename(archive)
    # Archives of older builds would pile up.
    for old in directory.glob(f"{recipe.name}-*.tar"):
        if old != archive:
            old.unlink(missing_ok=True)
    return tag, archive, time.monotonic() - begin


def import_image(
    ctr: Ctr, repo: Path, recipe: ImageRecipe, cache: Path | None = None
) -> ImportedImage:
    """Build (or find) an image of `repo` and import it into a real node's containerd.

    Pods name it by the returned tag with `imagePullPolicy: Never` (or IfNotPresent)."""
    tag, archive, built = image_archive(repo, recipe, cache)
    begin = time.monotonic()
    name = f"docker.io/library/{tag}"
    present = ctr.images()
    if name not in present:
        ctr.import_archive(archive)
    # Older builds in a cached image store would pile up.
    for old in present:
        if old.startswith(f"docker.io/library/{recipe.name}:") and old != name:
            ctr.run("images", "remove", old, check=False)
    return ImportedImage(tag, archive, {"build": built, "import": time.monotonic() - begin})


def import_worker_image(ctr: Ctr, repo: Path, cache: Path | None = None) -> ImportedImage:
    """The worker image of `repo` in a real node's containerd (see `import_image`)."""
    return import_image(ctr, repo, WORKER, cache)


def import_operator_image(ctr: Ctr, repo: Path, cache: Path | None = None) -> ImportedImage:
    """The operator image of `repo` in a real node's containerd (see `import_image`)."""
    return import_image(ctr, repo, OPERATOR, cache)
