"""build-image: a hermetic image build from a host-built wheelhouse."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import docker
from docker.errors import APIError, DockerException
from docker.errors import BuildError as DockerBuildError
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.service import ServiceSpec
from tasks.core.errors import BuildError
from tasks.core.images import oci_labels, wheelhouse_fingerprint
from tasks.core.models import BuiltImage, utcnow

PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
PYTHON = "3.11"
ATTEMPTS = 3


def ensure_wheelhouse(context: Path, requirements: str) -> Path:
    """Download wheels for the image's platform once; a matching stamp means nothing to do.

    The image build then installs with --no-index: builds are reproducible and
    work where the build sandbox has no network.
    """
    req = context / requirements
    wheelhouse = context / "wheelhouse"
    stamp = wheelhouse / ".fingerprint"
    fingerprint = wheelhouse_fingerprint(req.read_bytes(), PLATFORMS, PYTHON)
    if stamp.exists() and stamp.read_text() == fingerprint:
        return wheelhouse
    wheelhouse.mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--python-version",
        PYTHON,
        "--implementation",
        "cp",
        "-d",
        str(wheelhouse),
        "-r",
        str(req),
    ]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(
            f"could not build the wheelhouse from {req}: {proc.stderr.strip()[-800:]}",
            hint="every requirement needs a binary wheel for manylinux x86_64 / CPython 3.11",
        )
    stamp.write_text(fingerprint)
    return wheelhouse


def git_revision(path: Path) -> str | None:
    proc = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


@task(name="build-image", cache_policy=NO_CACHE)
def build_image(
    service: ServiceSpec, version: str, engine_url: str, revision: str | None = None
) -> BuiltImage:
    logger = get_run_logger()
    started = time.monotonic()
    context = Path(service.build_context)
    if service.requirements:
        ensure_wheelhouse(context, service.requirements)
    labels = oci_labels(service.name, version, revision or git_revision(context), utcnow())
    client = docker.DockerClient(base_url=engine_url, timeout=600)
    tag = f"{service.image_repository}:{version}"
    # Transient engine errors are retried here, inside one task attempt: a failed
    # attempt inside a Prefect transaction would roll the whole release back.
    for attempt in range(1, ATTEMPTS + 1):
        try:
            image, _logs = client.images.build(
                path=str(context),
                dockerfile=service.dockerfile,
                tag=tag,
                buildargs={**service.build_args, "APP_VERSION": version},
                labels=labels,
                pull=False,
                rm=True,
                forcerm=True,
            )
            break
        except DockerBuildError as exc:
            tail = "".join(
                str(c.get("stream", c.get("error", ""))) for c in list(exc.build_log)[-12:]
            )
            raise BuildError(
                f"docker build of {tag} failed: {exc.msg}\n{tail.strip()[-1500:]}"
            ) from exc
        except (APIError, DockerException) as exc:
            if attempt == ATTEMPTS:
                raise BuildError(
                    f"docker build of {tag} failed after {attempt} attempts: {exc}"
                ) from exc
            logger.warning("build attempt %s failed (%s); retrying", attempt, exc)
            time.sleep(2 * attempt)
    built = BuiltImage(
        repository=service.image_repository,
        tag=version,
        image_id=image.id or "",
        labels=labels,
        seconds=round(time.monotonic() - started, 2),
    )
    logger.info("built %s as %s in %.1fs", tag, built.image_id[:19], built.seconds)
    return built
