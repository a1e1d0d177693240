"""From an archive's metadata to a LoadPlan: which format, which images, checked."""

from __future__ import annotations

from ..errors import ArchiveError
from .docker_archive import MANIFEST, plan_docker_archive
from .model import ArchiveSource, LoadPlan, config_platform, merged
from .oci_layout import INDEX, LAYOUT, plan_oci_layout
from .platform import Platform, host_platform


def plan_archive(src: ArchiveSource, platform: Platform | None = None) -> LoadPlan:
    """The images of a docker-archive (``manifest.json``) or an OCI image layout.

    ``manifest.json`` wins when both are there (Docker 25 writes both; it is
    what ``docker load`` reads).  ``platform`` (None: the host's) picks an
    image of a multi-platform index; given explicitly, every image loaded
    must be of it.
    """
    wanted = platform or host_platform()
    if src.exists(MANIFEST):
        images = plan_docker_archive(src)
        fmt = "docker-archive"
        if platform is not None:
            for image in images:
                found = config_platform(image.config, f"the config of {image.where}")
                if found is not None and not found.matches(platform):
                    raise ArchiveError(f"{image.where} is an image for {found}, not {platform}")
    elif src.exists(INDEX) or src.exists(LAYOUT):
        images = plan_oci_layout(src, wanted, explicit=platform is not None)
        fmt = "oci-layout"
    else:
        raise ArchiveError("not an image archive: no manifest.json (docker save) and no index.json (OCI image layout)")
    if not images:
        raise ArchiveError(f"the archive holds no image ({fmt})")
    return LoadPlan(fmt, merged(images))
