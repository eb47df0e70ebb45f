"""Execution-only rewrites of the generators: the same function of the same parameters, with
the same state-dict keys, computed with less work.

The official ``upBlock`` is nearest 2x upsampling followed by a 3x3 convolution (padding 1, no
bias). Each output pixel of that pair reads only a 2x2 neighbourhood of the *input*: output row
2i reads input rows i-1 (kernel row 0) and i (kernel rows 1 and 2), output row 2i+1 reads rows i
(kernel rows 0 and 1) and i+1 (kernel row 2), and the same for columns. So the pair equals four
2x2 convolutions of the un-upsampled input with summed kernels, one per output phase, run as a
single convolution with 4x the output channels and interleaved afterwards. That is 16 instead
of 36 multiply-adds per output value and no upsampled intermediate; the kernel sums are part of
the autograd graph, so the 3x3 weights receive exactly the gradient of the original pair. The
results agree with the official computation to rounding (about 1e-15 relative in float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _phase_pairs(k: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Along ``dim`` (size 3): the 2-tap kernels of the even (k0, k1 + k2) and odd
    (k0 + k1, k2) output phases."""
    k0, k1, k2 = k.unbind(dim)
    return torch.stack((k0, k1 + k2), dim), torch.stack((k0 + k1, k2), dim)


def _is_channels_last(x: Tensor) -> bool:
    return (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not (x.is_contiguous())
    )


class _InterleavePhases(torch.autograd.Function):
    """(B, 4*O, H+1, W+1) phase outputs -> (B, O, 2H, 2W): phase (a, c) of channel o, read at
    rows a..a+H-1 and columns c..c+W-1, fills rows a::2 and columns c::2. Written as four
    strided copies each way (autograd of slicing and stacking would zero-fill a full-size
    gradient per slice)."""

    @staticmethod
    def forward(ctx, out: Tensor, channels: int) -> Tensor:
        b, _, h1, w1 = out.shape
        h, w = h1 - 1, w1 - 1
        fmt = torch.channels_last if _is_channels_last(out) else torch.contiguous_format
        y = torch.empty(
            (b, channels, 2 * h, 2 * w), dtype=out.dtype, device=out.device, memory_format=fmt
        )
        for a in (0, 1):
            for c in (0, 1):
                p = (2 * a + c) * channels
                y[:, :, a::2, c::2] = out[:, p : p + channels, a : a + h, c : c + w]
        ctx.shape, ctx.channels, ctx.fmt = out.shape, channels, fmt
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor, None]:
        b, _, h1, w1 = ctx.shape
        h, w, channels = h1 - 1, w1 - 1, ctx.channels
        grad = torch.empty(
            ctx.shape, dtype=grad_y.dtype, device=grad_y.device, memory_format=ctx.fmt
        )
        for a in (0, 1):
            for c in (0, 1):
                p = (2 * a + c) * channels
                phase = grad[:, p : p + channels]
                phase[:, :, a : a + h, c : c + w] = grad_y[:, :, a::2, c::2]
                phase[:, :, h if a == 0 else 0, :] = 0  # the row and column this phase never
                phase[:, :, :, w if c == 0 else 0] = 0  # reads get no gradient
        return grad, None


def nearest_up_conv3x3(x: Tensor, weight: Tensor, gemm: bool = False) -> Tensor:
    """``conv2d(interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)`` for a
    (O, C, 3, 3) ``weight``, computed at the input resolution. (B, C, H, W) -> (B, O, 2H, 2W)
    in the memory format of ``x``. ``gemm``: the phase convolution as unfold + one matrix
    product (:func:`gemm_conv2d`, for the CPU)."""
    even_rows, odd_rows = _phase_pairs(weight, 2)  # (O, C, 2, 3) each
    kernels = []
    for rows in (even_rows, odd_rows):
        even_cols, odd_cols = _phase_pairs(rows, 3)
        kernels += [even_cols, odd_cols]
    # Output channel (2a + c) * O + o holds phase (row a, column c) of channel o.
    kernel = torch.cat(kernels, 0)
    if _is_channels_last(x):
        kernel = kernel.contiguous(memory_format=torch.channels_last)
    # Padding 1 with a 2x2 kernel: output (H+1, W+1); phase a of row i sits at row i + a.
    if gemm:
        out = gemm_conv2d(x, kernel, (2, 2), (1, 1), (1, 1))
        if _is_channels_last(x):
            out = out.contiguous(memory_format=torch.channels_last)
    else:
        out = F.conv2d(x, kernel, padding=1)
    return _InterleavePhases.apply(out, weight.shape[0])


class NearestUpConv3x3(nn.Module):
    """Stands in for the 3x3 convolution after a nearest 2x ``Upsample`` (which becomes an
    ``Identity``); holds the convolution's own weight Parameter, so the state-dict key
    (``upsample1.1.weight``), the optimizer state and the initialisation are unchanged."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.gemm = False  # set by gemm_large_convolutions for the widest (CPU)

    def extra_repr(self) -> str:
        how = ", as a matrix product" if self.gemm else ""
        return f"{self.in_channels}, {self.out_channels}, nearest 2x upsampling + 3x3 conv{how}"

    def forward(self, x: Tensor) -> Tensor:
        return nearest_up_conv3x3(x, self.weight, self.gemm)


def _fusable(upsample: nn.Module, conv: nn.Module) -> bool:
    return (
        isinstance(upsample, nn.Upsample)
        and upsample.mode == "nearest"
        and upsample.size is None
        and upsample.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0))
        and type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.bias is None
        and conv.padding_mode == "zeros"
    )


def fuse_nearest_upsampling(module: nn.Module) -> int:
    """In place: every ``nn.Sequential`` holding ``Upsample(2, nearest), Conv2d(3x3, pad 1)``
    at consecutive positions gets ``Identity, NearestUpConv3x3``. Returns how many pairs."""
    count = 0
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for k in range(len(seq) - 1):
            if _fusable(seq[k], seq[k + 1]):
                seq[k + 1] = NearestUpConv3x3(seq[k + 1])
                seq[k] = nn.Identity()
                count += 1
    return count


# Convolutions with at least this many weights run as matrix products on the CPU (see below).
# 4M: every convolution of the StackGAN discriminators at 8x8 or 4x4 outputs with 1024 channels
# on one side (8.4M weights 512 -> 1024 4x4, 4.7M 1024 -> 512 3x3, ...) and the fused phase
# convolution of the generators' first (1024 channels at 4x4) up-blocks gain; below it
# (2-3M: 640 -> 512 3x3, 256 -> 512 4x4 at 16x16) oneDNN is as fast or faster.
GEMM_MIN_WEIGHTS = 1 << 22


def gemm_conv2d(
    x: Tensor,
    weight: Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    frozen_product: bool = True,
) -> Tensor:
    """``conv2d(x, weight, stride=stride, padding=padding)`` without bias, as unfold + one
    matrix product (``frozen_product``: a frozen weight as one 2-D product)."""
    b, _, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    out_h, out_w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out_channels = weight.shape[0]
    columns = F.unfold(x.contiguous(), kernel_size, padding=padding, stride=stride)
    if weight.requires_grad or not frozen_product:
        out = torch.matmul(weight.reshape(out_channels, -1), columns)  # (B, O, L)
        return out.view(b, out_channels, out_h, out_w)
    # A frozen weight (the discriminators in the G step): matmul would broadcast it to a
    # batched product (about 1.4x slower on the CPU, forward and backward); one 2-D product.
    rows = columns.transpose(1, 2).reshape(b * out_h * out_w, -1)  # (B * L, C * kh * kw)
    out = torch.mm(rows, weight.reshape(out_channels, -1).t())  # (B * L, O)
    out = out.view(b, out_h * out_w, out_channels).transpose(1, 2).contiguous()
    return out.view(b, out_channels, out_h, out_w)


class GemmConv2d(nn.Module):
    """A bias-free convolution computed as unfold + one matrix product.

    For the Stage-II discriminator's widest layers (1024 -> 2048 channels at 8x8, 2048 -> 1024
    at 4x4: 19-34 million weights applied to only 16-64 positions per image) oneDNN's direct
    convolution on the CPU reaches about half the speed of a plain matrix product (measured in
    benchmarks/RESULTS.md); the result is the same sum of products. Holds the convolution's own
    weight Parameter (same state-dict key and optimizer state).
    """

    def __init__(self, conv: nn.Conv2d, frozen_product: bool = True) -> None:
        super().__init__()
        self.weight = conv.weight
        self.frozen_product = frozen_product
        self.stride = conv.stride
        self.padding = conv.padding
        self.kernel_size = conv.kernel_size
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, as a matrix product"
        )

    def forward(self, x: Tensor) -> Tensor:
        return gemm_conv2d(
            x, self.weight, self.kernel_size, self.stride, self.padding, self.frozen_product
        )


def gemm_large_convolutions(
    module: nn.Module,
    min_weights: int = GEMM_MIN_WEIGHTS,
    *,
    upsampling: bool = True,
    frozen_product: bool = True,
) -> int:
    """In place: plain bias-free convolutions (no dilation or groups) with at least
    ``min_weights`` weights become :class:`GemmConv2d`, and (``upsampling``) fused upsampling
    convolutions (:class:`NearestUpConv3x3`) whose phase kernel (16 x in x out weights) has at
    least ``min_weights`` compute it as a matrix product. Returns how many."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, NearestUpConv3x3):
                if upsampling and 16 * child.in_channels * child.out_channels >= min_weights:
                    child.gemm = True
                    count += 1
            elif (
                type(child) is nn.Conv2d
                and child.weight.numel() >= min_weights
                and child.bias is None
                and child.groups == 1
                and child.dilation == (1, 1)
                and child.padding_mode == "zeros"
                and isinstance(child.padding, tuple)
            ):
                setattr(parent, name, GemmConv2d(child, frozen_product))
                count += 1
    return count
