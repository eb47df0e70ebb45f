"""The upstream files stackgan downloads, and where to fetch them from."""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    """One upstream file: its name on disk, where it lives, and what is known about its content.

    ``md5``/``sha256`` are lower-case hex digests and ``size`` is in bytes; each is ``None``
    when unknown. ``drive_id`` marks a Google Drive file, which needs Drive's confirmation flow.
    """

    name: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    drive_id: str | None = None


def _drive_url(file_id: str) -> str:
    return f"https://drive.google.com/uc?export=download&id={file_id}"


_BIRDS_DRIVE_ID = "0B3y_msrWZaXLT1BZdVdycDY5TEE"
# Google Drive ids from the READMEs of hanzhanggit/StackGAN (flowers) and
# hanzhanggit/StackGAN-Pytorch (COCO: "training coco" and "evaluating coco").
_FLOWERS_DRIVE_ID = "0B3y_msrWZaXLaUc0UXpmcnhaVmM"
_COCO_DRIVE_ID = "0B3y_msrWZaXLQXVzOENCY2E3TlU"
_COCO_TEST_DRIVE_ID = "0B3y_msrWZaXLeEs5MTg0RC1fa0U"

ARTIFACTS: dict[str, Artifact] = {
    artifact.name: artifact
    for artifact in (
        # CUB-200-2011 images, boxes and metadata (Wah et al.), hosted by CaltechDATA.
        Artifact(
            name="CUB_200_2011.tgz",
            url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
            md5="97eceeb196236b17998738112f37df78",
            size=1150585339,
        ),
        # StackGAN's split, captions and char-CNN-RNN embeddings; no published checksum.
        Artifact(
            name="birds.zip",
            url=_drive_url(_BIRDS_DRIVE_ID),
            drive_id=_BIRDS_DRIVE_ID,
        ),
        # Oxford-102 flower images (Nilsback & Zisserman), from the Oxford VGG site. MD5 as
        # torchvision's Flowers102 dataset publishes it.
        Artifact(
            name="102flowers.tgz",
            url="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
            md5="52808999861908f626f3c1f4e79d11fa",
            size=344862509,
        ),
        # StackGAN's flowers split, captions (Reed et al.) and char-CNN-RNN embeddings; no
        # published checksum.
        Artifact(
            name="flowers.zip",
            url=_drive_url(_FLOWERS_DRIVE_ID),
            drive_id=_FLOWERS_DRIVE_ID,
        ),
        # MS-COCO 2014 images (cocodataset.org); MD5s as published with their download lists.
        Artifact(
            name="train2014.zip",
            url="http://images.cocodataset.org/zips/train2014.zip",
            md5="0da8c0bd3d6becc4dcb32757491aca88",
            size=13510573713,
        ),
        Artifact(
            name="val2014.zip",
            url="http://images.cocodataset.org/zips/val2014.zip",
            md5="a3d79f5ed8d289b7a7554ce06a5782b3",
            size=6645013297,
        ),
        # StackGAN-Pytorch's COCO split, captions and char-CNN-RNN embeddings, and its test
        # captions with their embeddings (a Torch7 file); no published checksums.
        Artifact(
            name="coco.zip",
            url=_drive_url(_COCO_DRIVE_ID),
            drive_id=_COCO_DRIVE_ID,
        ),
        Artifact(
            name="val_captions.t7",
            url=_drive_url(_COCO_TEST_DRIVE_ID),
            drive_id=_COCO_TEST_DRIVE_ID,
        ),
    )
}
"""Every upstream artifact, by file name."""

MIRROR_ENV = "STACKGAN_MIRROR"


def mirror_base(mirror: str | None = None) -> str | None:
    """The mirror in effect: ``mirror`` if given, else ``$STACKGAN_MIRROR``, else ``None``."""
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV)
    return mirror.rstrip("/") if mirror else None


def resolve_url(artifact: Artifact, mirror: str | None = None) -> str:
    """The URL to fetch ``artifact`` from: ``MIRROR/<name>`` when a mirror is in effect (the
    ``mirror`` argument, else ``$STACKGAN_MIRROR``), otherwise the upstream URL.

    >>> resolve_url(ARTIFACTS["birds.zip"], "https://example.org/stackgan/")
    'https://example.org/stackgan/birds.zip'
    """
    base = mirror_base(mirror)
    return f"{base}/{artifact.name}" if base else artifact.url
