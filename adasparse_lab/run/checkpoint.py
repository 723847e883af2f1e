"""Checkpoints of a fit, so that a killed trial goes on from where it was instead of from zero.

On a table of the paper's size one epoch is 6-23 minutes on 2 cores; a worker killed in the
last epoch (a preempted machine, a scheduler's time limit) used to throw all of it away. A fit
given a checkpoint file (run/fit.py, ``fit(checkpoint=...)``) saves its whole state there at
each epoch's end and every ``train.checkpoint_every_s`` seconds within an epoch: the weights,
Adam's state, the step, the best epoch so far (its weights and validation), the epochs' records,
the batch order's generator (its state at the epoch's start and the steps done in the epoch)
and the global RNG (dropout). Alpha, the band, the regulariser's lambda and a rival's masks are
functions of the step or buffers of the model, so they come back with it. A fit that finds its
checkpoint resumes from it, and on CPU ends with the same weights and metrics as a run that was
never stopped (tests/test_checkpoint.py); one whose configuration changed starts afresh.

A write is atomic: the state goes to a temporary file beside the checkpoint, is flushed to
disk, then renamed over it, so a kill mid-write leaves the previous checkpoint whole. The file
is removed once the fit ends.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
FILE = "checkpoint.pt"


@dataclass
class Checkpointing:
    """Where a fit keeps its checkpoint, how often within an epoch (``every_s``; None: at
    epoch ends only), and ``key``: what the saved state must match to be resumed (the run's
    configuration, ``config_key``)."""

    path: Path
    key: str
    every_s: float | None = None
    _last: float = field(default_factory=time.monotonic)

    def due(self) -> bool:
        """Whether ``every_s`` has passed since the last save (or the start)."""
        return self.every_s is not None and time.monotonic() - self._last >= self.every_s

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (with the key) atomically: temp file, fsync, rename."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save({"key": self.key, **state}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)  # (gone once renamed)
        self._last = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None: no checkpoint, or one of another configuration."""
        if not self.path.is_file():
            return None
        # Our own file (its objects: tensors, records, the best epoch's validation).
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state.get("key") != self.key:
            log.warning("%s is a checkpoint of another configuration: starting afresh", self.path)
            return None
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def config_key(*parts: object) -> str:
    """A short hash of the parts of a configuration that decide what a fit computes."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
