"""Network options of a training regime, applied to the networks a family built.

``--g-norm none`` replaces the generator's BatchNorm layers with ``Identity``;
``--d-norm none`` the discriminators'; ``--d-norm spectral`` drops the discriminators'
BatchNorm layers and puts spectral normalisation (``torch.nn.utils.parametrizations``) on every
convolution and linear weight of theirs; ``--d-dropout P`` follows every LeakyReLU of the
discriminators with ``Dropout(P)``. With the defaults (batch, batch, 0) nothing is touched:
the networks, their state-dict keys and their random draws are the official ones.

Only what an option changes leaves the official layout: no BatchNorm keys for ``none``,
``parametrizations.weight.original`` and the power-iteration vectors for ``spectral``
(Dropout has no state). The frozen Stage-I generator nested in Stage II keeps the layout of
the Stage-I generator file it was loaded from (:func:`strip_missing_batchnorm`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _replace_children(module: nn.Module, make: Any, skip: Iterable[nn.Module] = ()) -> int:
    """Replace every descendant ``child`` for which ``make(child)`` is not None with that
    module, leaving the subtrees in ``skip`` alone. Returns how many."""
    skipped = {id(m) for owner in skip if owner is not None for m in owner.modules()}
    count = 0
    for parent in list(module.modules()):
        if id(parent) in skipped:
            continue
        for name, child in list(parent.named_children()):
            if id(child) in skipped:
                continue
            new = make(child)
            if new is not None:
                setattr(parent, name, new)
                count += 1
    return count


def remove_batchnorm(module: nn.Module, skip: Iterable[nn.Module] = ()) -> int:
    """Every BatchNorm layer of ``module`` (outside ``skip``) becomes ``Identity``."""
    return _replace_children(
        module, lambda m: nn.Identity() if isinstance(m, _BATCHNORMS) else None, skip
    )


def strip_missing_batchnorm(module: nn.Module, state: Mapping[str, Any]) -> int:
    """The BatchNorm layers of ``module`` that ``state`` (a state dict for it) has no entries
    for become ``Identity``: a generator trained with ``--g-norm none`` loads into its class.
    No-op for a state dict with every BatchNorm."""
    missing = {
        name
        for name, child in module.named_modules()
        if isinstance(child, _BATCHNORMS)
        and f"{name}.running_mean" not in state
        and f"{name}.weight" not in state
    }
    count = 0
    for name in missing:
        parent_name, _, child_name = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child_name, nn.Identity())
        count += 1
    return count


def add_spectral_norm(module: nn.Module) -> int:
    """Spectral normalisation on every conv and linear weight of ``module``."""
    from torch.nn.utils.parametrizations import spectral_norm

    count = 0
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            spectral_norm(layer)
            count += 1
    return count


def add_dropout(module: nn.Module, p: float) -> int:
    """Every LeakyReLU of ``module`` becomes ``Sequential(LeakyReLU, Dropout(p))`` (no state,
    so the state-dict keys do not change)."""
    return _replace_children(
        module,
        lambda m: nn.Sequential(m, nn.Dropout(p)) if isinstance(m, nn.LeakyReLU) else None,
    )


def apply_generator_options(netG: nn.Module, g_norm: str, skip: Sequence[nn.Module] = ()) -> None:
    """``--g-norm`` (choices.GNorm) on a generator, outside ``skip`` (the parts its family
    keeps frozen, such as the nested Stage-I generator of Stage II)."""
    if g_norm == "none":
        remove_batchnorm(netG, skip=skip)


def apply_discriminator_options(netD: nn.Module, d_norm: str, d_dropout: float) -> None:
    """``--d-norm`` (choices.DNorm) and ``--d-dropout`` on one discriminator."""
    if d_norm in ("none", "spectral"):
        remove_batchnorm(netD)
    if d_norm == "spectral":
        add_spectral_norm(netD)
    if d_dropout > 0:
        add_dropout(netD, float(d_dropout))


def apply_network_options(
    cfg: Any, netG: nn.Module, netDs: Sequence[nn.Module], frozen: Sequence[nn.Module] = ()
) -> None:
    """The TrainConfig ``cfg``'s g_norm, d_norm and d_dropout on the built networks (in place;
    nothing happens with the defaults); the generator's ``frozen`` parts are left alone."""
    apply_generator_options(netG, getattr(cfg, "g_norm", "batch"), skip=frozen)
    for netD in netDs:
        apply_discriminator_options(
            netD, getattr(cfg, "d_norm", "batch"), getattr(cfg, "d_dropout", 0.0)
        )
