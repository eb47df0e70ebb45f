"""The files of one run directory, and what a user reads when writing one fails.

``RUN_DIR/config.json`` (written by training/run.py), ``checkpoints/last.pt`` and the
``epoch_NNNN.pt`` snapshots, ``generator.pt``, ``samples/epoch_NNNN.png``, ``metrics.jsonl``
and ``losses.png``. Rank 0 alone writes; :meth:`RunFiles.writing` is collective, so that every
rank of a torchrun job stops with the same one-line message when a write fails (disk full,
permissions) and the message says where the run can continue from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from stackgan_cli.charts import plot_losses
from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import copy_file
from stackgan_cli.generator_file import save_generator_file
from stackgan_cli.training import checkpoint as ckpt
from stackgan_cli.training import distributed as dist_utils


class RunFiles:
    """Paths and writers of the run in ``run_dir``; ``last_saved`` is the (epoch, step) that
    ``last.pt`` holds (None before the first checkpoint)."""

    def __init__(self, run_dir: Path, ctx: dist_utils.DistContext) -> None:
        self.run_dir = Path(run_dir)
        self.ctx = ctx
        self.last_saved: tuple[int, int] | None = None
        self.metrics_bytes = 0  # the length of metrics.jsonl that the run's records fill

    @property
    def checkpoints(self) -> Path:
        return ckpt.checkpoints_dir(self.run_dir)

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / ckpt.LAST

    @property
    def generator_path(self) -> Path:
        return self.run_dir / "generator.pt"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def sample_path(self, epoch: int) -> Path:
        return self.run_dir / "samples" / f"epoch_{epoch:04d}.png"

    # --- failures --------------------------------------------------------------------------
    @contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """Turn a failed write in the block into one line that says what failed and where the
        run can continue from. Collective: every rank learns of rank 0's failure."""
        failure: OSError | None = None
        try:
            yield
        except OSError as exc:
            failure = exc
        if dist_utils.any_rank(self.ctx, failure is not None):
            reason = f" ({failure.strerror or failure})" if failure is not None else ""
            where = self.last_good("is intact")
            if self.last_saved is not None:
                where += f" and `stackgan resume {self.run_dir}` continues from it once the "
                where += "problem is fixed (e.g. there is space again)"
            raise StackGANError(
                f"training stopped: writing {what} failed{reason}; {where}"
            ) from None

    def last_good(self, state: str) -> str:
        """The last good checkpoint and its position, then ``state``, for messages."""
        if self.last_saved is None:
            return "no checkpoint was written yet (the first epoch did not finish)"
        epoch, step = self.last_saved
        position = f"after epoch {epoch}" + (f", step {step}" if step else "")
        return f"the last good checkpoint, {self.last_checkpoint} ({position}), {state}"

    # --- writers (rank 0) ------------------------------------------------------------------
    def snapshot_path(self, epoch: int) -> Path:
        return self.checkpoints / ckpt.snapshot_name(epoch)

    def write_checkpoint(self, state: dict[str, Any], path: Path | None = None) -> None:
        """``state`` to ``path`` (default ``last.pt``)."""
        ckpt.save_checkpoint(state, path or self.last_checkpoint)

    def write_generator(self, netG: nn.Module, family: Any, **fields: Any) -> None:
        """``generator.pt``: ``netG`` of ``family`` with ``fields`` (text_encoder, dataset,
        epoch, g_norm; see :func:`~stackgan_cli.generator_file.save_generator_file`)."""
        save_generator_file(self.generator_path, netG, family.cfg, family=family.key, **fields)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One line of ``metrics.jsonl``, flushed."""
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            self.metrics_bytes = handle.tell()

    def truncate_metrics(self) -> None:
        """Drop metrics lines written after the checkpoint being resumed from."""
        if self.metrics_path.exists():
            with open(self.metrics_path, "r+b") as handle:
                handle.truncate(self.metrics_bytes)

    def write_final(self, title: str, out: Path | None) -> None:
        """``losses.png`` and the copy of ``generator.pt`` at ``out`` (--out)."""
        plot_losses(self.metrics_path, self.run_dir / "losses.png", title=title)
        if out is not None:
            copy_file(self.generator_path, out)
