"""Stand-ins for the official base images, built from Debian packages (no registry here).

`ensure_standin_images()` makes `python:3.11-slim`, `redis:7-alpine` and
`nginx:1.27-alpine` exist in the local Docker engine, built as
tests/standin_images/README.md says. Each step is skipped when its result is already
there and was made from the same inputs (a label holds their digest), so only the first
run on a machine pays for debootstrap.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .common import REPO_ROOT, require_tool

RECIPES = REPO_ROOT / "tests" / "standin_images"
DEFAULT_CACHE = Path("/var/cache/sse-hub-tests")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
DIGEST_LABEL = "org.sse-hub.standin-digest"
BUILD_TIMEOUT = 900.0


@dataclass(frozen=True)
class StandIn:
    name: str
    recipe: str
    suite: str


STAND_INS = (
    StandIn("python:3.11-slim", "python.Dockerfile", "bookworm"),
    StandIn("redis:7-alpine", "redis.Dockerfile", "bookworm"),
    StandIn("nginx:1.27-alpine", "nginx.Dockerfile", "sid"),
)


def cache_dir() -> Path:
    return Path(os.environ.get("HUB_TESTS_CACHE", str(DEFAULT_CACHE)))


def debian_mirror(sources_dir: Path = Path("/etc/apt/sources.list.d")) -> str:
    """The Debian mirror apt uses on this host (deb822 sources), else deb.debian.org."""
    for path in sorted(sources_dir.glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:"):
                for uri in line.split()[1:]:
                    if uri.rstrip("/").endswith("/debian"):
                        return uri.rstrip("/")
    return DEFAULT_MIRROR


def _run(command: Sequence[str], *, input_path: Path | None = None) -> str:
    stdin = input_path.open("rb") if input_path is not None else subprocess.DEVNULL
    try:
        result = subprocess.run(
            command, stdin=stdin, capture_output=True, text=True, timeout=BUILD_TIMEOUT
        )
    finally:
        if input_path is not None:
            stdin.close()  # type: ignore[union-attr]
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(command[:3])} … failed ({result.returncode}):\n{tail}")
    return result.stdout


def _image_label(docker: str, image: str) -> str | None:
    """The image's digest label, or None when the image is not there."""
    result = subprocess.run(
        [docker, "image", "inspect", "-f", f'{{{{index .Config.Labels "{DIGEST_LABEL}"}}}}', image],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _image_id(docker: str, image: str) -> str:
    return _run([docker, "image", "inspect", "-f", "{{.Id}}", image]).strip()


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(hashlib.sha256(part).digest())
    return hasher.hexdigest()[:32]


def _rootfs_image(docker: str, suite: str, mirror: str, cache: Path) -> str:
    """`sse-hub-standin/rootfs:<suite>`: debootstrap's tree, imported (tarball cached)."""
    image = f"sse-hub-standin/rootfs:{suite}"
    digest = _digest(suite.encode(), mirror.encode())
    if _image_label(docker, image) == digest:
        return image
    tarball = cache / f"{suite}-minbase-{digest}.tar"
    if not tarball.exists():
        debootstrap = require_tool("debootstrap")
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            tree = Path(scratch) / "rootfs"
            _run([debootstrap, "--variant=minbase", suite, str(tree), mirror])
            partial = tarball.with_suffix(".partial")
            _run(["tar", "-C", str(tree), "--numeric-owner", "-cf", str(partial), "."])
            partial.rename(tarball)
    _run(
        [docker, "import", "--change", f"LABEL {DIGEST_LABEL}={digest}", "-", image],
        input_path=tarball,
    )
    return image


def _build(
    docker: str,
    image: str,
    dockerfile: Path,
    digest: str,
    *,
    context: Path,
    build_args: Sequence[str] = (),
) -> None:
    if _image_label(docker, image) == digest:
        return
    command = [
        docker,
        "build",
        "-q",
        "--force-rm",
        "-t",
        image,
        "--label",
        f"{DIGEST_LABEL}={digest}",
        "-f",
        str(dockerfile),
    ]
    for arg in build_args:
        command += ["--build-arg", arg]
    _run([*command, str(context)])


def _base_image(docker: str, suite: str, mirror: str, cache: Path) -> str:
    """`sse-hub-standin/debian:<suite>`: the tree plus the host's certificate authorities."""
    rootfs = _rootfs_image(docker, suite, mirror, cache)
    image = f"sse-hub-standin/debian:{suite}"
    recipe = RECIPES / "base.Dockerfile"
    certificates = sorted(HOST_CA_DIR.glob("*.crt")) if HOST_CA_DIR.is_dir() else []
    digest = _digest(
        _image_id(docker, rootfs).encode(),
        recipe.read_bytes(),
        *(path.name.encode() + path.read_bytes() for path in certificates),
    )
    with tempfile.TemporaryDirectory() as scratch:
        context = Path(scratch)
        (context / "host-ca").mkdir()
        for path in certificates:
            shutil.copy(path, context / "host-ca" / path.name)
        _build(docker, image, recipe, digest, context=context, build_args=[f"ROOTFS={rootfs}"])
    return image


def ensure_standin_images() -> list[str]:
    """Build whatever stand-in is missing or stale; returns the stand-ins' names."""
    docker = require_tool("docker")
    cache = cache_dir()
    mirror = debian_mirror()
    bases = {
        suite: _base_image(docker, suite, mirror, cache)
        for suite in sorted({stand_in.suite for stand_in in STAND_INS})
    }
    for stand_in in STAND_INS:
        recipe = RECIPES / stand_in.recipe
        digest = _digest(_image_id(docker, bases[stand_in.suite]).encode(), recipe.read_bytes())
        _build(docker, stand_in.name, recipe, digest, context=RECIPES)
    return [stand_in.name for stand_in in STAND_INS]
