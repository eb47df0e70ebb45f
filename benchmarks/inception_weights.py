"""Random Inception-v3 weights with a trained trunk's activation scale, for offline benchmarks.

No ImageNet file can be fetched here, so the benchmarks that train a DAMSM give
``--inception-weights`` a file in torchvision's layout (``inception_v3_google-*.pth``) whose
weights are random and whose BatchNorm running statistics are measured on the dataset's own
images. Without that step torch's default BatchNorm statistics shrink the activations to about
1e-6 by Mixed_6e, which is both unlike a trained trunk and slow on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def calibrated_inception_weights(
    path: Path, images: np.ndarray, *, batches: int = 4, batch: int = 16, seed: int = 0
) -> Path:
    """Write random Inception-v3 weights (torchvision's layout, seeded) to ``path``, their
    BatchNorm running statistics the cumulative averages over ``batches`` batches of
    ``images`` ((N, H, W, 3) uint8; the centre 84 % of each, resized to 299 px)."""
    from torchvision.models import inception_v3

    torch.manual_seed(seed)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    net.train()
    size = images.shape[1]
    margin = round(size * 0.08)
    with torch.no_grad():
        for k in range(batches):
            inner = slice(margin, size - margin)
            chunk = images[k * batch : (k + 1) * batch, inner, inner]
            x = torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2).float()
            x = nn.functional.interpolate(x / 127.5 - 1, size=(299, 299), mode="bilinear")
            net(x)
    for norm in norms:
        norm.momentum = 0.1
    torch.save(net.state_dict(), path)
    return path
