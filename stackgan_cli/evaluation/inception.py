"""The Inception-v3 network behind IS and FID: torch-fidelity's port of the TF 2015-12-05 graph.

torch-fidelity downloads its weights through ``torch.hub`` into ``$TORCH_HOME/hub/checkpoints``
(its ``cache_root`` setting covers feature caches only). To keep everything inside the stackgan
cache we fetch the same file from the same URL with the same ``torch.hub`` downloader (which
checks the sha256 prefix in the file name) into ``paths.weights_dir()`` and hand torch-fidelity
the file through ``feature_extractor_weights_path``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
import torch_fidelity
from torch import Tensor
from torch_fidelity.feature_extractor_inceptionv3 import (
    URL_INCEPTION_V3,
    FeatureExtractorInceptionV3,
)

from stackgan_cli import paths
from stackgan_cli.console import err, info, warn
from stackgan_cli.errors import StackGANError
from stackgan_cli.formats import check_regular_file

VARIANT = "inception-v3-compat"
"""torch-fidelity's registered name of the TF-compatible Inception-v3 feature extractor."""

LOGITS_LAYER = "logits_unbiased"
"""IS input: the 1008-way logits without the final bias, as the original TF IS code computes."""

POOL_LAYER = "2048"
"""FID and diversity input: the 2048-d average-pool (pool3) features."""

WEIGHTS_FILENAME = URL_INCEPTION_V3.rsplit("/", 1)[-1]
"""``weights-inception-2015-12-05-6726825d.pth``: 6726825d is the start of its sha256."""

WEIGHTS_SHA256_PREFIX = WEIGHTS_FILENAME.rsplit("-", 1)[-1].split(".", 1)[0]

URL_ENV = "STACKGAN_INCEPTION_URL"
"""Environment variable that replaces the download URL (an internal mirror of the same file)."""

RESIZE = (
    "torch-fidelity interpolate_bilinear_2d_like_tensorflow1x (TF1 bilinear, "
    "align_corners=False, no antialiasing) from the sample resolution to 299x299, "
    "then (x - 128) / 128"
)


@dataclass
class InceptionNet:
    """The loaded feature extractor and where its weights came from."""

    extractor: FeatureExtractorInceptionV3
    device: torch.device
    weights_path: Path
    weights_sha256: str
    weights_source: str  # "cache", "download" or "--inception-weights"

    @property
    def official_weights(self) -> bool:
        """Whether the weights are torch-fidelity's published file (so scores are comparable)."""
        return self.weights_sha256.startswith(WEIGHTS_SHA256_PREFIX)

    @torch.no_grad()
    def features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 images (B, 3, H, W) -> (logits_unbiased (B, 1008), pool features (B, 2048)),
        both float32 on the CPU. Any H, W: the network resizes to 299x299 itself."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected uint8 images (B, 3, H, W), got {images.dtype} {images.shape}"
            )
        logits, pool = self.extractor(images.to(self.device, non_blocking=True))
        return logits.float().cpu(), pool.float().cpu()

    def protocol(self) -> dict:
        """The Inception part of the evaluation protocol, for the JSON report."""
        return {
            "variant": VARIANT,
            "description": "torch-fidelity port of the TF Inception-v3 graph of 2015-12-05 "
            "(the network of the original IS and FID code), ImageNet classes",
            "weights_file": self.weights_path.name,
            "weights_path": str(self.weights_path),
            "weights_sha256": self.weights_sha256,
            "weights_source": self.weights_source,
            "official_weights": self.official_weights,
            "weights_url": URL_INCEPTION_V3,
            "is_layer": f"{LOGITS_LAYER} (softmax over 1008 logits without bias)",
            "fid_layer": f"{POOL_LAYER} (pool3 features)",
            "resize": RESIZE,
            "torch_fidelity_version": torch_fidelity.__version__,
        }


def default_weights_path() -> Path:
    """Where the downloaded Inception weights live in the stackgan cache."""
    return paths.weights_dir() / WEIGHTS_FILENAME


def weights_url() -> str:
    """The download URL: ``$STACKGAN_INCEPTION_URL`` if set, else torch-fidelity's release."""
    return os.environ.get(URL_ENV) or URL_INCEPTION_V3


def resolve_weights(local: Path | None) -> tuple[Path, str]:
    """Find the weights file: ``local`` if given, else the cached copy, else download it.

    Returns ``(path, source)``. Raises StackGANError naming the file, its URL and the cache
    path when the download fails (e.g. offline).
    """
    if local is not None:
        local = Path(local).expanduser()
        return check_regular_file(local, f"--inception-weights {local}"), "--inception-weights"
    target = default_weights_path()
    if target.is_file():
        return target, "cache"
    url = weights_url()
    target.parent.mkdir(parents=True, exist_ok=True)
    info(f"downloading the Inception-v3 weights (about 92 MB) from {url}")
    try:
        # Writes to a temporary file beside the target and renames it after the hash check.
        torch.hub.download_url_to_file(
            url, str(target), hash_prefix=WEIGHTS_SHA256_PREFIX, progress=err.is_terminal
        )
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise StackGANError(
            f"cannot download the Inception weights from {url} ({reason}): download "
            f"{WEIGHTS_FILENAME} from {URL_INCEPTION_V3} yourself and save it as {target}, "
            "or pass --inception-weights FILE"
        ) from None
    return target, "download"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_inception(local: Path | None = None, device: str | torch.device = "cpu") -> InceptionNet:
    """Build torch-fidelity's Inception-v3 with the weights from :func:`resolve_weights`.

    The file is read once, checked to load with ``weights_only=True`` (so the plain
    ``torch.load`` inside torch-fidelity only ever sees a verified tensor file) and handed over
    from memory. A cached copy that does not load (truncated, overwritten) is reported as
    damaged, with the advice to delete it so that the next run downloads it again; it is left
    in place for the user to inspect.
    """
    path, source = resolve_weights(local)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StackGANError(f"{path} could not be read: {exc.strerror or exc}") from None
    try:
        extractor = _extractor(data)
    except _NotInceptionWeights as exc:
        if source == "cache":
            raise StackGANError(_damaged_cache_message(path, data, str(exc))) from None
        raise StackGANError(f"{path} {exc}") from None
    device = torch.device(device)
    extractor.to(device)
    net = InceptionNet(extractor, device, path, _sha256(data), source)
    if not net.official_weights:
        warn(
            f"{path.name} is not torch-fidelity's published {WEIGHTS_FILENAME} (sha256 "
            f"{net.weights_sha256[:12]}...): the scores are not comparable with published ones"
        )
    return net


class _NotInceptionWeights(Exception):
    """A weights file's bytes that are not torch-fidelity's Inception-v3; the message says
    what they are instead, as a predicate ("is not ...", "does not match ...")."""


def _extractor(data: bytes) -> FeatureExtractorInceptionV3:
    """torch-fidelity's network with the weights file ``data``."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise _NotInceptionWeights(
            "is not a plain PyTorch tensor file (it holds objects that weights_only loading "
            "refuses, or it is not a PyTorch file at all)"
        ) from None
    except Exception:  # any other failure to unpickle: a cut or overwritten file
        raise _NotInceptionWeights(
            "is not a readable PyTorch file (truncated or corrupt)"
        ) from None
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if not isinstance(fc, Tensor) or tuple(fc.shape) != (1008, 2048):
        raise _NotInceptionWeights(
            f"is not torch-fidelity's Inception-v3 weights file ({WEIGHTS_FILENAME})"
        )
    del state
    try:
        return FeatureExtractorInceptionV3(
            VARIANT,
            [LOGITS_LAYER, POOL_LAYER],
            feature_extractor_weights_path=io.BytesIO(data),
            verbose=False,
        )
    except RuntimeError as exc:
        raise _NotInceptionWeights(
            f"does not match torch-fidelity's Inception-v3 ({str(exc).splitlines()[0]})"
        ) from None


def _damaged_cache_message(path: Path, data: bytes, problem: str) -> str:
    """The error for the cached weights file ``path`` (holding ``data``) that ``problem``."""
    digest = _sha256(data)
    facts = f"{len(data)} bytes"
    if not digest.startswith(WEIGHTS_SHA256_PREFIX):
        facts += f", sha256 {digest[:12]}... where the published file's starts with "
        facts += WEIGHTS_SHA256_PREFIX
    return (
        f"the cached Inception weights file {path} {problem}; {facts}: delete it and the "
        f"next run downloads it again from {weights_url()}"
    )
