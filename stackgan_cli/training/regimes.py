"""Training regimes beyond the official recipe: their checks, the weight initialisations,
the description of a regime for messages, and the optional TensorBoard writer.

The options (``--loss``, ``--gp-weight``, ``--n-critic``, ``--optimizer``, ``--beta1``,
``--beta2``, ``--init``, ``--tensorboard``) are TrainConfig fields; their defaults are the
official recipe, so a run that sets none of them trains exactly as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stackgan_cli.choices import DNorm, GNorm, Init, Loss, Optimizer, check_choice
from stackgan_cli.errors import StackGANError, UsageError
from stackgan_cli.training.config import TrainConfig

TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_MISSING = (
    "--tensorboard needs the tensorboard package, which is not installed: "
    'pip install "stackgan-cli[tensorboard]" (or pip install tensorboard)'
)

# The TrainConfig fields that make up a regime, and the options that set them.
REGIME_OPTIONS = {
    "loss": "--loss",
    "gp_weight": "--gp-weight",
    "n_critic": "--n-critic",
    "optimizer": "--optimizer",
    "beta1": "--beta1",
    "beta2": "--beta2",
    "lr_g": "--lr-g",
    "lr_d": "--lr-d",
    "lr_decay_every": "--lr-decay-every",
    "kl_coeff": "--kl-coeff",
    "init": "--init",
    "g_norm": "--g-norm",
    "d_norm": "--d-norm",
    "d_dropout": "--d-dropout",
    "diffaugment": "--diffaugment",
    "r1": "--r1",
    "ema": "--ema",
    "batch_size": "--batch-size",
    "uncond_coeff": "--uncond-coeff",
    "color_coeff": "--color-coeff",
    "amp": "--amp/--no-amp",
    "compile": "--compile",
}


def check_regime_options(cfg: TrainConfig) -> None:
    """UsageError (exit 2) naming the option for a regime value or combination that does not
    make sense."""
    for field, option, choice in (
        ("loss", "--loss", Loss),
        ("optimizer", "--optimizer", Optimizer),
        ("init", "--init", Init),
        ("g_norm", "--g-norm", GNorm),
        ("d_norm", "--d-norm", DNorm),
    ):
        check_choice(option, getattr(cfg, field), choice)
    if isinstance(cfg.n_critic, bool) or int(cfg.n_critic) != cfg.n_critic or cfg.n_critic < 1:
        raise UsageError(f"--n-critic: must be a whole number of at least 1, got {cfg.n_critic}")
    if not cfg.gp_weight >= 0:
        raise UsageError(f"--gp-weight: must not be negative, got {cfg.gp_weight}")
    defaults = TrainConfig()
    if cfg.loss != "wgan-gp" and cfg.gp_weight != defaults.gp_weight:
        raise UsageError(
            f"--gp-weight: only --loss wgan-gp has a gradient penalty (the loss is {cfg.loss})"
        )
    if cfg.loss == "wgan-gp" and cfg.compile:
        raise UsageError(
            "--compile: the gradient penalty of --loss wgan-gp needs a double backward, which "
            "torch.compile does not support; drop --compile or pick another --loss"
        )
    for name in ("beta1", "beta2"):
        value = getattr(cfg, name)
        if not 0.0 <= value < 1.0:
            raise UsageError(f"--{name}: Adam's beta must be in [0, 1), got {value}")
    if cfg.optimizer == "rmsprop" and (cfg.beta1 != defaults.beta1 or cfg.beta2 != defaults.beta2):
        raise UsageError("--beta1/--beta2: only --optimizer adam has betas (RMSprop has none)")
    check_network_options(cfg)


def check_network_options(cfg: TrainConfig) -> None:
    """UsageError (exit 2) naming the option for a bad --d-dropout, --diffaugment or --r1, or
    one that does not fit the other options."""
    from stackgan_cli.training.diffaugment import parse_policy

    if isinstance(cfg.d_dropout, bool) or not 0.0 <= cfg.d_dropout < 1.0:
        raise UsageError(
            f"--d-dropout: the dropout probability must be in [0, 1), got {cfg.d_dropout}"
        )
    try:
        parse_policy(cfg.diffaugment or "")
    except ValueError as exc:
        raise UsageError(f"--diffaugment: {exc}") from None
    if not cfg.r1 >= 0 or cfg.r1 == float("inf"):
        raise UsageError(f"--r1: the penalty weight must be a finite number >= 0, got {cfg.r1}")
    if cfg.r1 > 0 and cfg.compile:
        raise UsageError(
            "--compile: the R1 penalty of --r1 needs a double backward, which torch.compile "
            "does not support; drop --compile or --r1"
        )
    if cfg.r1 > 0 and cfg.loss == "wgan-gp":
        raise UsageError(
            "--r1: --loss wgan-gp already has a gradient penalty (--gp-weight); use one of them"
        )


def describe_regime(cfg: TrainConfig) -> str:
    """The options of ``cfg``'s regime that differ from its architecture's official recipe,
    as command-line text ("--loss wgan-gp --n-critic 5"); "the official settings" if none."""
    official = TrainConfig.for_arch(cfg.arch)
    given = []
    for name, option in REGIME_OPTIONS.items():
        value = getattr(cfg, name)
        if value == getattr(official, name):
            continue
        if isinstance(value, bool):
            option = option.split("/")[0 if value else -1]
            given.append(option if option.startswith("--") else f"--{option}")
        else:
            given.append(f"{option} {value:g}" if isinstance(value, float) else f"{option} {value}")
    return " ".join(given) if given else "the official settings"


# --- weight initialisation ---------------------------------------------------------------


def apply_init(scheme: str, *modules: Any, skip: tuple[Any, ...] = ()) -> None:
    """Re-initialise ``modules`` with ``scheme`` (a non-official ``--init``): every conv and
    linear weight orthogonal (gain 1), N(0, 0.02), Xavier-normal or Kaiming-normal (fan in,
    leaky ReLU 0.2), linear biases 0 (conv biases keep torch's default); BatchNorm weights
    N(1, 0.02), biases 0. Modules inside ``skip`` (the frozen Stage-I generator of Stage II)
    are left alone."""
    import torch
    from torch import nn

    if scheme == "official":
        return
    fill = {
        "orthogonal": lambda w: nn.init.orthogonal_(w, gain=1.0),
        "normal": lambda w: nn.init.normal_(w, 0.0, 0.02),
        "xavier": lambda w: nn.init.xavier_normal_(w),
        "kaiming": lambda w: nn.init.kaiming_normal_(w, a=0.2, nonlinearity="leaky_relu"),
    }.get(scheme)
    if fill is None:
        raise ValueError(f"unknown initialisation {scheme!r}")
    skipped = {id(m) for owner in skip if owner is not None for m in owner.modules()}
    with torch.no_grad():
        for module in modules:
            for layer in module.modules():
                if id(layer) in skipped:
                    continue
                if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                    fill(layer.weight)
                    if isinstance(layer, nn.Linear) and layer.bias is not None:
                        layer.bias.zero_()
                elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and layer.affine:
                    layer.weight.normal_(1.0, 0.02)
                    layer.bias.zero_()


# --- TensorBoard -------------------------------------------------------------------------


def require_tensorboard() -> None:
    """StackGANError with the pip command when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise StackGANError(TENSORBOARD_MISSING) from None


class TensorBoardLog:
    """TensorBoard event files in ``RUN_DIR/tensorboard``: losses and learning rates at each
    metrics record, the sample grids when they are written.

    The writer opens at :meth:`start`. A resumed session starts it at the step after its
    checkpoint, so TensorBoard hides what the interrupted session logged beyond that step
    (``purge_step``) instead of showing those steps twice.
    """

    def __init__(self, run_dir: Path) -> None:
        require_tensorboard()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise StackGANError(f"{TENSORBOARD_MISSING} ({exc})") from None
        self._make_writer = SummaryWriter
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self.writer: Any = None

    def start(self, global_step: int) -> None:
        """Open the event file of a session that continues after ``global_step`` steps."""
        if self.writer is None:
            purge = global_step + 1 if global_step > 0 else None
            self.writer = self._make_writer(log_dir=str(self.log_dir), purge_step=purge)

    def scalars(self, record: dict[str, Any], step: int) -> None:
        for name, value in record.items():
            if name in ("epoch", "step", "epoch_step", "time"):
                continue
            tag = f"lr/{name[3:]}" if name.startswith("lr_") else f"loss/{name}"
            if name == "images_per_s":
                tag = "speed/images_per_s"
            self.writer.add_scalar(tag, float(value), step)

    def image(self, path: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image("samples", pixels, step, dataformats="HWC")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
